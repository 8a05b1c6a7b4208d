"""Token validation for the non-identity services.

`TokenValidator` asks Identity (through the identity client) and keeps each
answer for `identity.cache_time` seconds. In the all-in-one process it listens
to Identity's invalidations, so a revoked token is refused everywhere at once.
Handlers call `request_context(request)`; a missing or invalid token raises 401,
rendered in the service's own error dialect by the app factory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from starlette.requests import Request

from cumulo.common import access_rules
from cumulo.common.app import request_id
from cumulo.common.context import RequestContext
from cumulo.common.faults import Unauthorized
from cumulo.common.identity_client import IdentityClient

_CACHE_MAX = 50_000


@dataclass(slots=True)
class _Entry:
    deadline: float
    body: dict
    expires: float  # the token's expires_at (a Unix time)


class ContextSource(Protocol):
    async def context(self, token: str, req_id: str = "-") -> RequestContext: ...


class TokenValidator:
    def __init__(self, client: IdentityClient, cache_time: float) -> None:
        self.client = client
        self.cache_time = cache_time
        self._cache: dict[str, _Entry] = {}

    def clear(self) -> None:
        self._cache.clear()

    async def context(self, token: str, req_id: str = "-") -> RequestContext:
        entry = self._cache.get(token)
        now = time.monotonic()
        if entry is None or entry.deadline <= now:
            body = await self.client.validate_token(token)
            if len(self._cache) > _CACHE_MAX:
                self._cache.clear()
            entry = _Entry(now + self.cache_time, body, _expiry(body))
            self._cache[token] = entry
        if entry.expires <= time.time():
            self._cache.pop(token, None)
            raise Unauthorized("The token has expired.")
        return RequestContext.from_token(token, entry.body, req_id)


def _expiry(body: dict) -> float:
    return datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).timestamp()


async def request_context(request: Request) -> RequestContext:
    """The caller of this request, from X-Auth-Token (validated once per request)."""
    cached = request.scope.get("cumulo.context")
    if cached is not None:
        return cached
    token = request.headers.get("x-auth-token")
    if not token:
        raise Unauthorized()
    # Identity validates in-process; other services use a TokenValidator.
    validator: ContextSource = request.app.state.token_validator
    ctx = await validator.context(token, request_id(request))
    if ctx.access_rules and not access_rules.allows(
        ctx.access_rules, request.app.state.service, request.method, request.url.path
    ):
        # keystonemiddleware answers a token used beyond its access rules with 401.
        raise Unauthorized("The application credential's access rules do not allow this request.")
    request.scope["cumulo.context"] = ctx
    return ctx
