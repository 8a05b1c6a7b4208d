"""Each API's OpenAPI 3 description of what it implements, served at `GET /openapi.json`.

Made from the app's own routes, so it lists exactly the paths and methods the API
answers. A handler may declare its request body and its resource (`describes`): the
body's schema (a pydantic model's, or an OpenStack `{"<resource>": {...}}` wrapper with
the attributes it accepts), and the resource key its answer carries, which links a
create to the show, update and delete of what it made (for stateful testing). Every
error answer is described in the service's dialect (Keystone's `error`, Nova's
`{"itemNotFound": {...}}`, Neutron's `NeutronError`, Glance's webob body).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from cumulo import __version__

ANY: dict[str, Any] = {}
_PARAM = re.compile(r"{([^}:]+)(:[^}]+)?}")
_WITH_BODY = ("post", "put", "patch")


def describes(
    *,
    body: dict[str, Any] | type[BaseModel] | None = None,
    resource: str | None = None,
    content_type: str | None = "application/json",
    statuses: dict[int, str] | None = None,
    key: str = "id",
    query: Iterable[str] = (),
    headers: Iterable[str] = (),
) -> Callable[[Any], Any]:
    """Declare a handler's request body (a JSON schema or a pydantic model; none when
    `content_type` is None), the resource key of its JSON answer (`{"server": {"id":
    ...}}`; "" for a bare one, as Glance's) and the field naming it (`key`), the server-side
    statuses it may answer on purpose (`{501: "no driver here powers hosts"}`), and the
    query parameters and headers it reads."""

    def mark(handler: Any) -> Any:
        handler.openapi = {
            "body": body,
            "resource": resource,
            "content_type": content_type,
            "statuses": statuses or {},
            "key": key,
            # Keyed by where each parameter goes ("in": query or header).
            "query": list(query),
            "header": list(headers),
        }
        return handler

    return mark


def wrapped(resource: str, attrs: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
    """The schema of an OpenStack body `{resource: {attr: ..., ...}}`."""
    inner: dict[str, Any] = {"type": "object", "properties": {a: ANY for a in attrs}}
    if required := list(required):
        inner["required"] = required
    return {"type": "object", "required": [resource], "properties": {resource: inner}}


# -- the error dialects -------------------------------------------------------------------


def _obj(required: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": required}


_STR, _INT = {"type": "string"}, {"type": "integer"}
# Each dialect's error bodies by media type (the JSON ones with their schema).
ERRORS: dict[str, dict[str, dict[str, Any]]] = {
    "identity": {
        "application/json": _obj({"error": _obj({"code": _INT, "title": _STR, "message": _STR})})
    },
    # Nova and Cinder name the body's one key after the error kind.
    "compute": {
        "application/json": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": _obj({"code": _INT, "message": _STR}),
        }
    },
    "network": {
        "application/json": _obj(
            {"NeutronError": _obj({"type": _STR, "message": _STR, "detail": _STR})}
        )
    },
    "image": {"application/json": _obj({"message": _STR, "code": _STR, "title": _STR})},
    # Barbican: webob's status as code and title, the reason as description.
    "key-manager": {"application/json": _obj({"code": _INT, "title": _STR, "description": _STR})},
    # Swift: a short HTML page (a form POST or a bulk request answers plain text).
    "object-store": {"text/html": ANY, "text/plain": ANY},
    # EC2: the XML `<Response><Errors><Error>` document.
    "ec2": {"text/xml": ANY},
}


# -- the document -------------------------------------------------------------------------


def _routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterable[tuple[str, Route]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            yield prefix + route.path, route


def _responses(dialect: str, mark: dict[str, Any], method: str) -> dict[str, Any]:
    resource = mark.get("resource")
    success: dict[str, Any] = {"description": "Success."}
    if resource is not None and method != "delete":
        item = {"type": "object", "required": [mark["key"]]}
        # A bulk create answers the collection instead: the resource key is not required.
        body = {"type": "object", "properties": {resource: item}} if resource else item
        success["content"] = {"application/json": {"schema": body}}
    error: dict[str, Any] = {"description": "The request was refused; the body says why."}
    if dialect in ERRORS:
        error["content"] = {
            media: {"schema": {"$ref": f"#/components/schemas/{dialect}_error"}} if schema else {}
            for media, schema in ERRORS[dialect].items()
        }
    answers = {"2XX": success, "3XX": {"description": "Redirection."}, "4XX": error}
    for status, why in mark.get("statuses", {}).items():
        answers[str(status)] = {**error, "description": why}
    return answers


def _body(mark: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    body = mark.get("body")
    if isinstance(body, type) and issubclass(body, BaseModel):
        schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[body.__name__] = schema
        body = {"$ref": f"#/components/schemas/{body.__name__}"}
    if mark["content_type"] != "application/json":
        body = body or {"type": "string", "format": "binary"}
    return {"required": False, "content": {mark["content_type"]: {"schema": body or ANY}}}


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", path.replace("{", "by_").replace("}", "")).strip("_")
    return f"{method}_{words}"


def _link_creates(paths: dict[str, Any]) -> None:
    """A create (`POST /things` answering `{"thing": {"id": ...}}`) links to the item path
    under it (`/things/{thing_id}`): stateful tests use what they made."""
    for path, item in paths.items():
        create = item.get("post")
        if create is None or "x-cumulo-resource" not in create:
            continue
        resource, key = create["x-cumulo-resource"], create["x-cumulo-key"]
        pointer = f"$response.body#/{resource}/{key}" if resource else f"$response.body#/{key}"
        for other, ops in paths.items():
            rest = other[len(path) :]
            match = re.fullmatch(r"/{([^}/]+)}", rest) if other.startswith(path) else None
            if not match:
                continue
            links = create["responses"]["2XX"].setdefault("links", {})
            for method in ("get", "put", "delete"):
                if method in ops:
                    links[f"{method}_{resource or 'created'}"] = {
                        "operationId": ops[method]["operationId"],
                        "parameters": {match.group(1): pointer},
                    }


def document(routes: Iterable[BaseRoute], service: str, dialect: str) -> dict[str, Any]:
    """The OpenAPI 3.1 description of `routes` (the app's, /openapi.json and /metrics too)."""
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {}
    if json_error := ERRORS.get(dialect, {}).get("application/json"):
        components[f"{dialect}_error"] = json_error
    for raw_path, route in _routes(routes):
        path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", raw_path)
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in (m.group(1) for m in _PARAM.finditer(raw_path))
        ]
        mark = getattr(route.endpoint, "openapi", None) or {"content_type": "application/json"}
        optional = [
            {"name": name, "in": where, "required": False, "schema": {"type": "string"}}
            for where in ("query", "header")
            for name in mark.get(where, ())
        ]
        for method in sorted(m.lower() for m in route.methods or ()):
            operation: dict[str, Any] = {
                "operationId": _operation_id(method, path),
                "parameters": params + optional,
                "responses": _responses(dialect, mark, method),
            }
            if method in _WITH_BODY and mark["content_type"]:
                operation["requestBody"] = _body(mark, components)
            if method == "post" and mark.get("resource") is not None:
                operation["x-cumulo-resource"] = mark["resource"]
                operation["x-cumulo-key"] = mark["key"]
            paths.setdefault(path, {})[method] = operation
    _link_creates(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"cumulo {service} API",
            "version": __version__,
            "description": (
                f"The {service} API as this cumulo serves it: every path and method it "
                "answers, the request bodies it declares, and its error dialect."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}
            },
        },
        "security": [{"token": []}, {}],
    }


def endpoint(service: str, dialect: str) -> Route:
    """`GET /openapi.json` for an app, made once from its routes at the first request."""
    cached: list[bytes] = []

    async def openapi(request: Request) -> Response:
        if not cached:
            cached.append(orjson.dumps(document(request.app.routes, service, dialect)))
        return Response(cached[0], media_type="application/json")

    return Route("/openapi.json", openapi, methods=["GET"])
