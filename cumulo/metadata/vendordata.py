"""Vendor data: what the cloud's operator gives every guest, beside the user's own data.

Nova's two providers (`[api] vendordata_providers`; here `[metadata]`):

- StaticJSON: the JSON file `vendordata_jsonfile_path`, served as `vendor_data.json` and
  as the `static` entry of `vendor_data2.json`. A file that cannot be read or parsed is
  logged and served as `{}`.
- DynamicJSON: each `vendordata_dynamic_targets` entry `name@url` is POSTed the
  instance's details (Nova's body: project-id, instance-id, image-id, user-data,
  hostname, metadata, boot-roles); its JSON answer becomes the `name` entry of
  `vendor_data2.json`. A target that does not answer within the connect/read timeouts,
  answers an error status or something that is not JSON is logged and gives `{}`,
  unless `vendordata_dynamic_failure_fatal`. With `vendordata_dynamic_auth_*` set
  (Nova's `[vendordata_dynamic_auth]`), each request carries a Keystone token of that
  user (`X-Auth-Token`), kept until shortly before it expires; a failed authentication
  counts as that target's failure.

cloud-init reads the `cloud-init` key of either document as vendor cloud-config.
The config drive (at spawn, by the compute host) and the metadata service (when a guest
asks for a vendor data file) collect the same documents through `VendorData.collect`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from cumulo.common import tls
from cumulo.common.config import CumuloConfig
from cumulo.metadata.content import InstanceMetadata

LOG = logging.getLogger(__name__)

STATIC = "StaticJSON"
DYNAMIC = "DynamicJSON"
PROVIDERS = (STATIC, DYNAMIC)
# Vendor data files; asking for one of them is what makes the metadata service collect.
FILES = ("vendor_data.json", "vendor_data2.json")


class VendorDataError(Exception):
    """A dynamic target failed and `vendordata_dynamic_failure_fatal` is set."""


# Get a new token this long before the one kept expires (seconds).
_RENEW_MARGIN = 60


@dataclass(frozen=True)
class TargetAuth:
    """The Keystone user the dynamic targets are called as (password auth, project
    scope), and the token kept for it."""

    auth_url: str
    username: str
    password: str
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    verify: ssl.SSLContext | bool = True
    _kept: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    async def token(self, timeout: httpx.Timeout) -> str:
        kept = self._kept.get("token")
        if kept and kept[1] - _RENEW_MARGIN > time.time():
            return kept[0]
        url = self.auth_url.rstrip("/")
        url = url if url.endswith("/v3") else f"{url}/v3"
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.username, "domain": {"name": self.user_domain_name},
                "password": self.password,
            }}},
            "scope": {"project": {"name": self.project_name,
                                  "domain": {"name": self.project_domain_name}}},
        }}  # fmt: skip
        async with httpx.AsyncClient(timeout=timeout, verify=self.verify) as client:
            answer = await client.post(f"{url}/auth/tokens", json=body)
        answer.raise_for_status()
        token = answer.headers["X-Subject-Token"]
        expires = datetime.fromisoformat(
            answer.json()["token"]["expires_at"].replace("Z", "+00:00")
        )
        self._kept["token"] = (token, expires.timestamp())
        return token


@dataclass(frozen=True)
class VendorData:
    providers: tuple[str, ...] = (STATIC,)
    jsonfile_path: str = ""
    dynamic_targets: tuple[str, ...] = ()
    connect_timeout: float = 5.0
    read_timeout: float = 5.0
    ssl_certfile: str = ""
    failure_fatal: bool = False
    auth: TargetAuth | None = None

    @classmethod
    def from_config(cls, cloud: CumuloConfig) -> VendorData:
        config = cloud.metadata
        auth = None
        if config.vendordata_dynamic_auth_username:
            auth = TargetAuth(
                auth_url=config.vendordata_dynamic_auth_url
                or cloud.public_url(cloud.ports.identity),
                username=config.vendordata_dynamic_auth_username,
                password=config.vendordata_dynamic_auth_password,
                project_name=config.vendordata_dynamic_auth_project_name,
                user_domain_name=config.vendordata_dynamic_auth_user_domain_name,
                project_domain_name=config.vendordata_dynamic_auth_project_domain_name,
                verify=tls.verify_option(cloud),
            )
        return cls(
            providers=tuple(config.vendordata_providers),
            jsonfile_path=config.vendordata_jsonfile_path,
            dynamic_targets=tuple(config.vendordata_dynamic_targets),
            connect_timeout=config.vendordata_dynamic_connect_timeout,
            read_timeout=config.vendordata_dynamic_read_timeout,
            ssl_certfile=config.vendordata_dynamic_ssl_certfile,
            failure_fatal=config.vendordata_dynamic_failure_fatal,
            auth=auth,
        )

    async def collect(self, inst: InstanceMetadata) -> InstanceMetadata:
        """`inst` with its vendor data: vendor_data.json (StaticJSON only) and the
        vendor_data2.json entries of every provider, in the configured order."""
        static: dict[str, Any] | None = None
        documents: dict[str, Any] = {}
        for provider in self.providers:
            if provider == STATIC:
                static = self.static_document()
                documents["static"] = static
            elif provider == DYNAMIC:
                for name, document in (await self.dynamic_documents(inst)).items():
                    if name in documents:  # Nova drops a name another provider holds
                        LOG.warning("vendordata: removing duplicate key %s", name)
                        continue
                    documents[name] = document
            else:
                LOG.warning("vendordata: unknown provider %s ignored", provider)
        return dataclasses.replace(inst, static_vendor_data=static, vendor_data=documents)

    def listed(self, inst: InstanceMetadata) -> InstanceMetadata:
        """`inst` for the documents that are not vendor data (nothing collected): the
        file listings name vendor_data.json only where StaticJSON serves it."""
        return (
            inst if STATIC in self.providers else dataclasses.replace(inst, static_vendor_data=None)
        )

    def static_document(self) -> dict[str, Any]:
        if not self.jsonfile_path:
            return {}
        try:
            document = json.loads(Path(self.jsonfile_path).read_text())
        except (OSError, ValueError) as exc:
            LOG.warning("vendordata: cannot read %s: %s", self.jsonfile_path, exc)
            return {}
        if not isinstance(document, dict):
            LOG.warning("vendordata: %s does not hold a JSON object", self.jsonfile_path)
            return {}
        return document

    async def dynamic_documents(self, inst: InstanceMetadata) -> dict[str, Any]:
        documents: dict[str, Any] = {}
        targets = []
        for target in self.dynamic_targets:
            name, at, url = target.partition("@")
            if not at or not name:
                LOG.warning("vendordata: target %s lacks a name, skipped", target)
            elif name in documents or name in (t[0] for t in targets):
                LOG.warning("vendordata: a target named %s is already there, skipped", name)
            else:
                targets.append((name, url))
        if not targets:
            return documents
        timeout = httpx.Timeout(self.read_timeout, connect=self.connect_timeout)
        verify: bool | str = self.ssl_certfile or True
        async with httpx.AsyncClient(timeout=timeout, verify=verify) as client:
            for name, url in targets:
                documents[name] = await self._ask(client, name, url, request_body(inst))
        return documents

    async def _ask(self, client: httpx.AsyncClient, name: str, url: str, body: dict) -> Any:
        headers = {"Accept": "application/json", "User-Agent": "openstack-nova-vendordata"}
        try:
            if self.auth is not None:
                headers["X-Auth-Token"] = await self.auth.token(client.timeout)
            answer = await client.post(url, json=body, headers=headers)
            answer.raise_for_status()
            return json.loads(answer.text) if answer.text else {}
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            LOG.warning(
                "vendordata: error from dynamic target %s at %s for instance %s: %s",
                name,
                url,
                body["instance-id"],
                str(exc) or type(exc).__name__,
            )
            if self.failure_fatal:
                raise VendorDataError(f"dynamic vendordata target {name} failed: {exc}") from exc
            return {}


def request_body(inst: InstanceMetadata) -> dict[str, Any]:
    """What Nova's DynamicJSON provider POSTs about the instance."""
    user_data = base64.b64encode(inst.user_data).decode() if inst.user_data is not None else None
    return {
        "project-id": inst.project_id,
        "instance-id": inst.uuid,
        "image-id": inst.image_id,
        "user-data": user_data,
        "hostname": inst.hostname,
        "metadata": dict(inst.metadata),
        "boot-roles": inst.boot_roles,
    }
