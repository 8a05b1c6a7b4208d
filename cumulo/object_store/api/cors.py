"""Cross-origin requests to containers and objects (Swift's CORS handling, set per
container with `X-Container-Meta-Access-Control-Allow-Origin` (origins separated by
spaces, or `*`), `-Max-Age` and `-Expose-Headers`), so a web page of another origin can
read and write objects with a token or a temp URL.

- `OPTIONS` (a preflight) answers 200 with `Access-Control-Allow-Origin`, `-Methods`,
  `-Headers` (those requested) and `-Max-Age` when the container allows the `Origin`
  and the method, else 401; without `Origin` or `Access-Control-Request-Method` it is
  a plain 200 with `Allow`.
- Any other request carrying an allowed `Origin` gets `Access-Control-Allow-Origin` and
  `Access-Control-Expose-Headers` (Swift's default list, the object's metadata headers,
  and the container's own list) on its answer, whatever its status.

S3 requests never come here: the S3 front answers its own CORS from the bucket's rules.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cumulo.object_store.core import ObjectStore

ALLOW_ORIGIN = "X-Container-Meta-Access-Control-Allow-Origin"
MAX_AGE = "X-Container-Meta-Access-Control-Max-Age"
EXPOSE = "X-Container-Meta-Access-Control-Expose-Headers"
METHODS = ("HEAD", "GET", "PUT", "POST", "COPY", "OPTIONS", "DELETE")
# What Swift exposes to scripts on every cross-origin answer.
EXPOSED = ("cache-control", "content-language", "content-type", "expires", "last-modified",
           "pragma", "etag", "x-timestamp", "x-trans-id", "x-openstack-request-id")  # fmt: skip


def allowed_origin(origins: str | None, origin: str) -> str | None:
    """What Access-Control-Allow-Origin says for this Origin (None: not allowed)."""
    listed = (origins or "").split()
    if "*" in listed:
        return "*"
    return origin if origin in listed else None


class SwiftCors:
    def __init__(self, app: ASGIApp, store: ObjectStore) -> None:
        self.app = app
        self.store = store

    def _container_of(self, scope: Scope) -> tuple[str, str] | None:
        parts = scope["path"].split("/", 4)  # "", "v1", account, container, object
        if len(parts) < 4 or parts[1] != "v1" or not parts[2] or not parts[3]:
            return None
        return parts[2], parts[3]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("cumulo.s3"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        where = self._container_of(scope)
        if scope["method"] == "OPTIONS" and where is not None:
            await self._preflight(scope, send, headers, where)
            return
        if origin is None or where is None:
            await self.app(scope, receive, send)
            return
        info = await self.store.proxy.container_info(*where)
        meta = info.metadata or {}
        allow = allowed_origin(meta.get(ALLOW_ORIGIN), origin)
        if info.status != 200 or allow is None:
            await self.app(scope, receive, send)
            return
        extra = [h.strip().lower() for h in meta.get(EXPOSE, "").split(",") if h.strip()]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = [k.decode().lower() for k, _ in message.get("headers", [])]
                exposed = [*EXPOSED, *(k for k in present if k.startswith("x-object-meta-")),
                           *extra]  # fmt: skip
                message["headers"] = [
                    *message.get("headers", []),
                    (b"access-control-allow-origin", allow.encode()),
                    (b"access-control-expose-headers", ", ".join(dict.fromkeys(exposed)).encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, scope: Scope, send: Send, headers: Headers, where: tuple[str, str]
    ) -> None:
        allow_header = ", ".join(METHODS)
        origin, method = headers.get("origin"), headers.get("access-control-request-method")
        answer: list[tuple[bytes, bytes]] = [(b"allow", allow_header.encode())]
        status = 200
        if origin is not None and method is not None:
            info = await self.store.proxy.container_info(*where)
            meta = info.metadata or {}
            allow = allowed_origin(meta.get(ALLOW_ORIGIN), origin) if info.status == 200 else None
            if allow is None or method.upper() not in METHODS:
                status = 401
            else:
                answer += [
                    (b"access-control-allow-origin", allow.encode()),
                    (b"access-control-allow-methods", allow_header.encode()),
                ]
                if headers.get("access-control-request-headers"):
                    requested = headers["access-control-request-headers"]
                    answer.append((b"access-control-allow-headers", requested.encode()))
                if meta.get(MAX_AGE):
                    answer.append((b"access-control-max-age", meta[MAX_AGE].encode()))
        body = b"" if status == 200 else b"<html><h1>Unauthorized</h1></html>"
        answer += [(b"content-length", str(len(body)).encode())]
        if body:
            answer.append((b"content-type", b"text/html; charset=UTF-8"))
        await send({"type": "http.response.start", "status": status, "headers": answer})
        await send({"type": "http.response.body", "body": body})
