"""Block Storage microversions and URLs.

The version is negotiated from `OpenStack-API-Version: volume X.Y` (no header:
3.0, "latest": the maximum) and echoed on every response. MAX_VERSION is honest:
docs/compatibility.md lists what the versions up to it add that is not here.

URLs may carry the project id (`/v3/{project_id}/volumes`) or, since 3.67, not
(`/v3/volumes`): the middleware takes a project id segment out of the path, so
the routes are written once, without it.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from cumulo.common.app import with_headers
from cumulo.common.faults import BadRequest, ErrorRenderer, NotFound

MIN_VERSION = (3, 0)
MAX_VERSION = (3, 71)

_VERSION = re.compile(r"^([1-9]\d*)\.(0|[1-9]\d*)$")

# First path segments under /v3 that are collections, not a project id.
COLLECTIONS = frozenset(
    {
        "volumes", "snapshots", "types", "attachments", "os-availability-zone", "extensions",
        "limits", "os-quota-sets", "os-services", "scheduler-stats", "os-volume-transfer",
        "backups", "groups", "group_types", "group_snapshots", "messages", "capabilities",
        "qos-specs", "os-hosts", "workers", "clusters", "resource_filters", "default-types",
        "os-snapshot-manage", "os-volume-manage", "manageable_volumes", "manageable_snapshots",
        "volume-transfers", "os-quota-class-sets",
    }
)  # fmt: skip


def negotiate(header: str | None) -> tuple[int, int]:
    raw = None
    for part in (header or "").split(","):
        service, _, value = part.strip().partition(" ")
        if service.lower() in ("volume", "block-storage"):
            raw = value.strip()
    if raw is None:
        return MIN_VERSION
    if raw.lower() == "latest":
        return MAX_VERSION
    match = _VERSION.match(raw)
    if not match:
        raise BadRequest(f"Invalid API version string: {raw}. Must be of format MajorNum.MinorNum.")
    version = (int(match.group(1)), int(match.group(2)))
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise VersionNotFound(
            f"Version {raw} is not supported by the API. Minimum is "
            f"{fmt(MIN_VERSION)} and maximum is {fmt(MAX_VERSION)}."
        )
    return version


class VersionNotFound(NotFound):
    status = 406


def fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


class VolumeApiMiddleware:
    """Negotiates the microversion (scope["volume.version"]) and drops a project id
    segment from the path (scope["volume.url_project"])."""

    def __init__(self, app: ASGIApp, render_error: ErrorRenderer) -> None:
        self.app = app
        self.render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parts = scope["path"].split("/")
        if len(parts) > 2 and parts[1] == "v3" and parts[2] and parts[2] not in COLLECTIONS:
            scope["volume.url_project"] = parts[2]
            scope["path"] = "/".join(parts[:2] + parts[3:]) or "/"
            scope["raw_path"] = scope["path"].encode()
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            if len(scope["path"]) > len("/v3/") and scope["path"].endswith("/"):
                # /v3/volumes/ names no volume (Cinder's router answers 404, not the list).
                raise NotFound("Could not find the requested resource.")
            version = negotiate(headers.get("openstack-api-version"))
        except (BadRequest, NotFound) as err:
            body = json.dumps(self.render_error(err)).encode()
            start = {"type": "http.response.start", "status": err.status}
            await send({**start, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        scope["volume.version"] = version
        extra = [
            (b"openstack-api-version", f"volume {fmt(version)}".encode()),
            (b"vary", b"OpenStack-API-Version"),
        ]
        await self.app(scope, receive, with_headers(send, extra))
