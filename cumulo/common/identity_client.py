"""The one service-to-service client of the Identity API.

Every non-identity service authenticates as the service user (`cumulo` in the
`service` project), keeps that token fresh, and validates its callers' tokens
with `GET /v3/auth/tokens`. In the all-in-one process the same requests go to
the identity ASGI app in-process (httpx's ASGI transport); elsewhere over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from datetime import datetime
from typing import Any

import httpx
from starlette.types import ASGIApp

from cumulo.common import tls
from cumulo.common.config import CumuloConfig
from cumulo.common.faults import ServiceUnavailable, Unauthorized
from cumulo.common.service_client import CALL_HOOKS

SERVICE_USER = "cumulo"
SERVICE_PROJECT = "service"
# Renew the service token this long before it expires (seconds).
_RENEW_MARGIN = 120


class IdentityClient:
    def __init__(
        self,
        config: CumuloConfig,
        *,
        app: ASGIApp | None = None,
        url: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.config = config
        if app is not None:
            transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=app)
            base_url = "http://identity.internal"
        else:
            transport = httpx.AsyncHTTPTransport(retries=2, verify=tls.verify_option(config))
            base_url = url or config.public_url(config.ports.identity)
        self._http = httpx.AsyncClient(
            transport=transport,
            base_url=base_url,
            timeout=timeout,
            event_hooks={"request": CALL_HOOKS},  # validations join the trace and request
        )
        self._token: str | None = None
        self._token_deadline = 0.0
        self._lock = asyncio.Lock()
        self.service_project_id: str | None = None  # known once the service user signed in

    async def close(self) -> None:
        await self._http.aclose()

    async def service_token(self, *, renew: bool = False) -> str:
        """The service user's token, issued again when close to expiry (or asked to)."""
        async with self._lock:
            if renew or self._token is None or time.monotonic() >= self._token_deadline:
                self._token, lifetime = await self._authenticate()
                self._token_deadline = time.monotonic() + max(lifetime - _RENEW_MARGIN, 1)
            return self._token

    async def _authenticate(self) -> tuple[str, float]:
        body = password_auth(SERVICE_USER, self.config.identity.service_password, SERVICE_PROJECT)
        r = await self._request("POST", "/v3/auth/tokens?nocatalog", json=body)
        if r.status_code != 201:
            raise ServiceUnavailable(f"The service user cannot authenticate ({r.status_code}).")
        token = r.json()["token"]
        self.service_project_id = token.get("project", {}).get("id")
        expires = datetime.fromisoformat(token["expires_at"].replace("Z", "+00:00"))
        return r.headers["X-Subject-Token"], expires.timestamp() - time.time()

    async def validate_token(self, token: str) -> dict[str, Any]:
        """The Identity v3 token body of a user's token; 401 when it is not valid."""
        for attempt in (1, 2):
            headers = {"X-Auth-Token": await self.service_token(renew=attempt == 2)}
            headers["X-Subject-Token"] = token
            r = await self._request("GET", "/v3/auth/tokens?nocatalog", headers=headers)
            if r.status_code == 200:
                return r.json()["token"]
            if r.status_code == 404:
                raise Unauthorized("The request you have made requires authentication.")
            if r.status_code != 401:
                break
            # 401: our own service token was refused (revoked, keys rotated); renew once.
        raise ServiceUnavailable(f"Identity could not validate a token ({r.status_code}).")

    async def catalog(self, token: str) -> list[dict[str, Any]]:
        """The service catalog a user's token sees (`GET /v3/auth/catalog`)."""
        r = await self._request("GET", "/v3/auth/catalog", headers={"X-Auth-Token": token})
        if r.status_code == 401:
            raise Unauthorized("The request you have made requires authentication.")
        if r.status_code != 200:
            raise ServiceUnavailable(f"Identity could not list the catalog ({r.status_code}).")
        return r.json()["catalog"]

    async def ec2_credential(self, access: str) -> dict[str, Any] | None:
        """An EC2 credential by its access key (its id is the key's SHA-256), read with the
        service token: what S3 needs to check signatures itself (Swift's s3token secret
        cache); None when there is none."""
        cred_id = hashlib.sha256(access.encode()).hexdigest()
        r = await self._as_service("GET", f"/v3/credentials/{cred_id}")
        if r.status_code == 200:
            return r.json()["credential"]
        if r.status_code == 404:
            return None
        raise ServiceUnavailable(f"Identity could not read an EC2 credential ({r.status_code}).")

    async def users_by_email(self, email: str) -> list[dict[str, Any]]:
        """The enabled users whose `email` attribute (an extra, as Keystone keeps it) is
        this address, case aside: every page of `GET /v3/users` read with the service
        token (Keystone filters no extras). S3's email grantees resolve by it."""
        wanted = email.casefold()
        found: list[dict[str, Any]] = []
        params = {"enabled": "true"}
        while True:
            r = await self._as_service("GET", "/v3/users", params=params)
            if r.status_code != 200:
                raise ServiceUnavailable(f"Identity could not list users ({r.status_code}).")
            body = r.json()
            users = body["users"]
            found += [u for u in users if str(u.get("email") or "").casefold() == wanted]
            if not body.get("truncated") or not users:
                return found
            params["marker"] = users[-1]["id"]

    async def _as_service(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request with the service token, made again with a new one if it was refused
        (revoked, keys rotated)."""
        for attempt in (1, 2):
            headers = {"X-Auth-Token": await self.service_token(renew=attempt == 2)}
            r = await self._request(method, path, headers=headers, **kwargs)
            if r.status_code != 401:
                break
        return r

    async def s3_token(self, access: str, string_to_sign: str, signature: str) -> str | None:
        """A project token for a signed S3 request (`POST /v3/s3tokens`); None when
        Identity refuses the signature."""
        body = {
            "credentials": {
                "access": access,
                "token": base64.b64encode(string_to_sign.encode()).decode(),
                "signature": signature,
            }
        }
        return await self._signed_token("/v3/s3tokens", body)

    async def ec2_token(self, credentials: dict[str, Any]) -> str | None:
        """A project token for a signed EC2 Query API request (`POST /v3/ec2tokens`): the
        request taken apart (access, signature, host, verb, path, params, headers,
        body_hash); None when Identity refuses the signature."""
        return await self._signed_token("/v3/ec2tokens", {"credentials": credentials})

    async def _signed_token(self, path: str, body: dict[str, Any]) -> str | None:
        r = await self._request("POST", path, json=body)
        if r.status_code in (200, 201):
            return r.headers["X-Subject-Token"]
        if r.status_code in (401, 403, 404):
            return None
        raise ServiceUnavailable(f"Identity could not check an AWS signature ({r.status_code}).")

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"The Identity service is unreachable: {exc}") from None


def password_auth(user: str, password: str, project: str) -> dict[str, Any]:
    """The body of a password sign-in of a Default-domain user, scoped to a project."""
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": "Default"}, "password": password}
                },
            },
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}},
        }
    }
