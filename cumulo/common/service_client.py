"""Calling another service's REST API: one small client, HTTP or in-process ASGI.

In the all-in-one process the target app is called in-process through httpx's
ASGI transport; across hosts the same requests go over HTTP. Callers pass the
token to act with (the user's, from the request context, or a service token). Every
call names the request it is made for (`X-OpenStack-Request-ID`: its global request id,
see cumulo.common.request_ids) and joins its trace.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
from starlette.types import ASGIApp

from cumulo.common import request_ids, tracing
from cumulo.common.asgi_stream import StreamingASGITransport


def url_path(template: str, *values: object) -> str:
    """`template` with each `{}` filled by one value percent-encoded as one path segment:
    an id a user typed may hold `/`, `?`, spaces or control characters, and must reach
    the other service as the one segment it was (which answers 404), never as a path."""
    return template.format(*(_segment(v) for v in values))


def _segment(value: object) -> str:
    # `.` and `..` would be read as dot segments (httpx removes them): their dots encoded.
    quoted = quote(str(value), safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


# The call joins the trace, and the other service logs it under the same global id.
CALL_HOOKS = [tracing.inject_http, request_ids.inject_http]


class ServiceError(Exception):
    """The other service answered with an error status."""

    def __init__(self, service: str, status: int, body: str) -> None:
        self.service, self.status, self.body = service, status, body
        super().__init__(f"{service} answered {status}: {body[:300]}")


class ServiceClient:
    def __init__(
        self,
        service: str,
        *,
        app: ASGIApp | None = None,
        url: str | None = None,
        timeout: float = 60.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        if (app is None) == (url is None):
            raise ValueError("give either an in-process app or a URL")
        self.service = service
        transport: httpx.AsyncBaseTransport = (
            httpx.ASGITransport(app=app)
            if app is not None
            else httpx.AsyncHTTPTransport(retries=2, verify=verify)
        )
        self._http = httpx.AsyncClient(
            transport=transport,
            base_url=url or f"http://{service}.internal",
            timeout=timeout,
            event_hooks={"request": CALL_HOOKS},
        )
        # Streamed bodies (image data) in-process: httpx's ASGI transport would hold
        # them whole in memory.
        self._streaming = (
            httpx.AsyncClient(
                transport=StreamingASGITransport(app),
                base_url=f"http://{service}.internal",
                timeout=timeout,
                event_hooks={"request": CALL_HOOKS},
            )
            if app is not None
            else self._http
        )

    async def close(self) -> None:
        await self._http.aclose()
        if self._streaming is not self._http:
            await self._streaming.aclose()

    async def request(
        self,
        method: str,
        path: str,
        token: str,
        *,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {"X-Auth-Token": token, **kwargs.pop("headers", {})}
        response = await self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code not in ok:
            raise ServiceError(self.service, response.status_code, response.text)
        return response

    async def json(self, method: str, path: str, token: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, token, **kwargs)
        return response.json() if response.content else None

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        token: str,
        *,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> AsyncIterator[httpx.Response]:
        """GET with a streamed body (image data): never held in memory whole."""
        headers = {"X-Auth-Token": token, **(headers or {})}
        async with self._streaming.stream("GET", path, headers=headers) as response:
            if response.status_code not in ok:
                body = (await response.aread()).decode(errors="replace")
                raise ServiceError(self.service, response.status_code, body)
            yield response


async def file_chunks(path: str, chunk: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """A file's bytes for a streamed request body, read off the event loop."""
    with open(path, "rb") as f:
        while data := await asyncio.to_thread(f.read, chunk):
            yield data
