"""The EC2 service: its database of ids and tags, the clients of the OpenStack APIs it
calls, and the context of one request (the caller's token and project)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cumulo.common.aws_credentials import CredentialCache
from cumulo.common.config import CumuloConfig
from cumulo.common.db import Database
from cumulo.common.identity_client import IdentityClient
from cumulo.common.service_client import ServiceClient, ServiceError
from cumulo.ec2.errors import Ec2Error
from cumulo.ec2.ids import IdMap

LOG = logging.getLogger(__name__)

COMPUTE_VERSION = "2.79"  # the Compute microversion the EC2 API speaks


class Ec2Service:
    def __init__(
        self,
        config: CumuloConfig,
        state_dir: Path,
        db: Database,
        identity: IdentityClient,
        clients: dict[str, ServiceClient],
    ) -> None:
        self.config, self.state_dir, self.db = config, state_dir, db
        self.identity = identity
        self.clients = clients  # compute, image, network, volume, object-store
        self.ids = IdMap(db)
        self.credentials = CredentialCache()
        self.tasks: set = set()  # background work (imports, resize confirms) kept alive
        # Lookups that change rarely (flavors, a project's security group names), kept a
        # few seconds: what a burst of RunInstances would otherwise ask for every time.
        self.recent: dict[tuple, tuple[float, Any]] = {}

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for client in self.clients.values():
            await client.close()
        await self.identity.close()
        await self.db.dispose()


def openstack_message(err: ServiceError) -> str:
    """The message of an OpenStack error body ({"badRequest": {"message": ...}},
    {"NeutronError": {...}}, {"error": {...}}, or text)."""
    try:
        body = json.loads(err.body)
    except ValueError:
        return err.body.strip()[:500] or f"{err.service} answered {err.status}"
    if isinstance(body, dict):
        for value in body.values():
            if isinstance(value, dict) and value.get("message"):
                return str(value["message"])
        if body.get("message"):
            return str(body["message"])
    return str(body)[:500]


def as_ec2_error(err: ServiceError, **codes: str) -> Ec2Error:
    """An OpenStack error as the EC2 error a client expects; `codes` by status name
    (not_found, conflict, quota, bad_request) name the operation's own codes."""
    message = openstack_message(err)
    if err.status == 404 and "not_found" in codes:
        return Ec2Error(codes["not_found"], message)
    if err.status == 409 and "conflict" in codes:
        return Ec2Error(codes["conflict"], message)
    if err.status == 413 or (err.status == 403 and "quota" in message.lower()):
        return Ec2Error(codes.get("quota", "ResourceLimitExceeded"), message)
    if err.status == 400:
        return Ec2Error(codes.get("bad_request", "InvalidParameterValue"), message)
    if err.status == 401:
        return Ec2Error("AuthFailure", message)
    if err.status == 403:
        return Ec2Error("UnauthorizedOperation", message)
    if err.status == 404:
        return Ec2Error("InvalidParameterValue", message)
    if err.status == 409:
        return Ec2Error("IncorrectState", message)
    if err.status == 503:
        return Ec2Error("Unavailable", message)
    LOG.error("%s answered %s: %s", err.service, err.status, err.body[:500])
    return Ec2Error("InternalError", "An internal error has occurred")


@dataclass
class Ctx:
    """One EC2 request: the service, the caller's token and project, the request id."""

    service: Ec2Service
    token: str
    project_id: str
    user_id: str
    request_id: str
    cache: dict[str, Any] = field(default_factory=dict)  # lookups shared by one request

    @property
    def ids(self) -> IdMap:
        return self.service.ids

    async def recent(self, key: tuple, load, ttl: float = 10.0, fresh: bool = False) -> Any:
        """`await load()`, reused for `ttl` seconds across requests (`fresh`: load again)."""
        now = time.monotonic()
        kept = self.service.recent.get(key)
        if kept is not None and kept[0] > now and not fresh:
            return kept[1]
        value = await load()
        if len(self.service.recent) > 10000:
            self.service.recent.clear()
        self.service.recent[key] = (now + ttl, value)
        return value

    async def call(
        self, service: str, method: str, path: str, *, errors: dict | None = None, **kwargs: Any
    ) -> Any:
        """JSON of an OpenStack API call with the caller's token; its errors as EC2's."""
        headers = kwargs.pop("headers", {})
        headers["X-Openstack-Request-Id"] = self.request_id
        if service == "compute":
            path = "/v2.1" + path
            headers.setdefault("X-OpenStack-Nova-API-Version", COMPUTE_VERSION)
        if service == "volume":
            path = f"/v3/{self.project_id}{path}"
            headers.setdefault("OpenStack-API-Version", "volume 3.60")
        client = self.service.clients[service]
        try:
            return await client.json(method, path, self.token, headers=headers, **kwargs)
        except ServiceError as err:
            raise as_ec2_error(err, **(errors or {})) from None

    async def compute(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.call("compute", method, path, **kwargs)

    async def image(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.call("image", method, path, **kwargs)

    async def network(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.call("network", method, path, **kwargs)

    async def volume(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.call("volume", method, path, **kwargs)
