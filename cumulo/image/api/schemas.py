"""JSON schemas of the Image API's documents (api-ref: Schemas): image(s), member(s), task(s).

They describe what this service accepts and shows; custom image properties are strings
(`additionalProperties`), as in Glance.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.faults import NotFound
from cumulo.image.api.common import authorize, json
from cumulo.image.core import CONTAINER_FORMATS, DISK_FORMATS, VISIBILITIES

UUID_PATTERN = (
    "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
)
STATUSES = [
    "queued", "saving", "active", "killed", "deleted", "uploading", "importing",
    "pending_delete", "deactivated",
]  # fmt: skip


def _prop(type_: Any, description: str, read_only: bool = False, **more: Any) -> dict:
    prop = {"type": type_, "description": description, **more}
    if read_only:
        prop["readOnly"] = True
    return prop


def _string(description: str, read_only: bool = True) -> dict:
    return _prop("string", description, read_only)


IMAGE_PROPERTIES = {
    "id": _prop("string", "An identifier for the image", pattern=UUID_PATTERN),
    "name": _prop(["null", "string"], "Descriptive name for the image", maxLength=255),
    "status": _prop("string", "Status of the image", True, enum=STATUSES),
    "visibility": _prop("string", "Scope of image accessibility", enum=list(VISIBILITIES)),
    "protected": _prop("boolean", "If true, image will not be deletable."),
    "os_hidden": _prop("boolean", "If true, image will not appear in default image list."),
    "checksum": _prop(["null", "string"], "md5 hash of image contents.", True, maxLength=32),
    "os_hash_algo": _prop(
        ["null", "string"], "Algorithm to calculate the os_hash_value", True, maxLength=64
    ),
    "os_hash_value": _prop(
        ["null", "string"], "Hexdigest of the image contents", True, maxLength=128
    ),
    "owner": _prop(["null", "string"], "Owner of the image", maxLength=255),
    "size": _prop(["null", "integer"], "Size of image file in bytes", True),
    "virtual_size": _prop(["null", "integer"], "Virtual size of image in bytes", True),
    "container_format": _prop(
        ["null", "string"], "Format of the container", enum=[None, *CONTAINER_FORMATS]
    ),
    "disk_format": _prop(["null", "string"], "Format of the disk", enum=[None, *DISK_FORMATS]),
    "created_at": _string("Date and time of image registration"),
    "updated_at": _string("Date and time of the last image modification"),
    "tags": _prop(
        "array",
        "List of strings related to the image",
        items={"type": "string", "maxLength": 255},
    ),
    "min_ram": _prop("integer", "Amount of ram (in MB) required to boot image."),
    "min_disk": _prop("integer", "Amount of disk space (in GB) required to boot image."),
    "self": _string("An image self url"),
    "file": _string("An image file url"),
    "stores": _string("Store in which image data resides (comma-separated store ids)"),
    "schema": _string("An image schema url"),
    "direct_url": _string("URL to access the image file kept in external store"),
    "locations": _prop(
        "array",
        "A set of URLs to access the image file kept in external store",
        items={
            "type": "object",
            "properties": {
                "url": {"type": "string", "maxLength": 255},
                "metadata": {"type": "object"},
                "validation_data": {
                    "description": "Values to be used to populate the corresponding image "
                    "properties. If the image status is not 'queued', values must exactly "
                    "match those already contained in the image properties.",
                    "type": "object",
                    "writeOnly": True,
                    "additionalProperties": False,
                    "properties": {
                        "checksum": {"type": "string", "minLength": 32, "maxLength": 32},
                        "os_hash_algo": {"type": "string", "maxLength": 64},
                        "os_hash_value": {"type": "string", "maxLength": 128},
                    },
                    "required": ["os_hash_algo", "os_hash_value"],
                },
            },
            "required": ["url", "metadata"],
        },
    ),
}
IMAGE_LINKS = [
    {"rel": "self", "href": "{self}"},
    {"rel": "enclosure", "href": "{file}"},
    {"rel": "describedby", "href": "{schema}"},
]
MEMBER_PROPERTIES = {
    "image_id": _prop("string", "An identifier for the image", pattern=UUID_PATTERN),
    "member_id": _prop("string", "An identifier for the image member (tenantId)"),
    "created_at": _string("Date and time of image member creation"),
    "updated_at": _string("Date and time of last modification of image member"),
    "status": _prop(
        "string", "The status of this image member", enum=["pending", "accepted", "rejected"]
    ),
    "schema": _string("An image member schema url"),
}
TASK_PROPERTIES = {
    "id": _prop("string", "An identifier for the task", pattern=UUID_PATTERN),
    "type": _prop("string", "The type of task represented by this content"),
    "status": _prop(
        "string",
        "The current status of this task",
        enum=["pending", "processing", "success", "failure"],
    ),
    "input": _prop(["null", "object"], "The parameters required by task"),
    "result": _prop(["null", "object"], "The result of current task, JSON blob"),
    "owner": _prop(["null", "string"], "An identifier for the owner of this task"),
    "message": _prop("string", "Human-readable informative message about the task"),
    "image_id": _prop(["null", "string"], "Image associated with the task", True),
    "request_id": _prop(["null", "string"], "Request ID that started the task", True),
    "user_id": _prop(["null", "string"], "User associated with the task", True),
    "expires_at": _prop(
        ["null", "string"], "Datetime when this resource would be subject to removal"
    ),
    "created_at": _string("Datetime when this resource was created"),
    "updated_at": _string("Datetime when this resource was updated"),
    "self": _string("The URL of this task"),
    "schema": _string("The URL of this task's schema"),
}


def _collection(name: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "properties": {
            name: {"type": "array", "items": item},
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


IMAGE = {
    "name": "image",
    "properties": IMAGE_PROPERTIES,
    "additionalProperties": {"type": "string"},
    "links": IMAGE_LINKS,
}
MEMBER = {"name": "member", "properties": MEMBER_PROPERTIES}
TASK = {"name": "task", "properties": TASK_PROPERTIES}
SCHEMAS: dict[str, dict[str, Any]] = {
    "image": IMAGE,
    "images": _collection("images", IMAGE),
    "member": MEMBER,
    "members": {
        "name": "members",
        "properties": {"members": {"type": "array", "items": MEMBER}, "schema": {"type": "string"}},
        "links": [{"rel": "describedby", "href": "{schema}"}],
    },
    "task": TASK,
    "tasks": _collection("tasks", TASK),
}


STAMPS = {
    "created_at": _string("Date and time of creation"),
    "updated_at": _string("Date and time of the last modification"),
}
PROPERTY_DEFINITION = {
    "name": _prop("string", "Name of the property", maxLength=255),
    "title": _prop("string", "Title of the property"),
    "description": _prop("string", "Description of the property"),
    "type": _prop(
        "string",
        "Type of the property",
        enum=["array", "boolean", "integer", "number", "object", "string"],
    ),
    "enum": _prop("array", "Values the property may take"),
    "default": _prop(["array", "boolean", "integer", "number", "object", "string"], "Default"),
    "readonly": _prop("boolean", "Whether the property may be set"),
    "operators": _prop("array", "Operators the property supports", items={"type": "string"}),
    "minimum": _prop("number", "Smallest value"),
    "maximum": _prop("number", "Largest value"),
    "minLength": _prop("integer", "Shortest length", minimum=0),
    "maxLength": _prop("integer", "Longest length", minimum=0),
    "pattern": _prop("string", "Regular expression values match"),
    "items": _prop("object", "Schema of array items"),
}
RESOURCE_TYPE_ASSOCIATION = {
    "name": _prop(
        "string", "Resource type names should be aligned with Heat resource types", maxLength=80
    ),  # fmt: skip
    "prefix": _prop(
        "string", "Prefix of the namespace's properties on this resource type", maxLength=80
    ),  # fmt: skip
    "properties_target": _prop(
        "string", "Part of the resource the properties go in", maxLength=80
    ),  # fmt: skip
    **STAMPS,
}
OBJECT = {
    "name": _prop("string", "Name of the object", maxLength=255),
    "description": _prop("string", "Description of the object"),
    "required": _prop("array", "Required properties", items={"type": "string"}),
    "properties": _prop("object", "Property definitions", additionalProperties=PROPERTY_DEFINITION),
    "schema": _string("The object's schema url"),
    "self": _string("The object's url"),
    **STAMPS,
}
TAG = {"name": _prop("string", "Name of the tag", maxLength=255), **STAMPS}
NAMESPACE = {
    "namespace": _prop("string", "The unique namespace text", maxLength=80),
    "display_name": _prop("string", "The user friendly name for the namespace", maxLength=80),
    "description": _prop(
        "string", "Provides a user friendly description of the namespace", maxLength=500
    ),  # fmt: skip
    "visibility": _prop("string", "Scope of namespace accessibility", enum=["public", "private"]),
    "protected": _prop("boolean", "If true, namespace will not be deletable"),
    "owner": _prop("string", "Owner of the namespace", maxLength=255),
    "resource_type_associations": _prop(
        "array",
        "Resource types the namespace applies to",
        items={"type": "object", "properties": RESOURCE_TYPE_ASSOCIATION},
    ),  # fmt: skip
    "properties": _prop("object", "Property definitions", additionalProperties=PROPERTY_DEFINITION),
    "objects": _prop("array", "Object definitions", items={"type": "object", "properties": OBJECT}),
    "tags": _prop("array", "Tag definitions", items={"type": "object", "properties": TAG}),
    "schema": _string("The namespace's schema url"),
    "self": _string("The namespace's url"),
    **STAMPS,
}


def _single(name: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"name": name, "properties": properties, "required": required,
            "additionalProperties": False}  # fmt: skip


METADEF_SCHEMAS: dict[str, dict[str, Any]] = {
    "namespace": _single("namespace", NAMESPACE, ["namespace"]),
    "namespaces": _collection("namespaces", {"type": "object", "properties": NAMESPACE}),
    "resource_type": _single("resource_type_association", RESOURCE_TYPE_ASSOCIATION, ["name"]),
    "resource_types": _collection(
        "resource_type_associations", {"type": "object", "properties": RESOURCE_TYPE_ASSOCIATION}
    ),
    "object": _single("object", OBJECT, ["name"]),
    "objects": _collection("objects", {"type": "object", "properties": OBJECT}),
    "property": _single("property", PROPERTY_DEFINITION, ["name", "title", "type"]),
    "properties": {
        "name": "properties",
        "properties": {
            "properties": {"type": "object", "additionalProperties": PROPERTY_DEFINITION}
        },  # fmt: skip
    },
    "tag": _single("tag", TAG, ["name"]),
    "tags": _collection("tags", {"type": "object", "properties": TAG}),
}


def _schema(table: dict[str, dict[str, Any]], name: str) -> Response:
    if name not in table:
        raise NotFound(f"No schema {name}.")
    return json(table[name])


async def show_schema(request: Request) -> Response:
    """GET /v2/schemas/{name}."""
    await authorize(request, "image:get_images")
    return _schema(SCHEMAS, request.path_params["name"])


async def show_metadef_schema(request: Request) -> Response:
    """GET /v2/schemas/metadefs/{name}."""
    await authorize(request, "image:get_metadef_namespaces")
    return _schema(METADEF_SCHEMAS, request.path_params["name"])


routes = [
    Route("/v2/schemas/metadefs/{name}", show_metadef_schema, methods=["GET"]),
    Route("/v2/schemas/{name}", show_schema, methods=["GET"]),
]
