"""Large objects: Dynamic (X-Object-Manifest: every object under a container/prefix,
in name order) and Static (a manifest listing its segments, ?multipart-manifest=put,
get, delete; ranges of segments; manifests inside manifests). Swift's dlo and slo
middlewares, header for header."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request

from cumulo.object_store.errors import SwiftError
from cumulo.object_store.storage import reading, timestamps
from cumulo.object_store.storage.diskfile import StoredObject

MAX_MANIFEST_SEGMENTS = 1000
MAX_MANIFEST_SIZE = 8 << 20
MIN_SEGMENT_SIZE = 1
MAX_DLO_SEGMENTS = 10000
MAX_NESTING = 10

SLO_ETAG = "X-Object-Sysmeta-Slo-Etag"
SLO_SIZE = "X-Object-Sysmeta-Slo-Size"


@dataclass
class Segment:
    source: reading.Source  # a replica file here, or another host's (streamed)
    start: int
    end: int  # exclusive


@dataclass
class Assembled:
    segments: list[Segment]
    size: int
    etag: str


class SegmentReader:
    """Opens the segments a manifest names, with the caller's read rights on each
    segment's container (given as `open_object(account, container, name)`)."""

    def __init__(self, account: str, open_object) -> None:
        self.account = account
        self.open_object = open_object

    async def dlo(self, manifest: str, list_prefix) -> Assembled:
        container, _, prefix = unquote(manifest).partition("/")
        names = await list_prefix(self.account, container, prefix, MAX_DLO_SEGMENTS)
        segments, etags, size = [], [], 0
        for name, _etag in names:
            stored = await self.open_object(self.account, container, name)
            if stored is None:
                continue
            length = int(stored.metadata["Content-Length"])
            if length:
                segments.append(Segment(reading.source_of(stored), 0, length))
            etags.append(stored.metadata["ETag"])
            size += length
        digest = hashlib.md5("".join(etags).encode(), usedforsecurity=False).hexdigest()
        return Assembled(segments, size, digest)

    async def slo(self, stored: StoredObject, depth: int = 0) -> Assembled:
        if depth > MAX_NESTING:
            raise SwiftError(409, "Max recursion depth exceeded on SLO manifest")
        entries = json.loads(await reading.read_all(stored))
        segments: list[Segment] = []
        for entry in entries:
            container, _, name = entry["name"].lstrip("/").partition("/")
            seg = await self.open_object(self.account, container, name)
            if seg is None:
                raise SwiftError(409, f"Segment {entry['name']} is missing")
            if seg.metadata.get("X-Static-Large-Object"):
                if seg.metadata.get(SLO_ETAG) != entry["hash"]:
                    raise SwiftError(409, f"Segment {entry['name']} changed")
                inner = (await self.slo(seg, depth + 1)).segments
            else:
                if seg.metadata["ETag"] != entry["hash"]:
                    raise SwiftError(409, f"Segment {entry['name']} changed")
                inner = [Segment(reading.source_of(seg), 0, int(seg.metadata["Content-Length"]))]
            if "range" in entry:
                first, last = entry["range"]
                inner = _cut(inner, first, last + 1)
            segments.extend(inner)
        return Assembled(segments, int(stored.metadata[SLO_SIZE]), stored.metadata[SLO_ETAG])


def _cut(segments: list[Segment], start: int, end: int) -> list[Segment]:
    out, base = [], 0
    for s in segments:
        length = s.end - s.start
        lo, hi = max(start, base), min(end, base + length)
        if lo < hi:
            out.append(Segment(s.source, s.start + lo - base, s.start + hi - base))
        base += length
    return out


def parse_segment_range(value: str, size: int) -> tuple[int, int]:
    """A manifest segment's "range" ("10-19", "10-", "-5") as inclusive bounds."""
    first, sep, last = value.partition("-")
    try:
        if not sep:
            raise ValueError
        if not first:
            n = int(last)
            start, end = max(size - n, 0), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        raise ValueError(f"Invalid Range header: {value}") from None
    if start > end or start >= size:
        raise ValueError("Unsatisfiable Range")
    return start, end


