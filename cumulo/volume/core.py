"""The Block Storage service: its database, policy, message bus, the scheduler and,
in the all-in-one process, the volume managers of this host's backends.

The API writes each row with its transitional status (creating, deleting,
extending, uploading...) in one transaction and hands the slow work over the bus to
the backend holding the volume (topic volume.<host>@<backend>); a new volume is
placed by the scheduler (cumulo.volume.scheduler) in the transaction that writes
it. The manager moves the row on with a compare-and-swap on the status it
expects. Nothing half-made is left: a failed create removes whatever the backend
wrote and leaves the volume `error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from pathlib import Path

from sqlalchemy import select
from starlette.types import ASGIApp

from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig, VolumeBackendConfig, VolumeConfig
from cumulo.common.context import RequestContext
from cumulo.common.db import Database
from cumulo.common.identity_client import IdentityClient
from cumulo.common.notifications import Notifier
from cumulo.common.policy import Policy
from cumulo.common.rpc import Transport, transport_for
from cumulo.common.service_client import ServiceClient
from cumulo.common.tls import verify_option
from cumulo.volume import rpcapi, states
from cumulo.volume.drivers.driver import VolumeDriver
from cumulo.volume.drivers.file import FileDriver
from cumulo.volume.drivers.tgt import IscsiExports
from cumulo.volume.manager import VolumeManager
from cumulo.volume.models import Attachment, Volume, VolumeType
from cumulo.volume.policies import VOLUME_RULES
from cumulo.volume.scheduler import SCHEDULER_BINARY, record_heartbeat

LOG = logging.getLogger(__name__)


def backend_configs(config: CumuloConfig) -> list[VolumeBackendConfig]:
    """This host's backends: [[volume.backends]], else the single backend the older
    settings describe (named after its driver, its files straight under <state>/volumes)."""
    v = config.volume
    if v.backends:
        names = [b.name for b in v.backends]
        if len(set(names)) != len(names):
            raise ValueError(f"[[volume.backends]] names must differ: {names}")
        return list(v.backends)
    return [
        VolumeBackendConfig(
            name=v.backend,
            driver=v.backend,
            volume_format=v.volume_format,
            capacity_gb=v.capacity_gb,
            directory="volumes",
        )
    ]


def backend_directory(backend: VolumeBackendConfig, state_dir: Path) -> Path:
    if not backend.directory:
        return state_dir / "volumes" / backend.name
    path = Path(backend.directory).expanduser()
    return path if path.is_absolute() else state_dir / path


def key_manager_client(config: CumuloConfig, app: ASGIApp | None = None) -> ServiceClient:
    """The Key Manager, where encrypted volumes' keys are (in-process when given)."""
    if app is not None:
        return ServiceClient("key-manager", app=app)
    return ServiceClient(
        "key-manager", url=config.public_url(config.ports.key_manager), verify=verify_option(config)
    )


def make_driver(
    backend: VolumeBackendConfig, state_dir: Path, host: str, volume: VolumeConfig
) -> VolumeDriver:
    if backend.driver == "file":
        directory = backend_directory(backend, state_dir)
        iscsi = None
        if (backend.target_protocol or volume.target_protocol) == "iscsi":
            iscsi = IscsiExports(
                directory / ".iscsi", volume.iscsi_address, volume.iscsi_port, volume.target_prefix
            )
        return FileDriver(
            directory,
            volume_format=backend.volume_format,
            capacity_gb=backend.capacity_gb,
            host=host,
            nbd_address=volume.nbd_address,
            iscsi=iscsi,
        )
    raise ValueError(f"unknown volume driver {backend.driver!r}")


async def start_backends(
    config: CumuloConfig,
    state_dir: Path,
    host: str,
    db: Database,
    images: ServiceClient | None,
    bus: Transport,
    key_manager_app: ASGIApp | None = None,
) -> list[VolumeManager]:
    """A volume manager per backend of this host, serving its topic and reporting;
    key_manager_app: the Key Manager in-process (else over HTTP)."""
    managers = []
    notifier = Notifier(config, state_dir, "volume")
    # Backups go to the Object Storage API over HTTP (in every deployment: the volume
    # service starts before the object store's app exists in the all-in-one process).
    objects = ServiceClient(
        "object-store",
        url=config.public_url(config.ports.object_store),
        verify=verify_option(config),
        timeout=300.0,
    )
    identity = IdentityClient(config)
    # Attached volumes move through Compute's swap volume (as Cinder's novaclient calls).
    compute = ServiceClient(
        "compute", url=config.public_url(config.ports.compute), verify=verify_option(config)
    )
    try:
        for backend in backend_configs(config):
            manager = VolumeManager(
                host,
                backend,
                make_driver(backend, state_dir, host, config.volume),
                db,
                images,
                state_dir / "volumes-tmp",
                availability_zone=config.volume.availability_zone,
                report_interval=config.volume.report_interval,
                objects=objects,
                identity=identity,
                compute=compute,
                key_manager=key_manager_client(config, key_manager_app),
            )
            manager.notifier = notifier
            await manager.start(bus)
            managers.append(manager)
    except BaseException:
        for manager in managers:
            await manager.stop()
        raise
    return managers


