"""Assembling the compute services of one process: conductor, scheduler, compute agents
and the API service, on one message bus."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from starlette.types import ASGIApp

from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig, database_url
from cumulo.common.db import Database
from cumulo.common.identity_client import IdentityClient
from cumulo.common.notifications import Notifier
from cumulo.common.rpc import Transport, transport_for
from cumulo.common.rpc.memory import MemoryTransport
from cumulo.common.service_client import ServiceClient
from cumulo.compute import heartbeat, rpcapi
from cumulo.compute.bootstrap import bootstrap_compute
from cumulo.compute.conductor import ConductorManager, ConductorOptions
from cumulo.compute.image_cache import ImageCache
from cumulo.compute.image_signature import ImageSignatures, SignatureOptions
from cumulo.compute.manager import ComputeManager, HostOptions
from cumulo.compute.network import NetworkClient
from cumulo.compute.notifications import compute_notifier
from cumulo.compute.scheduler.manager import SchedulerManager
from cumulo.compute.service import ComputeService
from cumulo.compute.virt.driver import ComputeDriver, own_address
from cumulo.compute.virt.fake import FakeDriver
from cumulo.metadata.vendordata import VendorData

LOG = logging.getLogger(__name__)


def make_driver(config: CumuloConfig, host: str, state_dir: Path) -> ComputeDriver:
    c = config.compute
    driver = c.driver
    if driver == "auto":
        driver = "qemu" if shutil.which("qemu-system-x86_64") else "fake"
    console_listen = c.console_server_listen or c.migration_address or own_address()
    if driver == "qemu":
        from cumulo.compute.virt.qemu import QemuDriver

        return QemuDriver(
            state_dir,
            host,
            accel=config.compute.qemu_accel,
            migration_address=config.compute.migration_address,
            machine_type=config.compute.qemu_machine_type,
            spice_listen=config.compute.spice_server_listen,
            console_listen=console_listen,
        )
    return FakeDriver(host, spawn_delay=c.fake_spawn_delay, console_listen=console_listen)


def host_options(config: CumuloConfig) -> HostOptions:
    c = config.compute
    return HostOptions(
        availability_zone=c.availability_zone,
        report_interval=c.report_interval,
        cpu_allocation_ratio=c.cpu_allocation_ratio,
        ram_allocation_ratio=c.ram_allocation_ratio,
        disk_allocation_ratio=c.disk_allocation_ratio,
        reserved_host_memory_mb=c.reserved_host_memory_mb,
        reserved_host_disk_gb=c.reserved_host_disk_gb,
        force_config_drive=c.force_config_drive,
        shelved_offload_time=c.shelved_offload_time,
        vendor_data=VendorData.from_config(config),
        tpm_secret_security=tuple(c.supported_tpm_secret_security),
    )


async def _expire_builds_forever(conductor: ConductorManager) -> None:
    interval = min(60.0, conductor.options.build_timeout / 4)
    while True:
        await asyncio.sleep(interval)
        try:
            await conductor.expire_stuck_builds()
            await conductor.expire_stuck_moves()
        except Exception:  # noqa: BLE001 - try again next round
            LOG.exception("expiring stuck builds failed")


async def start_compute_hosts(
    config: CumuloConfig,
    state_dir: Path,
    bus: Transport,
    images: ServiceClient | None,
    network: NetworkClient | None,
    volumes: ServiceClient | None,
    notifier: Notifier,
    managers: list[ComputeManager],
    key_manager: ServiceClient | None = None,
) -> None:
    """This host's compute agent, and [compute] fake_hosts more of the fake driver (scale
    simulations), started; each is added to `managers` (the caller stops them, even
    when a later one fails to start). key_manager: where encrypted volumes' keys are read."""
    c = config.compute
    base = c.host or socket.gethostname()
    for host in [base] + [f"{base}-fake{i}" for i in range(1, c.fake_hosts + 1)]:
        driver = (
            make_driver(config, host, state_dir)
            if host == base
            else FakeDriver(host, spawn_delay=c.fake_spawn_delay)
        )
        signatures = ImageSignatures(key_manager, SignatureOptions.from_config(config))
        cache = ImageCache(state_dir / "compute" / host / "images", images, signatures)
        manager = ComputeManager(
            host,
            driver,
            bus,
            cache,
            network,
            host_options(config),
            volumes=volumes,
            key_manager=key_manager,
            service_token=network.service_token if network is not None else None,
        )
        manager.notifier = notifier
        managers.append(manager)
        await manager.start()


