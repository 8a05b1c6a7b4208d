"""Who may call a storage host: every backend request (proxy → object server, one host's
replicator or object server → another's, a host fetching the rings) carries an
HMAC-SHA256 of its method, path and time under the cloud's backend key, and the
object server refuses any other (401 unsigned, 403 wrong or outside the clock-skew
window), logging the refusal.

The key is `<state>/object-store/backend.key` (0600), made on the proxy host's first
start; a storage host's state dir holds a copy of it beside the cloud's cumulo.toml.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Generator
from pathlib import Path

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

LOG = logging.getLogger(__name__)

KEY_FILE = "backend.key"
TIMESTAMP_HEADER = "x-cumulo-backend-timestamp"
SIGNATURE_HEADER = "x-cumulo-backend-signature"
MAX_SKEW = 60.0  # seconds a signed request stays good, either way of the server's clock


class BackendKeyError(Exception):
    pass


def key_path(state_dir: Path) -> Path:
    return state_dir / "object-store" / KEY_FILE


def ensure_key(state_dir: Path) -> bytes:
    """The proxy host's key, made (32 random bytes, hex, 0600) when there is none."""
    path = key_path(state_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # never replaces a key another process made meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return load_key(path)


def load_key(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise BackendKeyError(
            f"no backend key at {path}: copy the proxy host's "
            f"<state dir>/object-store/{KEY_FILE} there"
        ) from None
    if len(text) < 32:
        raise BackendKeyError(f"backend key {path} is too short (at least 32 characters)")
    return text.encode()


def signature(key: bytes, method: str, path: str, timestamp: str) -> str:
    message = f"{method.upper()}\n{path}\n{timestamp}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_headers(key: bytes, method: str, path: str) -> dict[str, str]:
    timestamp = f"{time.time():.6f}"
    return {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(key, method, path, timestamp),
    }


def refusal(key: bytes, method: str, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
    """None for a good signature, else the status (401, 403) and why."""
    timestamp = headers.get(TIMESTAMP_HEADER)
    given = headers.get(SIGNATURE_HEADER)
    if not timestamp or not given:
        return 401, "unsigned backend request"
    try:
        skew = abs(time.time() - float(timestamp))
    except ValueError:
        return 403, "malformed backend timestamp"
    if skew > MAX_SKEW:
        return 403, f"backend signature {skew:.0f} s away from this host's clock"
    if not hmac.compare_digest(signature(key, method, path, timestamp), given):
        return 403, "wrong backend signature"
    return None


class BackendAuth(httpx.Auth):
    """Signs every request of an httpx client (sync or async) with the backend key."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        path = request.url.raw_path.decode("ascii")
        request.headers.update(signed_headers(self.key, request.method, path))
        yield request


class RequireBackendSignature:
    """ASGI middleware of the object server: unsigned or wrongly signed requests are
    answered 401/403 (and logged) before any route sees them."""

    def __init__(self, app: ASGIApp, key: bytes) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        full = (path + (b"?" + query if query else b"")).decode("latin-1")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refused = refusal(self.key, scope["method"], full, headers)
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, reason = refused
        client = scope.get("client") or ("?", 0)
        LOG.warning("object server refused %s %s from %s: %s", scope["method"], full,
                    client[0], reason)  # fmt: skip
        body = reason.encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
