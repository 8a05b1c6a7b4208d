"""S3's XML: documents built with ElementTree, request bodies read namespace-blind."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from cumulo.object_store.s3.errors import S3Error

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def element(tag: str, *children: ET.Element | None, text: Any = None, ns: bool = False):
    el = ET.Element(tag, {"xmlns": NS} if ns else {})
    if text is not None:
        el.text = str(text)
    for child in children:
        if child is not None:
            el.append(child)
    return el


def sub(parent: ET.Element, tag: str, text: Any = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def key_encoder(encoding: str | None) -> Callable[[str], str]:
    """How a listing writes keys and prefixes: URL-encoded with `encoding-type=url`."""
    if encoding == "url":
        return lambda value: quote(value, safe="/")
    return lambda value: value


def document(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


def parse_body(body: bytes) -> ET.Element:
    if not body.strip():
        raise S3Error("MalformedXML")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise S3Error("MalformedXML") from None
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


def iso8601(swift_time: str) -> str:
    """Swift's listing time (2026-12-05T01:23:45.123456) as S3's (…45.123Z)."""
    head, _, frac = swift_time.partition(".")
    return f"{head}.{(frac + '000')[:3]}Z"


def http_to_iso(http_date: str) -> str:
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(http_date).astimezone(UTC)
    except (TypeError, ValueError):
        when = datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")
