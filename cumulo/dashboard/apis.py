"""The REST APIs as the dashboard calls them: the user's token, errors in plain words.

Every call goes through cumulo's one service client (in-process in the all-in-one
cloud, HTTP when the dashboard runs apart) and its time is added to the request's
Server-Timing header.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import orjson

from cumulo.common.service_client import ServiceClient, ServiceError

T = TypeVar("T")

# The compute microversion the pages speak: 2.62 gives action events their hostId.
COMPUTE_VERSION = {"OpenStack-API-Version": "compute 2.62", "X-OpenStack-Nova-API-Version": "2.62"}
ANY_STATUS = tuple(range(100, 600))

# Per request: (API time in seconds, number of calls), for the Server-Timing header.
api_time: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "dashboard_api_time", default=None
)


class ApiFailure(Exception):
    """An API answered with an error: its status, message in plain words, request id."""

    def __init__(
        self,
        service: str,
        status: int,
        message: str,
        request_id: str = "",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        self.service, self.status, self.message, self.request_id = (
            service,
            status,
            message,
            request_id,
        )
        self.headers = headers or {}
        self.body = body  # the answer as sent (Keystone's auth receipt body, for one)
        super().__init__(f"{service} {status}: {message}")

    @property
    def explanation(self) -> str:
        """The message with the fix where there is a usual one."""
        lowered = self.message.lower()
        if "quota" in lowered:
            return f"{self.message} Free some resources or ask an admin to raise the quota."
        if "no valid host" in lowered:
            return f"{self.message} No compute host has room for it: try a smaller flavor."
        if self.status == 409 and ("already" in lowered or "duplicate" in lowered):
            return f"{self.message} Pick another name."
        return self.message


def error_message(body: bytes, status: int) -> str:
    """The message an OpenStack error body carries, wherever the service puts it."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode(errors="replace").strip()
        return text[:300] or f"The request failed ({status})."

    def find(node: Any) -> str | None:
        if isinstance(node, dict):
            for key in ("message", "detail", "title"):
                if isinstance(node.get(key), str) and node[key]:
                    return node[key]
            for value in node.values():
                if (found := find(value)) is not None:
                    return found
        elif isinstance(node, list):
            for value in node:
                if (found := find(value)) is not None:
                    return found
        return None

    return find(data) or f"The request failed ({status})."


class Api:
    """One service's API with one user's token."""

    def __init__(self, client: ServiceClient, token: str, headers: dict[str, str] | None = None):
        self.client, self.token, self.headers = client, token, headers or {}

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        started = time.perf_counter()
        try:
            response = await self.client.request(
                method, path, self.token, ok=ANY_STATUS, headers=headers, **kwargs
            )
        finally:
            spent = api_time.get()
            if spent is not None:
                spent[0] += time.perf_counter() - started
                spent[1] += 1
        if response.status_code >= 400:
            raise ApiFailure(
                self.client.service,
                response.status_code,
                error_message(response.content, response.status_code),
                response.headers.get("x-openstack-request-id", ""),
                dict(response.headers),
                response.content,
            )
        return response

    async def get(self, path: str, **kwargs: Any) -> Any:
        response = await self.call("GET", path, **kwargs)
        return response.json() if response.content else None

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = await self.call("POST", path, json=body, **kwargs)
        return response.json() if response.content else None

    async def put(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = await self.call("PUT", path, json=body, **kwargs)
        return response.json() if response.content else None

    async def patch(self, path: str, body: Any, content_type: str) -> Any:
        response = await self.call(
            "PATCH", path, content=orjson.dumps(body), headers={"Content-Type": content_type}
        )
        return response.json() if response.content else None

    async def delete(self, path: str) -> None:
        await self.call("DELETE", path)

    @asynccontextmanager
    async def stream(self, path: str) -> AsyncIterator[httpx.Response]:
        """GET with a streamed body (downloads): never held in memory whole."""
        try:
            opened = self.client.stream(path, self.token)
            response = await opened.__aenter__()
        except ServiceError as exc:
            message = error_message(exc.body.encode(), exc.status)
            raise ApiFailure(self.client.service, exc.status, message) from None
        try:
            yield response
        finally:
            await opened.__aexit__(None, None, None)


class Apis:
    """The service clients the dashboard holds (one per API, shared by every user)."""

    NAMES = ("identity", "compute", "image", "network", "volume", "object-store")

    def __init__(self, clients: dict[str, ServiceClient]) -> None:
        self.clients = clients

    async def ensure_clients(self, token: str) -> None:
        """Every client exists before a page asks for it (here from the start)."""

    def for_token(self, token: str) -> UserApis:
        return UserApis(self, token)

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


class UserApis:
    """Every API with one user's token."""

    def __init__(self, apis: Apis, token: str) -> None:
        c = apis.clients
        self.token = token
        self.identity = Api(c["identity"], token)
        self.compute = Api(c["compute"], token, COMPUTE_VERSION)
        self.image = Api(c["image"], token)
        self.network = Api(c["network"], token)
        self.volume = Api(c["volume"], token)
        self.object_store = Api(c["object-store"], token)

    def use_token(self, token: str) -> None:
        """The session's new token (renewed while a page's live stream is open)."""
        self.token = token
        for api in (
            self.identity,
            self.compute,
            self.image,
            self.network,
            self.volume,
            self.object_store,
        ):
            api.token = token


async def gather(*calls: Awaitable[T]) -> list[T]:
    """Run a page's API calls in parallel (what Horizon does one after another)."""
    return list(await asyncio.gather(*calls))


async def optional(call: Awaitable[T], default: T) -> T:
    """A call whose failure the page can live without (a side panel): its default."""
    try:
        return await call
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return default
