"""What a request may bring and how often, the same for every API ([limits] in the config):
JSON bodies (bytes, nesting, how slowly they arrive), URL and header sizes, a rate per
token or address, and how many qemu-img conversions run at once.

Each check answers in the service's own error dialect before the request is handled;
a request once accepted is never cut short by them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from cumulo.common.config import LimitsConfig
from cumulo.common.faults import (
    ApiError,
    BadRequest,
    HeadersTooLarge,
    PayloadTooLarge,
    RequestTimeout,
    TooManyRequests,
    UriTooLong,
)

# The process's limits: the cloud sets them from its config when it starts.
LIMITS = LimitsConfig()
_conversions: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def configure(limits: LimitsConfig) -> None:
    global LIMITS
    LIMITS = limits
    _conversions.clear()
    _buckets.clear()


async def read_body(request: Request, limit: int | None = None) -> bytes:
    """The request's body, read within the time limit and `limit` bytes (default: the
    JSON body limit), else 408/413."""
    limit = LIMITS.json_body_bytes if limit is None else limit
    chunks: list[bytes] = []
    size = 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), LIMITS.body_read_timeout)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise RequestTimeout() from None
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is larger than the limit ({limit} bytes).")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> Any:
    """The request's JSON body, read within the size and time limits, checked for depth."""
    raw = await read_body(request)
    if not raw:
        raise BadRequest("The request body is empty: a JSON object is required.")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadRequest(_too_deep()) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Malformed JSON in request body: {exc}") from None
    if _depth(data) > LIMITS.json_depth:
        raise BadRequest(_too_deep())
    return data


def _too_deep() -> str:
    return f"The request body nests deeper than the limit ({LIMITS.json_depth} levels)."


def _depth(data: Any) -> int:
    """How deep containers nest (iterative: a hostile body cannot exhaust the stack)."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        deepest = max(deepest, depth)
        if depth <= LIMITS.json_depth:
            todo.extend((v, depth + 1) for v in value)
    return deepest


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens, self.stamp = tokens, stamp


_buckets: dict[str, _Bucket] = {}
_MAX_BUCKETS = 100_000


def _caller(scope: dict[str, Any]) -> str:
    for key, value in scope.get("headers", ()):
        if key == b"x-auth-token":
            return "token:" + hashlib.sha256(value).hexdigest()[:32]
    client = scope.get("client") or ("?", 0)
    return f"address:{client[0]}"


def _take(caller: str) -> float:
    """0 when the caller may go on, else the seconds until it may (token bucket)."""
    rate, burst = LIMITS.rate_limit_per_second, LIMITS.rate_limit_burst
    now = time.monotonic()
    bucket = _buckets.get(caller)
    if bucket is None:
        if len(_buckets) >= _MAX_BUCKETS:
            _buckets.clear()
        bucket = _buckets[caller] = _Bucket(float(burst), now)
    bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
    bucket.stamp = now
    if bucket.tokens >= 1:
        bucket.tokens -= 1
        return 0.0
    return (1 - bucket.tokens) / rate


def refuse(scope: dict[str, Any]) -> ApiError | None:
    """The error a request gets before it is handled, or None when it may go on."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(
        scope.get("query_string", b"")
    )
    if target > LIMITS.url_bytes:
        return UriTooLong(f"The request URI is longer than the limit ({LIMITS.url_bytes} bytes).")
    header_bytes = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))
    if header_bytes > LIMITS.header_bytes:
        return HeadersTooLarge(
            f"The request's header fields are larger than the limit ({LIMITS.header_bytes} bytes)."
        )
    if LIMITS.rate_limit_per_second > 0:
        wait = _take(_caller(scope))
        if wait > 0:
            retry = max(1, math.ceil(wait))
            return TooManyRequests(
                f"Too many requests: retry after {retry} s.", headers={"Retry-After": str(retry)}
            )
    return None


@contextlib.asynccontextmanager
async def conversion_slot() -> AsyncIterator[None]:
    """Hold one of the [limits] conversions slots while a qemu-img conversion runs."""
    loop = asyncio.get_running_loop()
    semaphore = _conversions.get(loop)
    if semaphore is None:
        semaphore = _conversions[loop] = asyncio.Semaphore(LIMITS.conversions)
    async with semaphore:
        yield