async def serve_conductor(
    config: CumuloConfig,
    db: Database,
    bus: Transport,
    host: str,
    *,
    fail_unscheduled: bool,
    network: NetworkClient | None = None,
) -> list[asyncio.Task]:
    """The conductor on the bus (topic `conductor`, shared by every conductor: the broker
    spreads the work), its heartbeat and its sweep of stuck builds; the tasks to cancel.
    fail_unscheduled: builds no scheduler took are failed at start (only when the bus
    is this process's memory, whose messages died with the last run). network: the
    Network API as the compute service (a live migration's port bindings)."""
    c = config.compute
    manager = ConductorManager(
        db,
        bus,
        ConductorOptions(
            max_attempts=c.max_attempts,
            build_timeout=c.build_timeout,
            allow_resize_to_same_host=c.allow_resize_to_same_host,
            migrate_max_retries=c.migrate_max_retries,
        ),
        network,
    )
    await bus.serve(rpcapi.CONDUCTOR, manager)
    if fail_unscheduled and isinstance(bus, MemoryTransport):
        await manager.fail_unscheduled_builds()
    return [
        asyncio.create_task(_expire_builds_forever(manager)),
        asyncio.create_task(
            heartbeat.report_forever(
                db, host, heartbeat.CONDUCTOR_BINARY, rpcapi.CONDUCTOR, c.report_interval
            )
        ),
    ]


async def serve_scheduler(
    config: CumuloConfig, db: Database, bus: Transport, host: str
) -> list[asyncio.Task]:
    """The scheduler on the bus (topic `scheduler`; claims are atomic in the database, so
    any number of schedulers may share it) and its heartbeat; the tasks to cancel."""
    c = config.compute
    await bus.serve(
        rpcapi.SCHEDULER,
        SchedulerManager(db, service_down_time=c.service_down_time, spread=c.spread),
    )
    return [
        asyncio.create_task(
            heartbeat.report_forever(
                db, host, heartbeat.SCHEDULER_BINARY, rpcapi.SCHEDULER, c.report_interval
            )
        )
    ]


@dataclass
class ComputeCell:
    config: CumuloConfig
    state_dir: Path
    bus: Transport
    db: Database
    service: ComputeService
    managers: list[ComputeManager] = field(default_factory=list)
    clients: list[ServiceClient] = field(default_factory=list)
    tasks: list[asyncio.Task] = field(default_factory=list)
    notifier: Notifier | None = None

    @classmethod
    async def open(
        cls,
        config: CumuloConfig,
        state_dir: Path,
        *,
        identity_app: ASGIApp,
        image_app: ASGIApp | None = None,
        network_app: ASGIApp | None = None,
        volume_app: ASGIApp | None = None,
        key_manager_app: ASGIApp | None = None,
        hosts: bool = True,
        conductor: bool = True,
        scheduler: bool = True,
    ) -> ComputeCell:
        """The compute services of this process, apps in-process: the API service always;
        hosts: the compute hosts (not for `cumulo init`); conductor, scheduler: serve their
        topics (`cumulo api` leaves them to `cumulo conductor` and `cumulo scheduler`).
        key_manager_app: the Key Manager, which encrypted volumes' keys are read from."""
        bus = transport_for(config)
        await bus.start()
        db = Database(database_url(config, state_dir, "compute"), "compute")
        await db.migrate()
        await bootstrap_compute(db)
        images = ServiceClient("image", app=image_app) if image_app is not None else None
        networks = ServiceClient("network", app=network_app) if network_app is not None else None
        volumes = ServiceClient("block-storage", app=volume_app) if volume_app is not None else None
        keys = (
            ServiceClient("key-manager", app=key_manager_app)
            if key_manager_app is not None
            else None
        )
        clients = [c for c in (images, networks, volumes, keys) if c is not None]
        c = config.compute
        base = c.host or socket.gethostname()
        tasks: list[asyncio.Task] = []
        validator = TokenValidator(
            IdentityClient(config, app=identity_app), config.identity.cache_time
        )
        network = NetworkClient(networks, validator.client.service_token) if networks else None
        if conductor:
            tasks += await serve_conductor(
                config, db, bus, base, fail_unscheduled=hosts, network=network
            )
        if scheduler:
            tasks += await serve_scheduler(config, db, bus, base)
        service = ComputeService(
            config, state_dir, db, bus, validator, images, networks, volumes, key_manager=keys
        )
        cell = cls(config, state_dir, bus, db, service, clients=clients, tasks=tasks)
        cell.notifier = compute_notifier(config, state_dir)
        if hosts:
            await start_compute_hosts(
                config,
                state_dir,
                bus,
                images,
                network,
                volumes,
                cell.notifier,
                cell.managers,
                key_manager=keys,
            )
            service.local_hosts = {manager.host for manager in cell.managers}
        return cell

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for manager in self.managers:
            await manager.stop()
        await self.bus.close()
        if self.notifier is not None:
            await self.notifier.close()
        for client in self.clients:
            await client.close()
        await self.service.validator.client.close()
        await self.db.dispose()
