"""The Object Storage service of one cloud: rings, policies, the storage node of this
host's devices, and the proxy in front of them."""

from __future__ import annotations

from pathlib import Path

from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig, ObjectStoreConfig
from cumulo.object_store.policies import StoragePolicies
from cumulo.object_store.proxy import Proxy
from cumulo.object_store.ring import Ring
from cumulo.object_store.ring.setup import devices_dir, ensure_default_rings, rings_dir
from cumulo.object_store.storage.node import StorageNode


class ObjectStore:
    def __init__(
        self, config: CumuloConfig, state_dir: Path, validator: TokenValidator | None
    ) -> None:
        self.cloud_config = config
        self.config: ObjectStoreConfig = config.object_store
        self.state_dir = state_dir
        self.validator = validator
        osc = self.config
        ensure_default_rings(config, state_dir)
        rings = rings_dir(config, state_dir)
        prefix, suffix = osc.hash_path_prefix, osc.hash_path_suffix
        self.account_ring = Ring(rings / "account.ring.json", prefix, suffix)
        self.container_ring = Ring(rings / "container.ring.json", prefix, suffix)
        self.policies = StoragePolicies(osc.policies, rings, prefix, suffix)
        self.node = StorageNode(devices_dir(config, state_dir), prefix, suffix)
        self.proxy = Proxy(self.node, self.account_ring, self.container_ring, self.policies)

    def start_daemons(self) -> None:
        from cumulo.object_store.daemons.runner import StorageDaemons

        self.daemons = StorageDaemons(self)
        self.daemons.start()

    async def close(self) -> None:
        daemons = getattr(self, "daemons", None)
        if daemons is not None:
            await daemons.stop()
        self.proxy.close()

    def account_of(self, project_id: str) -> str:
        return f"{self.config.reseller_prefix}{project_id}"