async def build_manifest(request: Request, body: bytes, account: str, open_object):
    """Check a ?multipart-manifest=put body; the manifest to store, its ETag and size.
    Every problem is reported at once, as Swift does (400, one line per segment)."""
    if len(body) > MAX_MANIFEST_SIZE:
        raise SwiftError(413, f"Manifest File > {MAX_MANIFEST_SIZE} bytes")
    try:
        items = json.loads(body)
    except ValueError:
        raise SwiftError(400, "Manifest must be valid JSON.\n") from None
    if not isinstance(items, list) or not items:
        raise SwiftError(400, "Manifest must be a list.\n")
    if len(items) > MAX_MANIFEST_SEGMENTS:
        raise SwiftError(413, f"Too many segments (max {MAX_MANIFEST_SEGMENTS})")
    errors: list[str] = []
    manifest: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        path = item.get("path") if isinstance(item, dict) else None
        if not isinstance(path, str) or path.lstrip("/").count("/") < 1:
            errors.append(
                f"Index {i}: path does not refer to an object. "
                "Path must be of the form /container/object."
            )
            continue
        container, _, name = unquote(path).lstrip("/").partition("/")
        try:
            seg = await open_object(account, container, name)
        except SwiftError as exc:
            errors.append(f"/{container}/{name}, {exc.status} {exc.title}")
            continue
        if seg is None:
            errors.append(f"/{container}/{name}, 404 Not Found")
            continue
        meta = seg.metadata
        is_slo = bool(meta.get("X-Static-Large-Object"))
        seg_etag = meta[SLO_ETAG] if is_slo else meta["ETag"]
        seg_size = int(meta[SLO_SIZE]) if is_slo else int(meta["Content-Length"])
        if item.get("etag") not in (None, "") and item["etag"].strip('"') != seg_etag:
            errors.append(f"/{container}/{name}, Etag Mismatch")
        if item.get("size_bytes") not in (None, "") and int(item["size_bytes"]) != seg_size:
            errors.append(f"/{container}/{name}, Size Mismatch")
        if seg_size < MIN_SEGMENT_SIZE and i < len(items) - 1:
            errors.append(
                f"/{container}/{name}, Too small; each segment must be at least "
                f"{MIN_SEGMENT_SIZE} byte."
            )
        entry = {
            "name": f"/{container}/{name}",
            "bytes": seg_size,
            "hash": seg_etag,
            "content_type": meta.get("Content-Type", "application/octet-stream"),
            "last_modified": timestamps.iso(meta["X-Timestamp"]),
        }
        if is_slo:
            entry["sub_slo"] = True
        if item.get("range"):
            try:
                entry["range"] = list(parse_segment_range(item["range"], seg_size))
            except ValueError as exc:
                errors.append(f"/{container}/{name}, {exc}")
                continue
        manifest.append(entry)
    if errors:
        raise SwiftError(400, "Errors:\n" + "\n".join(errors) + "\n")
    digest, total = manifest_totals(manifest)
    return manifest, digest, total


def manifest_totals(entries: list[dict]) -> tuple[str, int]:
    """A stored manifest's ETag (md5 of its segments' ETags, `<etag>:<first>-<last>;` for
    a range, as Swift) and size."""
    etags, total = [], 0
    for entry in entries:
        if "range" in entry:
            first, last = entry["range"]
            etags.append(f"{entry['hash']}:{first}-{last};")
            total += last - first + 1
        else:
            etags.append(entry["hash"])
            total += entry["bytes"]
    return hashlib.md5("".join(etags).encode(), usedforsecurity=False).hexdigest(), total


def synced_entries(body: bytes) -> list[dict[str, Any]]:
    """The entries of a manifest container sync sends (as ?multipart-manifest=get shows
    them, Swift's stored form), to store as they are: the segments are not looked at,
    they may come later. ValueError with Swift's message when it is not one."""
    try:
        items = json.loads(body)
    except ValueError:
        raise ValueError("Manifest must be valid JSON.\n") from None
    if not isinstance(items, list) or not items:
        raise ValueError("Manifest must be a list.\n")
    entries: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        size = item.get("bytes") if isinstance(item, dict) else None
        if (
            not isinstance(name, str)
            or name.lstrip("/").count("/") < 1
            or not isinstance(item.get("hash"), str)
            or not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
        ):
            raise ValueError(f"Index {i}: not a manifest entry (name, hash, bytes).\n")
        entry = {"name": "/" + name.lstrip("/"), "bytes": size, "hash": item["hash"]}
        for key in ("content_type", "last_modified"):
            if isinstance(item.get(key), str):
                entry[key] = item[key]
        if item.get("sub_slo"):
            entry["sub_slo"] = True
        if "range" in item:
            first, last = parse_segment_range(str(item["range"]), size)
            entry["range"] = [first, last]
        entries.append(entry)
    return entries


def raw_manifest(entries: list[dict]) -> list[dict]:
    """?multipart-manifest=get&format=raw: the manifest as it was PUT."""
    out = []
    for e in entries:
        item = {"path": e["name"], "etag": e["hash"], "size_bytes": e["bytes"]}
        if "range" in e:
            item["range"] = f"{e['range'][0]}-{e['range'][1]}"
        out.append(item)
    return out


def stored_entries(entries: list[dict]) -> list[dict]:
    """?multipart-manifest=get: the stored entries (ranges as Swift shows them)."""
    out = []
    for e in entries:
        item = dict(e)
        if "range" in item:
            item["range"] = f"{item['range'][0]}-{item['range'][1]}"
        out.append(item)
    return out
