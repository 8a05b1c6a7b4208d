"""The Block Storage service: its database, backend, policy and the volume manager.

The API writes each row with its transitional status (creating, deleting,
extending, uploading...) in one transaction and hands the slow work to the
volume manager, which moves the row on with a compare-and-swap on the status it
expects. Nothing half-made is left: a failed create removes whatever the
backend wrote and leaves the volume `error`.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

from sqlalchemy import select

from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig
from cumulo.common.context import RequestContext
from cumulo.common.db import Database
from cumulo.common.policy import Policy
from cumulo.common.service_client import ServiceClient
from cumulo.volume.drivers.driver import VolumeDriver
from cumulo.volume.drivers.file import FileDriver
from cumulo.volume.manager import VolumeManager
from cumulo.volume.models import VolumeType
from cumulo.volume.policies import VOLUME_RULES


def make_driver(config: CumuloConfig, state_dir: Path, host: str) -> VolumeDriver:
    v = config.volume
    if v.backend == "file":
        return FileDriver(
            state_dir / "volumes",
            volume_format=v.volume_format,
            capacity_gb=v.capacity_gb,
            host=host,
            nbd_address=v.nbd_address,
        )
    raise ValueError(f"unknown volume backend {v.backend!r}")


class VolumeService:
    def __init__(
        self,
        config: CumuloConfig,
        state_dir: Path,
        db: Database,
        validator: TokenValidator,
        images: ServiceClient | None,
        driver: VolumeDriver | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.validator = validator
        self.images = images
        self.host = config.volume.host or socket.gethostname()
        self.driver = driver or make_driver(config, state_dir, self.host)
        self.policy = Policy(VOLUME_RULES, state_dir / config.policy_file)
        self.manager = VolumeManager(db, self.driver, images, state_dir / "volumes-tmp")

    @property
    def backend_host(self) -> str:
        """os-vol-host-attr:host of this backend's volumes: host@backend#pool."""
        return f"{self.host}@{self.driver.name}#{self.driver.name}"

    def is_admin(self, ctx: RequestContext) -> bool:
        return self.policy.check("cloud_admin", ctx)

    async def bootstrap(self) -> None:
        """The default volume type exists (Cinder's __DEFAULT__)."""
        name = self.config.volume.default_volume_type
        async with self.db.write() as session:
            if await session.scalar(select(VolumeType).where(VolumeType.name == name)) is None:
                session.add(
                    VolumeType(
                        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"cumulo:volume-type:{name}")),
                        name=name,
                        description="Default Volume Type",
                        is_public=True,
                    )
                )

    async def close(self) -> None:
        await self.manager.close()
        await self.driver.close()
        if self.images is not None:
            await self.images.close()
        await self.validator.client.close()
        await self.db.dispose()
