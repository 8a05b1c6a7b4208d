"""Account and container listings: query parameters and the text, JSON and XML forms."""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from starlette.requests import Request

from cumulo.object_store.api.symlinks import listing_fields
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.storage import timestamps

CONTENT_TYPES = {
    "json": "application/json; charset=utf-8",
    "xml": "application/xml; charset=utf-8",
    "plain": "text/plain; charset=utf-8",
}


def listing_format(request: Request) -> str:
    fmt = request.query_params.get("format", "").lower()
    if fmt in ("json", "xml", "plain"):
        return fmt
    accept = request.headers.get("accept", "")
    if "application/json" in accept:
        return "json"
    if "application/xml" in accept or "text/xml" in accept:
        return "xml"
    return "plain"


def listing_query(request: Request, max_limit: int) -> tuple[dict[str, Any], bool]:
    """The broker's query, and whether `path` asked for direct children only."""
    params = request.query_params
    limit = max_limit
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            raise SwiftError(400, "Value of limit must be a positive integer") from None
        if limit < 0:
            raise SwiftError(400, "Value of limit must be a positive integer")
        if limit > max_limit:
            raise SwiftError(412, f"Maximum limit is {max_limit}")
    query = {
        "limit": limit,
        "marker": params.get("marker", ""),
        "end_marker": params.get("end_marker", ""),
        "prefix": params.get("prefix", ""),
        "delimiter": params.get("delimiter", ""),
        "reverse": params.get("reverse", "").lower() in ("1", "true", "yes", "on", "t", "y"),
    }
    for key in ("marker", "end_marker", "prefix", "delimiter"):
        if "\x00" in query[key]:
            raise SwiftError(412, "Invalid UTF8 or contains NULL")
    if len(query["delimiter"]) > 1:
        raise SwiftError(412, "Bad delimiter")
    path = params.get("path")
    if path is not None:
        query["prefix"] = path.rstrip("/") + "/" if path.strip("/") else ""
        query["delimiter"] = "/"
    return query, path is not None


def object_entry(row: dict[str, Any], account: str) -> dict[str, Any]:
    """A listing's object; a symlink's shows its target (symlink_path, and symlink_etag
    and symlink_bytes for a static one), in JSON listings only."""
    if "subdir" in row:
        return {"subdir": row["subdir"]}
    etag, link = listing_fields(row["etag"], account)
    return {
        "hash": etag,
        "last_modified": timestamps.iso(row["created_at"]),
        "bytes": row["size"],
        "name": row["name"],
        "content_type": row["content_type"],
        **link,
    }


def container_entry(row: dict[str, Any]) -> dict[str, Any]:
    if "subdir" in row:
        return {"subdir": row["subdir"]}
    return {
        "name": row["name"],
        "count": row["object_count"],
        "bytes": row["bytes_used"],
        "last_modified": timestamps.iso(row["put_timestamp"]),
    }


def render(fmt: str, root: str, root_name: str, item: str, entries: list[dict]) -> bytes:
    if fmt == "json":
        return json.dumps(entries).encode()
    if fmt == "xml":
        lines = ['<?xml version="1.0" encoding="UTF-8"?>', f"<{root} name={quoteattr(root_name)}>"]
        for entry in entries:
            if "subdir" in entry:
                lines.append(
                    f"<subdir name={quoteattr(entry['subdir'])}>"
                    f"<name>{escape(entry['subdir'])}</name></subdir>"
                )
                continue
            fields = "".join(
                f"<{k}>{escape(str(v))}</{k}>"
                for k, v in entry.items()
                if not k.startswith("symlink_")
            )
            lines.append(f"<{item}>{fields}</{item}>")
        lines.append(f"</{root}>")
        return "\n".join(lines).encode()
    return "".join(f"{e.get('subdir') or e['name']}\n" for e in entries).encode()
