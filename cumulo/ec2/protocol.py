"""The EC2 Query protocol, driven by botocore's model of the EC2 API.

botocore carries AWS's own description of every EC2 operation (member names, the names
they take on the wire, types). Requests arrive as flat form fields (`Filter.1.Name`,
`InstanceId.2`, `BlockDeviceMapping.1.Ebs.VolumeSize`); `parse` turns them into the
nested dict boto3 users write (`{"Filters": [{"Name": ...}]}`). Handlers answer with the
dict boto3 would return, and `render` writes it as the XML document boto3 parses.
"""

from __future__ import annotations

import base64
import binascii
import functools
from datetime import UTC, datetime
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from cumulo.ec2.errors import Ec2Error, xml_text

XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
_MAX_DEPTH = 12  # EC2 input shapes are shallow; a bound keeps odd keys from recursing


@functools.cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("ec2")


def operation(name: str) -> OperationModel | None:
    model = service_model()
    return model.operation_model(name) if name in model.operation_names else None


# -- requests ------------------------------------------------------------------------


def _query_name(member: Shape, name: str) -> str:
    """The name a member takes in the form (botocore's EC2 serializer, in reverse)."""
    ser = member.serialization
    if ser.get("queryName"):
        return ser["queryName"]
    if ser.get("name"):
        return ser["name"][0].upper() + ser["name"][1:]
    return name


def parse(op: OperationModel, fields: dict[str, str]) -> dict[str, Any]:
    """The operation's input as boto3 kwargs; `InvalidParameterValue` for a value of the
    wrong type, `MissingParameter` for a required member that is absent."""
    present: set[str] = set()
    for key in fields:
        parts = key.split(".")
        present.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    shape = op.input_shape
    if shape is None:
        return {}
    return _parse(shape, "", fields, present, 0) or {}


def _parse(shape: Shape, prefix: str, fields: dict, present: set, depth: int) -> Any:
    kind = shape.type_name
    if depth > _MAX_DEPTH:
        return None
    if kind == "structure":
        out = {}
        for name, member in shape.members.items():
            key = _query_name(member, name)
            path = f"{prefix}.{key}" if prefix else key
            if path in present:
                value = _parse(member, path, fields, present, depth + 1)
                if value is not None:
                    out[name] = value
        for name in shape.required_members:
            if name not in out:
                label = f"{prefix}.{_query_name(shape.members[name], name)}".lstrip(".")
                raise Ec2Error(
                    "MissingParameter", f"The request must contain the parameter {label}"
                )
        return out
    if kind == "list":
        indexes = set()
        start = prefix + "."
        for key in present:
            if key.startswith(start):
                head = key[len(start) :].split(".", 1)[0]
                if head.isdecimal():
                    indexes.add(int(head))
        items = []
        for i in sorted(indexes):
            value = _parse(shape.member, f"{prefix}.{i}", fields, present, depth + 1)
            if value is not None:
                items.append(value)
        return items
    if kind == "map":
        return None  # no EC2 input we serve takes a map
    raw = fields.get(prefix)
    if raw is None:
        return None
    return _scalar(kind, prefix, raw)


def _scalar(kind: str, name: str, raw: str) -> Any:
    try:
        if kind in ("integer", "long"):
            return int(raw)
        if kind in ("float", "double"):
            return float(raw)
        if kind == "boolean":
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            return raw.lower() == "true"
        if kind == "timestamp":
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if kind == "blob":
            return base64.b64decode(raw, validate=True)
    except (ValueError, binascii.Error):
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({raw}) for parameter {name} is invalid."
        ) from None
    return raw


# -- responses -----------------------------------------------------------------------


def render(op: OperationModel, data: dict[str, Any], request_id: str) -> bytes:
    root = Element(f"{op.name}Response", xmlns=XMLNS)
    SubElement(root, "requestId").text = request_id
    if op.output_shape is not None:
        _fill(root, op.output_shape, data)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root)


def _fill(parent: Element, shape: Shape, value: Any) -> None:
    kind = shape.type_name
    if kind == "structure":
        for name, member in shape.members.items():
            item = value.get(name)
            if item is None:
                continue
            _fill(SubElement(parent, member.serialization.get("name", name)), member, item)
    elif kind == "list":
        tag = shape.member.serialization.get("name", "member")
        for item in value:
            _fill(SubElement(parent, tag), shape.member, item)
    elif kind == "map":
        for key, item in value.items():
            entry = SubElement(parent, "entry")
            SubElement(entry, "key").text = xml_text(str(key))
            _fill(SubElement(entry, "value"), shape.value, item)
    elif kind == "boolean":
        parent.text = "true" if value else "false"
    elif kind == "timestamp":
        parent.text = timestamp(value)
    elif kind == "blob":
        parent.text = base64.b64encode(value).decode()
    else:
        parent.text = xml_text(str(value))


def timestamp(value: datetime | str) -> str:
    """ISO 8601 in UTC with milliseconds, as EC2 writes times."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