class VolumeService:
    def __init__(
        self,
        config: CumuloConfig,
        state_dir: Path,
        db: Database,
        validator: TokenValidator,
        images: ServiceClient | None,
        key_manager_app: ASGIApp | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.db = db
        self.validator = validator
        self.images = images
        # The Key Manager: the API makes and copies encrypted volumes' keys there with
        # each caller's token (the backends fetch them with it).
        self.key_manager_app = key_manager_app
        self.key_manager = key_manager_client(config, key_manager_app)
        self.host = config.volume.host or socket.gethostname()
        self.policy = Policy(VOLUME_RULES, state_dir / config.policy_file)
        self.bus = transport_for(config)
        self.volume_rpc = rpcapi.VolumeAPI(self.bus)
        self.managers: list[VolumeManager] = []
        self._tasks: list[asyncio.Task] = []
        self._compute: ServiceClient | None = None  # for the volume-extended event

    def is_admin(self, ctx: RequestContext) -> bool:
        return self.policy.check("cloud_admin", ctx)

    def sees_every_project(self, ctx: RequestContext) -> bool:
        """Admins, and services (Compute reads and attaches any server's volumes)."""
        return self.is_admin(ctx) or self.policy.check("volume:service_api", ctx)

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

    async def start(self) -> None:
        """The bus, the scheduler's heartbeat (it places volumes in this API process),
        and this host's backends unless [volume] run_backends is false."""
        await self.bus.start()
        await self._scheduler_heartbeat()
        self._tasks.append(asyncio.create_task(self._heartbeat_forever()))
        if self.config.volume.run_backends:
            self.managers = await start_backends(
                self.config,
                self.state_dir,
                self.host,
                self.db,
                self.images,
                self.bus,
                self.key_manager_app,
            )

    async def _scheduler_heartbeat(self) -> None:
        zone = self.config.volume.availability_zone
        await record_heartbeat(self.db, self.host, SCHEDULER_BINARY, zone)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.volume.report_interval)
            try:
                await self._scheduler_heartbeat()
            except Exception:  # noqa: BLE001 - try again next round
                LOG.exception("volume scheduler heartbeat failed")

    def volume_extended_later(self, volume_id: str, new_size: int) -> None:
        """Once the backend has grown an attached volume, tell Compute (Cinder's
        volume-extended external event), which lets the guests see the new size."""
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.create_task(self._notify_extended(volume_id, new_size)))

    async def _notify_extended(self, volume_id: str, new_size: int, timeout: float = 300) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        volume = None
        while asyncio.get_running_loop().time() < deadline:
            async with self.db.read() as session:
                volume = await session.get(Volume, volume_id)
            if volume is None or volume.status != states.EXTENDING:
                break
            await asyncio.sleep(0.2)
        if volume is None or volume.size != new_size or volume.status != states.IN_USE:
            return  # the extend failed or the volume went away: nothing to tell
        async with self.db.read() as session:
            servers = set(
                await session.scalars(
                    select(Attachment.instance_uuid).where(
                        Attachment.volume_id == volume_id,
                        Attachment.status == "attached",
                        Attachment.instance_uuid.is_not(None),
                    )
                )
            )
        if not servers:
            return
        events = [
            {"name": "volume-extended", "server_uuid": s, "tag": volume_id} for s in sorted(servers)
        ]
        await self._tell_compute(events, "2.51")

    def volume_reimaged_later(self, volume_id: str) -> None:
        """Once the backend has written the new image onto the volume (or failed to),
        tell Compute (Cinder's volume-reimaged external event, 2.93) for each server the
        volume is attached or reserved to."""
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.create_task(self._notify_reimaged(volume_id)))

    async def _notify_reimaged(self, volume_id: str, timeout: float = 3600) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        volume = None
        while asyncio.get_running_loop().time() < deadline:
            async with self.db.read() as session:
                volume = await session.get(Volume, volume_id)
            if volume is None or volume.status != states.DOWNLOADING:
                break
            await asyncio.sleep(0.2)
        if volume is None or volume.status == states.DOWNLOADING:
            return
        async with self.db.read() as session:
            servers = set(
                await session.scalars(
                    select(Attachment.instance_uuid).where(
                        Attachment.volume_id == volume_id,
                        Attachment.instance_uuid.is_not(None),
                    )
                )
            )
        status = "failed" if volume.status == states.ERROR else "completed"
        events = [
            {"name": "volume-reimaged", "server_uuid": s, "tag": volume_id, "status": status}
            for s in sorted(servers)
        ]
        await self._tell_compute(events, "2.93")

    async def _tell_compute(self, events: list[dict[str, str]], version: str) -> None:
        """POST the events to Compute's os-server-external-events with the service token."""
        if not events:
            return
        if self._compute is None:
            url = self.config.public_url(self.config.ports.compute)
            self._compute = ServiceClient("compute", url=url, verify=verify_option(self.config))
        try:
            token = await self.validator.client.service_token()
            await self._compute.request(
                "POST",
                "/v2.1/os-server-external-events",
                token,
                json={"events": events},
                headers={"OpenStack-API-Version": f"compute {version}"},
                ok=(200, 207, 404),
            )
        except Exception:  # noqa: BLE001 - the volume is done; Compute learns it otherwise
            LOG.exception("telling Compute about %s failed", [e["name"] for e in events])

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.close()
        for manager in self.managers:
            with contextlib.suppress(Exception):
                await manager.stop()
        if self.images is not None:
            await self.images.close()
        await self.key_manager.close()
        if self._compute is not None:
            await self._compute.close()
        await self.validator.client.close()
        await self.db.dispose()
