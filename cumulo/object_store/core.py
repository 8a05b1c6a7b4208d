"""The Object Storage service of one cloud: rings, policies, the storage node of this
host's devices, and the proxy in front of them."""

from __future__ import annotations

import time
from pathlib import Path

from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig, ObjectStoreConfig
from cumulo.object_store.policies import StoragePolicies
from cumulo.object_store.proxy import Proxy
from cumulo.object_store.ring import Ring
from cumulo.object_store.ring.setup import devices_dir, ensure_default_rings, rings_dir
from cumulo.object_store.storage import backend_auth
from cumulo.object_store.storage.node import StorageNode
from cumulo.object_store.storage.remote import NodeRouter


class ObjectStore:
    def __init__(
        self,
        config: CumuloConfig,
        state_dir: Path,
        validator: TokenValidator | None,
        *,
        devices: Path | None = None,
        local_addresses: set[str] | None = None,
    ) -> None:
        """devices: this host's device directories (default: the config's); local_addresses:
        the `ip:port`s the ring names for them (default: the proxy's own port), other
        devices are other hosts' `cumulo object-server`s."""
        self.cloud_config = config
        self.config: ObjectStoreConfig = config.object_store
        self.state_dir = state_dir
        self.validator = validator
        osc = self.config
        if devices is None:  # the proxy host: its rings are made here
            ensure_default_rings(config, state_dir)
        # The cloud's backend key (`cumulo init` made it): BackendKeyError without.
        self.backend_keys = backend_auth.BackendKeys.load(osc.backend_secret, state_dir)
        rings = rings_dir(config, state_dir)
        prefix, suffix = osc.hash_path_prefix, osc.hash_path_suffix
        self.account_ring = Ring(rings / "account.ring.json", prefix, suffix)
        self.container_ring = Ring(rings / "container.ring.json", prefix, suffix)
        self.policies = StoragePolicies(osc.policies, rings, prefix, suffix)
        self.node = StorageNode(devices or devices_dir(config, state_dir), prefix, suffix)
        self.node.backend_keys, self.node.rings = self.backend_keys, rings
        if local_addresses is None:  # the proxy's own port, and its storage port
            hosts = {config.catalog_host, "127.0.0.1", "localhost", "::1"}
            ports = {config.ports.object_store, osc.storage_port} - {0}
            local_addresses = {f"{host}:{port}" for host in hosts for port in ports}
        self.router = NodeRouter(self.node, local_addresses, self.backend_keys)
        self.proxy = Proxy(
            self.node, self.account_ring, self.container_ring, self.policies, self.router
        )

    def start_daemons(self, names: tuple[str, ...] | None = None) -> None:
        from cumulo.object_store.daemons.runner import DAEMONS, StorageDaemons

        self.daemons = StorageDaemons(self, names or DAEMONS)
        self.daemons.start()

    async def close(self) -> None:
        daemons = getattr(self, "daemons", None)
        if daemons is not None:
            await daemons.stop()
        self.proxy.close()

    def account_of(self, project_id: str) -> str:
        return f"{self.config.reseller_prefix}{project_id}"


def transaction_id(request_id: str) -> str:
    """Swift's transaction id of a request: tx<21 hex digits>-<10 hex digits of the time>
    (the form clients and Tempest check), made from the request id its log lines carry
    (S3's x-amz-request-id has the same form)."""
    digits = request_id.removeprefix("req-").replace("-", "")[:21]
    return f"tx{digits}-{int(time.time()):010x}"
