"""Compute microversions: negotiated from `OpenStack-API-Version: compute X.Y` (or the
legacy `X-OpenStack-Nova-API-Version`); no header means 2.1, "latest" the maximum.

MAX_VERSION is honest: it only rises when what the api-ref says changed at that
version is implemented (docs/compatibility.md lists what is not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MIN_VERSION = (2, 1)
MAX_VERSION = (2, 104)

_VERSION = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


@total_ordering
@dataclass(frozen=True)
class APIVersion:
    major: int
    minor: int

    def __lt__(self, other: object) -> bool:
        if isinstance(other, tuple):
            other = APIVersion(*other)
        assert isinstance(other, APIVersion)
        return (self.major, self.minor) < (other.major, other.minor)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, tuple):
            return (self.major, self.minor) == other
        if isinstance(other, APIVersion):
            return (self.major, self.minor) == (other.major, other.minor)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.major, self.minor))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


MIN = APIVersion(*MIN_VERSION)
MAX = APIVersion(*MAX_VERSION)


class VersionError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(message)


def negotiate(headers: dict[str, str]) -> APIVersion:
    raw = None
    modern = headers.get("openstack-api-version")
    if modern:
        for part in modern.split(","):
            service, _, value = part.strip().partition(" ")
            if service.lower() == "compute":
                raw = value.strip()
    if raw is None:
        raw = headers.get("x-openstack-nova-api-version")
    if raw is None:
        return MIN
    if raw.lower() == "latest":
        return MAX
    match = _VERSION.match(raw)
    if not match:
        raise VersionError(
            400,
            f"API Version String {raw} is of invalid format. Must be of format MajorNum.MinorNum.",
        )
    version = APIVersion(int(match.group(1)), int(match.group(2)))
    if not (MIN <= version <= MAX):
        raise VersionError(
            406,
            f"Version {raw} is not supported by the API. Minimum is {MIN} and maximum is {MAX}.",
        )
    return version


class MicroversionMiddleware:
    """Puts the negotiated version in scope["compute.version"] and echoes it on responses."""

    def __init__(self, app: ASGIApp, render_error) -> None:
        self.app = app
        self.render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        extra: list[tuple[bytes, bytes]] = []
        if path.startswith("/v2/") and path != "/v2/":
            # The legacy v2 endpoint is v2.1 at 2.1 (no microversions, none echoed).
            scope = {k: v for k, v in scope.items() if k != "raw_path"}
            scope["path"] = "/v2.1/" + path[4:]
            scope["compute.version"] = MIN
        else:
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            try:
                version = negotiate(headers)
            except VersionError as exc:
                await self.render_error(exc.status, exc.message, scope, receive, send)
                return
            scope["compute.version"] = version
            extra = [
                (b"openstack-api-version", f"compute {version}".encode()),
                (b"x-openstack-nova-api-version", str(version).encode()),
                (b"vary", b"OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
            ]

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                # Nova names the request id twice (clients read either).
                request_ids = [v for k, v in headers if k.lower() == b"x-openstack-request-id"]
                headers += [(b"x-compute-request-id", v) for v in request_ids[:1]]
                message["headers"] = [*headers, *extra]
            await send(message)

        await self.app(scope, receive, send_with_version)


def version_of(request) -> APIVersion:
    return request.scope.get("compute.version", MIN)
