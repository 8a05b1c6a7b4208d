"""The APIs of a cloud the dashboard reaches over HTTP (`cumulo dashboard`): Identity at
the URL it is given, the others at the public endpoints of the catalog that the first
login's token carries (or, for a session made before a restart, its token's catalog)."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

from cumulo.common.service_client import ServiceClient, ServiceError
from cumulo.dashboard.apis import ApiFailure, Apis

# The dashboard's name of each API, and the catalog types that name it.
CATALOG_TYPES = {
    "compute": ("compute",),
    "image": ("image",),
    "network": ("network",),
    "volume": ("block-storage", "volumev3", "block_storage"),
    "object-store": ("object-store",),
}


def root_url(url: str) -> str:
    """scheme://host:port of an endpoint: the pages ask for full paths (/v2.1/servers)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class CatalogApis(Apis):
    """The APIs over HTTP: Identity at a known URL, the others found in the catalog."""

    def __init__(
        self,
        identity_url: str,
        *,
        verify: ssl.SSLContext | bool = True,
        interface: str = "public",
        region: str | None = None,
    ) -> None:
        identity = ServiceClient("identity", url=root_url(identity_url), verify=verify)
        super().__init__({"identity": identity})
        self.verify, self.interface, self.region = verify, interface, region

    def _endpoint(self, catalog: list[dict[str, Any]], types: tuple[str, ...]) -> str | None:
        for service in catalog:
            if service.get("type") not in types:
                continue
            for endpoint in service.get("endpoints", []):
                if endpoint.get("interface") != self.interface:
                    continue
                if self.region and endpoint.get("region_id", endpoint.get("region")) != self.region:
                    continue
                return endpoint["url"]
        return None

    async def ensure_clients(self, token: str) -> None:
        """A session made before this process started (its sessions are in the
        database): the catalog from its token, once."""
        if all(name in self.clients for name in CATALOG_TYPES):
            return
        try:
            answer = await self.clients["identity"].request("GET", "/v3/auth/catalog", token)
        except ServiceError as exc:  # 401: the token was revoked meanwhile
            raise ApiFailure("identity", exc.status, exc.body[:300]) from None
        self.learn_catalog(answer.json().get("catalog", []))

    def learn_catalog(self, catalog: list[dict[str, Any]]) -> None:
        """Clients for the APIs the catalog names (once: the endpoints are the cloud's,
        the same for every user)."""
        for name, types in CATALOG_TYPES.items():
            if name in self.clients:
                continue
            url = self._endpoint(catalog, types)
            if url is None:
                raise ApiFailure(
                    "identity",
                    503,
                    f"The service catalog has no {self.interface} {types[0]} endpoint: "
                    "the dashboard needs one.",
                )
            self.clients[name] = ServiceClient(name, url=root_url(url), verify=self.verify)
