"""The compute manager: what runs on each hypervisor host, behind topic compute.<host>.

A build walks the task states networking -> block_device_mapping -> spawning, each
an instance action event; every instance change goes through the conductor (this
process never opens the database). A failed build is undone here (guest, ports)
and handed back to the conductor, which retries on another host or fails it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cumulo.common.db import utcnow
from cumulo.common.locks import keyed_lock
from cumulo.common.notifications import Notifier
from cumulo.common.rpc import Endpoint, RemoteError, Transport
from cumulo.common.service_client import ServiceClient, ServiceError, file_chunks, url_path
from cumulo.compute import personality, rpcapi, vtpm
from cumulo.compute.block_device import StatusWaitFailed, wait_for_status
from cumulo.compute.conductor import InstanceNotFound, UnexpectedTaskState
from cumulo.compute.device_metadata import build_device_metadata
from cumulo.compute.image_cache import ImageCache
from cumulo.compute.image_signature import ImageSignatureFailed, trusted_certs_of
from cumulo.compute.manager_moves import HostMoves
from cumulo.compute.manager_swap import VolumeSwap
from cumulo.compute.manager_vtpm import HostVTPM
from cumulo.compute.network import NetworkClient, vifs_from_info
from cumulo.compute.notifications import notify_instance
from cumulo.compute.states import PowerState, TaskState, VmState
from cumulo.compute.virt.driver import (
    MACHINE_TYPE_KEY,
    RESCUE_BFV_TRAIT,
    BlockDevice,
    ComputeDriver,
    DriverError,
    FlavorSpec,
    GuestNotFound,
    GuestSpec,
    ImageSpec,
    VirtualTPM,
    host_uptime,
)
from cumulo.compute.volume_encryption import with_encryption
from cumulo.metadata import InstanceMetadata, config_drive_files
from cumulo.metadata.vendordata import VendorData

LOG = logging.getLogger(__name__)

# The Block Storage microversion the attachment calls are written for.
VOLUME_API = {"OpenStack-API-Version": "volume 3.44"}


def instance_metadata(
    inst: dict[str, Any], network_info: list[dict[str, Any]], admin_pass: str | None = None
) -> InstanceMetadata:
    """What the config drive (and the metadata service) tell a guest about itself."""
    user_data = None
    if inst.get("user_data"):
        user_data = base64.b64decode(inst["user_data"])
    keys = {inst["key_name"]: inst["key_data"]} if inst.get("key_name") else {}
    return InstanceMetadata(
        uuid=inst["uuid"],
        name=inst["name"],
        hostname=inst["hostname"],
        project_id=inst["project_id"],
        availability_zone=inst.get("availability_zone") or "nova",
        public_keys=keys,
        user_data=user_data,
        launch_index=inst.get("launch_index", 0),
        network_info=tuple(network_info),
        metadata=dict(inst.get("metadata") or {}),
        admin_pass=admin_pass,
        flavor_name=inst["flavor"]["name"],
        image_id=inst.get("image_ref") or "",
        reservation_id=inst.get("reservation_id") or "",
        security_groups=tuple(inst.get("security_groups") or ("default",)),
        internal_id=inst.get("internal_id", 0),
        random_seed=base64.b64encode(os.urandom(512)).decode(),
        boot_roles=(inst.get("system_metadata") or {}).get("boot_roles", ""),
        devices=tuple(inst.get("device_metadata") or ()),
        files=personality.files_of(inst.get("system_metadata")),
    )


def with_recorded_machine_type(
    image: ImageSpec | None, system_metadata: dict[str, Any] | None
) -> ImageSpec | None:
    """`image` as the server boots it: with the machine type recorded on the server as
    its hw_machine_type (Nova builds the instance's image meta from its system metadata,
    so the record wins over what the image says now; a rebuild from another image drops
    the record first)."""
    recorded = (system_metadata or {}).get(MACHINE_TYPE_KEY)
    if image is None or not recorded or image.properties.get("hw_machine_type") == recorded:
        return image
    return dataclasses.replace(image, properties={**image.properties, "hw_machine_type": recorded})


# What the guest reports, mapped to the vm_state a stable instance should have.
_POWER_TO_VM = {
    PowerState.RUNNING: VmState.ACTIVE,
    PowerState.PAUSED: VmState.PAUSED,
    PowerState.SUSPENDED: VmState.SUSPENDED,
    PowerState.SHUTDOWN: VmState.STOPPED,
    PowerState.CRASHED: VmState.STOPPED,
    PowerState.NOSTATE: VmState.STOPPED,
}


@dataclass
class HostOptions:
    availability_zone: str = "nova"
    report_interval: float = 10.0
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    reserved_host_memory_mb: int = 0
    reserved_host_disk_gb: int = 0
    force_config_drive: bool = False
    # How long a build waits for the data plane to wire its ports (seconds; Nova's
    # default: an agent busy with many networks at once takes a while).
    vif_plugging_timeout: float = 300.0
    # Seconds before a shelved server is offloaded by the periodic task (0 or -1: never
    # by it; 0 offloads at shelve time).
    shelved_offload_time: int = 0
    # What the config drive's vendor data is collected from ([metadata] vendordata_*).
    vendor_data: VendorData = dataclasses.field(default_factory=VendorData)
    # The vTPM secret policies this host offers ([compute] supported_tpm_secret_security).
    tpm_secret_security: tuple[str, ...] = vtpm.SECURITIES


INTERRUPTED_BUILD = "The compute host restarted while it was building the server."


class _BuildAborted(Exception):
    """The instance was deleted (or taken over) while it was being built."""


class BlockDevicePrepFailed(Exception):
    """The block_device_mapping step failed: Nova's BuildAbortException, no other host
    is tried (it would ask Block Storage for the same volumes)."""

    def __init__(self, instance_uuid: str, cause: Exception) -> None:
        super().__init__(
            f"Build of instance {instance_uuid} aborted: Failure prepping block device. ({cause})"
        )


class ComputeManager(HostMoves, VolumeSwap, HostVTPM, Endpoint):
    # Versioned notifications for consumers outside cumulo (set by whoever runs the host).
    notifier: Notifier | None = None

    def __init__(
        self,
        host: str,
        driver: ComputeDriver,
        bus: Transport,
        image_cache: ImageCache,
        network: NetworkClient | None,
        options: HostOptions | None = None,
        *,
        volumes: ServiceClient | None = None,
        key_manager: ServiceClient | None = None,
        service_token: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.host = host
        self.driver = driver
        self.bus = bus
        self.conductor = rpcapi.ConductorAPI(bus)
        self.image_cache = image_cache
        self.network = network
        self.options = options or HostOptions()
        self.volumes = volumes
        # The Key Manager: the keys of encrypted volumes, read with the user's token.
        self.key_manager = key_manager
        # The cloud's service user's token (a `deployment` vTPM secret is its own).
        self.service_token = service_token
        self._periodic: asyncio.Task | None = None
        # Live migrations an abort was asked for (they end "cancelled", not "error").
        self._aborted_migrations: set[str] = set()
        # Per instance: its device metadata is rebuilt by one attach or detach at a time.
        # Both tables hold their locks weakly: a lock goes once no task holds or awaits it.
        self._device_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # Per instance: one swap, attach, detach or delete at a time (Nova's lock on its uuid).
        self._instance_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # A context for the agent's own messages (heartbeats, power sync).
        self.service_context = {
            "request_id": f"req-compute-{host}",
            "user_id": None,
            "project_id": None,
            "roles": [],
        }

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        await self.driver.init_host(self.host)
        await self.report()
        await self.recover_interrupted_work()
        await self.sync_power_states()
        await self.destroy_evacuated_instances()
        await self.bus.serve(rpcapi.compute_topic(self.host), self)
        self._periodic = asyncio.create_task(self._periodic_tasks())

    async def stop(self) -> None:
        if self._periodic:
            self._periodic.cancel()
            await asyncio.gather(self._periodic, return_exceptions=True)
        await self.driver.cleanup_host()

    async def _periodic_tasks(self) -> None:
        while True:
            await asyncio.sleep(self.options.report_interval)
            try:
                await self.report()
                await self.sync_power_states()
                await self.offload_shelved_instances()
            except Exception:  # noqa: BLE001 - a failed round must not stop the next
                LOG.exception("periodic tasks of %s failed", self.host)

    async def report(self) -> None:
        """Heartbeat with this host's capacity and allocation ratios."""
        res = await self.driver.get_available_resource()
        o = self.options
        resources = {
            "hypervisor_hostname": res.hypervisor_hostname,
            "hypervisor_type": res.hypervisor_type,
            "hypervisor_version": res.hypervisor_version,
            "vcpus": res.vcpus,
            "memory_mb": res.memory_mb,
            "local_gb": res.local_gb,
            "cpu_arch": res.cpu_arch,
            "cpu_info": res.cpu_info,
            "cpu_allocation_ratio": o.cpu_allocation_ratio,
            "ram_allocation_ratio": o.ram_allocation_ratio,
            "disk_allocation_ratio": o.disk_allocation_ratio,
            "reserved_host_memory_mb": o.reserved_host_memory_mb,
            "reserved_host_disk_gb": o.reserved_host_disk_gb,
            "traits": [
                *([RESCUE_BFV_TRAIT] if self.driver.supports_bfv_rescue else []),
                *(
                    vtpm.host_traits(self.options.tpm_secret_security)
                    if self.driver.supports_vtpm
                    else ()
                ),
            ],
        }
        await self.conductor.compute_node_report(
            self.service_context, self.host, resources, o.availability_zone
        )

    async def recover_interrupted_work(self) -> None:
        """What this host was doing when it stopped (Nova's init_host). A build cannot be
        resumed (its request died with the process): its guest and ports are removed and
        it goes to ERROR with a fault. A delete is finished. Any other task is cleared
        (the power state sync then says what the guest is). A guest with no server on
        this host (deleted meanwhile) is removed; a server with no machine type recorded
        gets the one its guest runs with."""
        token = ""
        if self.network is not None:
            try:
                token = await self.network.service_token()
            except Exception:  # noqa: BLE001 - Identity down: ports are freed on delete
                LOG.warning("no service token: interrupted builds keep their ports")
        ctx = {**self.service_context, "auth_token": token}
        instances = await self.conductor.instances_on_host(ctx, self.host)
        for inst in instances:
            uuid, task = inst["uuid"], inst["task_state"]
            try:
                if inst["vm_state"] == VmState.BUILDING:
                    LOG.warning("build of %s was interrupted by a restart: failing it", uuid)
                    await self._undo_build(token, uuid, inst.get("network_info") or [])
                    await self._release_volumes(ctx, uuid)
                    await self.conductor.build_interrupted(ctx, uuid, self.host, INTERRUPTED_BUILD)
                elif task == TaskState.DELETING:
                    LOG.info("finishing the delete of %s", uuid)
                    await self.terminate_instance(ctx, uuid)
                elif task is not None:
                    LOG.info("clearing task %s of %s, interrupted by a restart", task, uuid)
                    await self.conductor.instance_update(
                        ctx, uuid, {"task_state": None}, expected_task_state=[task]
                    )
            except Exception:  # noqa: BLE001 - one instance must not stop the host
                LOG.exception("recovering %s on %s failed", uuid, self.host)
        await self._record_machine_types(ctx, instances)
        known = {inst["uuid"] for inst in instances}
        for uuid in sorted(set(await self.driver.list_guests()) - known):
            LOG.warning("guest %s has no server on %s: removing it", uuid, self.host)
            await self.driver.destroy(uuid)

    async def _record_machine_types(self, ctx: dict, instances: list[dict[str, Any]]) -> None:
        """At start: the machine type of each guest here whose server has none recorded
        (made before the record was kept) is recorded as it runs, so a move keeps it
        (Nova's init_host does the same). An instance that had an action in flight is
        left for its next spawn (or the next start) to record."""
        for inst in instances:
            if inst["task_state"] is not None or inst["vm_state"] == VmState.BUILDING:
                continue
            try:
                sysmeta = inst.get("system_metadata")
                if update := await self._machine_type_record(inst["uuid"], sysmeta):
                    await self.conductor.instance_update(
                        ctx, inst["uuid"], update, expected_task_state=[None], reply=False
                    )
            except Exception:  # noqa: BLE001 - one instance must not stop the host
                LOG.warning("machine type of %s not recorded", inst["uuid"], exc_info=True)

    async def sync_power_states(self) -> None:
        """Make the database agree with the hypervisor: a dead guest is never ACTIVE."""
        ctx = self.service_context
        instances = await self.conductor.instances_on_host(ctx, self.host)
        # The guests after the instances: a build that went ACTIVE meanwhile had its
        # guest running before (read the other way round, it looked dead: SHUTOFF).
        guests = set(await self.driver.list_guests())
        for inst in instances:
            if inst["task_state"] is not None:
                continue  # an action is in flight; it will set the state itself
            if inst["uuid"] in guests:
                try:
                    power = (await self.driver.get_info(inst["uuid"])).state
                except GuestNotFound:
                    continue  # deleted since the listing: its delete sets the state
            else:
                power = PowerState.NOSTATE if inst["vm_state"] != VmState.ERROR else None
            if power is None or int(power) == inst["power_state"]:
                continue
            updates: dict[str, Any] = {"power_state": int(power)}
            if inst["vm_state"] in (
                VmState.ACTIVE,
                VmState.PAUSED,
                VmState.SUSPENDED,
                VmState.STOPPED,
            ):
                updates["vm_state"] = _POWER_TO_VM[power]
            LOG.info("power state of %s is %s: updating", inst["uuid"], power.name)
            try:
                await self.conductor.instance_update(
                    ctx, inst["uuid"], updates, expected_task_state=[None]
                )
            except Exception:  # noqa: BLE001 - the instance moved on; next round will see
                LOG.debug("power sync of %s skipped", inst["uuid"])

    # -- build ------------------------------------------------------------------------

    async def _set_task(
        self,
        ctx: dict,
        uuid: str,
        task: str,
        expected: str,
        *,
        updates: dict[str, Any] | None = None,
        events: list[dict[str, Any]] | None = None,
        reply: bool = True,
    ) -> dict[str, Any] | None:
        """Move to `task` (with `updates`, recording `events`) in one conductor call;
        the instance as changed, unless `reply` is False."""
        try:
            return await self.conductor.instance_update(
                ctx,
                uuid,
                {**(updates or {}), "task_state": task},
                expected_task_state=[expected],
                events=events,
                host=self.host,
                reply=reply,
            )
        except RemoteError as exc:
            if exc.type in (UnexpectedTaskState.__name__, InstanceNotFound.__name__):
                raise _BuildAborted(exc.message) from exc
            raise

    async def build_and_run_instance(
        self, ctx: dict, instance_uuid: str, request_spec: dict[str, Any]
    ) -> None:
        # Each task state change carries the action events around it: one conductor
        # call (one database write) per step.
        event = "compute_build_and_run_instance"
        network_info: list[dict[str, Any]] = []
        token = ctx.get("auth_token") or ""
        step: str | None = None  # the sub-event in progress, finished with the error
        started = time.monotonic()
        inst: dict[str, Any] = {}
        had_secret = True
        try:
            step = "compute_networking"
            inst = await self._set_task(
                ctx,
                instance_uuid,
                TaskState.NETWORKING,
                TaskState.SCHEDULING,
                events=[{"event": event}, {"event": step}],
            )
            await notify_instance(self.notifier, self.host, "instance.create.start", inst)
            if self.network is not None:
                network_info = await self.network.allocate_for_instance(token, inst, self.host)
            elif inst.get("requested_networks") not in ("none", [], None):
                raise DriverError("this compute host has no Network service to ask for ports")
            await self._set_task(
                ctx,
                instance_uuid,
                TaskState.BLOCK_DEVICE_MAPPING,
                TaskState.NETWORKING,
                updates={"network_info": network_info},
                events=[{"event": step, "finish": True}],
                reply=False,
            )
            step = None
            block_devices: tuple[BlockDevice, ...] = ()
            volume_tags: dict[str, str] = {}
            if request_spec.get("block_devices", True):  # False: the API saw none asked for
                try:
                    block_devices, volume_tags = await self._prepare_volumes(ctx, inst)
                except Exception as exc:  # noqa: BLE001 - the build is aborted with it
                    raise BlockDevicePrepFailed(instance_uuid, exc) from exc

            step = "compute_spawning"
            await self._set_task(
                ctx,
                instance_uuid,
                TaskState.SPAWNING,
                TaskState.BLOCK_DEVICE_MAPPING,
                events=[{"event": step}],
                reply=False,
            )
            had_secret = vtpm.SECRET_UUID_KEY in (inst.get("system_metadata") or {})
            guest = await self._guest_spec(
                token,
                inst,
                network_info,
                request_spec.get("admin_password"),
                image_meta=request_spec.get("image"),
                block_devices=block_devices,
                volume_tags=volume_tags,
                tpm=await self._vtpm_for(ctx, inst),
            )
            await self.driver.spawn(guest, self._network_ready(token, network_info))
            power = (await self.driver.get_info(instance_uuid)).state
            await self.conductor.instance_update(
                ctx,
                instance_uuid,
                {
                    "vm_state": VmState.ACTIVE,
                    "task_state": None,
                    "power_state": int(power),
                    "launched_at": utcnow().isoformat(),
                    "device_metadata": await self._device_metadata(
                        ctx, instance_uuid, network_info, volume_tags
                    ),
                    **await self._machine_type_record(instance_uuid, inst.get("system_metadata")),
                },
                expected_task_state=[TaskState.SPAWNING],
                events=[{"event": step, "finish": True}, {"event": event, "finish": True}],
                host=self.host,
                reply=False,
            )
            step = None
            LOG.info("took %.2f seconds to build %s", time.monotonic() - started, instance_uuid)
            done = {"vm_state": VmState.ACTIVE, "task_state": None, "power_state": int(power)}
            ready = {**inst, **done, "host": self.host, "network_info": network_info}
            await notify_instance(self.notifier, self.host, "instance.create.end", ready)
        except _BuildAborted as exc:
            LOG.info("build of %s aborted: %s", instance_uuid, exc)
            await self._undo_build(token, instance_uuid, network_info)
            await self._release_volumes(ctx, instance_uuid)
        except Exception as exc:  # noqa: BLE001 - any failure goes back to the conductor
            LOG.warning("build of %s on %s failed: %s", instance_uuid, self.host, exc)
            await self._undo_build(token, instance_uuid, network_info)
            await self._release_volumes(ctx, instance_uuid)
            if isinstance(exc, BlockDevicePrepFailed):
                await self._delete_made_volumes(ctx, instance_uuid)
            if not had_secret:  # a TPM secret this build made goes with it
                await self._delete_vtpm_secret(ctx, inst, forget=True)
            if step:
                await self.conductor.action_event(
                    ctx, instance_uuid, step, host=self.host, finish=True, error=str(exc)
                )
            await self.conductor.action_event(
                ctx, instance_uuid, event, host=self.host, finish=True, error=str(exc)
            )
            await self.conductor.build_failed(
                ctx, instance_uuid, self.host, str(exc), request_spec,
                reschedule=not isinstance(exc, (ImageSignatureFailed, BlockDevicePrepFailed)),
            )  # fmt: skip
            failed = {"uuid": instance_uuid, "host": self.host, "vm_state": VmState.ERROR}
            await notify_instance(
                self.notifier, self.host, "instance.create.error", failed, fault=str(exc)
            )

    def _network_ready(
        self, token: str, network_info: list[dict[str, Any]]
    ) -> Callable[[], Awaitable[None]] | None:
        """What the driver awaits before the guest runs: the data plane has wired its
        ports (Nova's wait for network-vif-plugged, around the paused guest: the image,
        disks and the hypervisor's start overlap it)."""
        if self.network is None or not network_info:
            return None
        network, timeout = self.network, self.options.vif_plugging_timeout
        return functools.partial(network.wait_for_wiring, token, network_info, timeout)

    async def _undo_build(self, token: str, uuid: str, network_info: list[dict]) -> None:
        try:
            await self.driver.destroy(uuid)
        finally:
            if self.network is not None:
                await self.network.deallocate_for_instance(token, network_info, uuid)

    async def _prepare_volumes(
        self, ctx: dict, inst: dict[str, Any]
    ) -> tuple[tuple[BlockDevice, ...], dict[str, str]]:
        """The block_device_mapping step: volumes made (from an image, or blank), reserved,
        connected to this host and completed, in boot order; and their tags (by volume)."""
        bdms = await self.conductor.block_devices(ctx, inst["uuid"])
        if not bdms:
            return (), {}
        if self.volumes is None:
            raise DriverError("this compute host has no Block Storage service")
        token = ctx.get("auth_token") or ""
        devices = []
        tags: dict[str, str] = {}
        letters = iter("abcdefghijklmnopqrstuvwxyz")
        for bdm in bdms:
            volume_id = bdm["volume_id"]
            if volume_id is None:
                body: dict[str, Any] = {"size": bdm["volume_size"], "name": f"{inst['name']}-vol"}
                if bdm["source_type"] == "image":
                    body["imageRef"] = bdm["image_id"]
                elif bdm["source_type"] == "snapshot":
                    body["snapshot_id"] = bdm["snapshot_id"]
                volume = (
                    await self.volumes.json(
                        "POST", "/v3/volumes", token, headers=VOLUME_API, json={"volume": body}
                    )
                )["volume"]
                volume_id = volume["id"]
                await self.conductor.block_device_update(ctx, bdm["id"], {"volume_id": volume_id})
                await self._wait_volume(token, volume_id)
            # The guest names SCSI disks sd*, virtio ones vd* (Nova's default names).
            scsi = bdm.get("disk_bus") == "scsi" or bdm.get("device_type") == "lun"
            device = bdm["device_name"] or f"/dev/{'sd' if scsi else 'vd'}{next(letters)}"
            attachment = await self._reserve_attachment(token, volume_id, inst["uuid"])
            await self.conductor.block_device_update(
                ctx, bdm["id"], {"attachment_id": attachment["id"]}
            )
            attachment = (
                await self.volumes.json(
                    "PUT",
                    f"/v3/attachments/{attachment['id']}",
                    token,
                    headers=VOLUME_API,
                    json={"attachment": {"connector": self._connector(device)}},
                )
            )["attachment"]
            info = attachment["connection_info"]
            # Its key first: an encrypted volume whose key cannot be had fails the build.
            opened = await self._opened(
                token,
                BlockDevice(
                    volume_id,
                    device,
                    info,
                    bdm["boot_index"],
                    disk_bus=bdm.get("disk_bus"),
                    device_type=bdm.get("device_type"),
                ),
            )
            await self.volumes.request(
                "POST",
                f"/v3/attachments/{attachment['id']}/action",
                token,
                headers=VOLUME_API,
                json={"os-complete": None},
            )
            await self.conductor.block_device_update(
                ctx, bdm["id"], {"device_name": device, "connection_info": info}
            )
            devices.append(opened)
            if bdm["tag"]:
                tags[volume_id] = bdm["tag"]
        return tuple(devices), tags

    async def _opened(self, token: str, device: BlockDevice) -> BlockDevice:
        """`device` with what opens it when it is encrypted (its key from the Key Manager)."""
        return await with_encryption(self.volumes, self.key_manager, token, device)

    async def _volume_image(self, token: str, volume_id: str) -> ImageSpec | None:
        """A volume-backed guest's image: its boot volume's volume_image_metadata, as Nova
        takes the image meta from it (properties, and a kernel and ramdisk to boot)."""
        if self.volumes is None:
            return None
        path = f"/v3/volumes/{volume_id}"
        volume = (await self.volumes.json("GET", path, token, headers=VOLUME_API))["volume"]
        meta = volume.get("volume_image_metadata") or {}
        if not meta.get("image_id"):
            return None
        kernel = ramdisk = None
        if meta.get("kernel_id"):
            kernel = str((await self.image_cache.fetch(token, meta["kernel_id"]))[0])
        if meta.get("ramdisk_id"):
            ramdisk = str((await self.image_cache.fetch(token, meta["ramdisk_id"]))[0])
        return ImageSpec(
            id=meta["image_id"],
            disk_format=meta.get("disk_format") or "raw",
            container_format=meta.get("container_format") or "bare",
            properties={k: v for k, v in meta.items() if k not in ("image_id", "image_name")},
            kernel_path=kernel,
            ramdisk_path=ramdisk,
        )

    async def _release_volumes(self, ctx: dict, instance_uuid: str) -> None:
        """After a failed build: volumes go back to available (a retry attaches them again)."""
        token = ctx.get("auth_token") or ""
        try:
            for bdm in await self.conductor.block_devices(ctx, instance_uuid):
                if bdm["attachment_id"]:
                    await self._drop_attachment(token, bdm["attachment_id"])
                    await self.conductor.block_device_update(
                        ctx, bdm["id"], {"attachment_id": None, "connection_info": None}
                    )
        except Exception:  # noqa: BLE001 - the instance may be gone already
            LOG.warning("volumes of %s not released", instance_uuid)

    async def _delete_made_volumes(self, ctx: dict, instance_uuid: str) -> None:
        """After an aborted build: the volumes it made (from an image, a snapshot, or
        blank) that go with the server (delete_on_termination), as Nova's
        _cleanup_volumes; the mapping forgets them."""
        token = ctx.get("auth_token") or ""
        for bdm in await self.conductor.block_devices(ctx, instance_uuid):
            if bdm["source_type"] == "volume" or not bdm["delete_on_termination"]:
                continue
            if not bdm["volume_id"]:
                continue
            try:
                await self.volumes.request(
                    "DELETE",
                    url_path("/v3/volumes/{}", bdm["volume_id"]),
                    token,
                    headers=VOLUME_API,
                    ok=(202, 204, 404),
                )
                await self.conductor.block_device_update(ctx, bdm["id"], {"volume_id": None})
            except Exception:  # noqa: BLE001 - logged; the server's delete tries again
                LOG.warning("volume %s of an aborted build not deleted", bdm["volume_id"])

    async def _wait_volume(
        self, token: str, volume_id: str, timeout: float = 300, want: str = "available"
    ) -> None:
        """Poll Block Storage until the volume is `want` (an error status fails)."""
        path = url_path("/v3/volumes/{}", volume_id)
        try:
            await wait_for_status(
                self.volumes, token, path, "volume", want, timeout, headers=VOLUME_API
            )
        except StatusWaitFailed as exc:
            raise DriverError(str(exc)) from None

    async def _guest_spec(
        self,
        token: str,
        inst: dict[str, Any],
        network_info: list[dict[str, Any]],
        admin_pass: str | None = None,
        image_meta: dict[str, Any] | None = None,
        *,
        block_devices: tuple[BlockDevice, ...] = (),
        volume_tags: dict[str, str] | None = None,
        tpm: VirtualTPM | None = None,
    ) -> GuestSpec:
        """The guest to spawn: its flavor, image, ports, volumes (`volume_tags`: their
        device role tags), emulated TPM and config drive."""
        flavor = inst["flavor"]
        image = None
        root_volume_id = next((d.volume_id for d in block_devices if d.boot_index == 0), None)
        if not inst.get("image_ref") and root_volume_id:
            image = await self._volume_image(token, root_volume_id)
        elif inst.get("image_ref"):
            trusted = trusted_certs_of(inst.get("system_metadata"))
            path, meta = await self.image_cache.fetch(token, inst["image_ref"], image_meta, trusted)
            known = {
                "id",
                "name",
                "status",
                "disk_format",
                "container_format",
                "size",
                "checksum",
                "os_hash_algo",
                "os_hash_value",
                "owner",
                "visibility",
            }
            properties = {k: v for k, v in meta.items() if k not in known}
            kernel = ramdisk = None
            if meta.get("kernel_id"):
                kernel = str((await self.image_cache.fetch(token, meta["kernel_id"]))[0])
            if meta.get("ramdisk_id"):
                ramdisk = str((await self.image_cache.fetch(token, meta["ramdisk_id"]))[0])
            image = ImageSpec(
                id=meta["id"],
                disk_format=meta.get("disk_format") or "raw",
                container_format=meta.get("container_format") or "bare",
                path=str(path),
                properties=properties,
                kernel_path=kernel,
                ramdisk_path=ramdisk,
            )
        image = with_recorded_machine_type(image, inst.get("system_metadata"))
        guest = GuestSpec(
            admin_password=admin_pass,
            uuid=inst["uuid"],
            name=inst["name"],
            hostname=inst["hostname"],
            flavor=FlavorSpec(
                name=flavor["name"],
                vcpus=flavor["vcpus"],
                memory_mb=flavor["memory_mb"],
                root_gb=flavor["root_gb"],
                ephemeral_gb=flavor.get("ephemeral_gb", 0),
                swap_mb=flavor.get("swap", 0),
                extra_specs=flavor.get("extra_specs", {}),
            ),
            image=image,
            vifs=vifs_from_info(network_info),
            block_devices=block_devices,
            vtpm=tpm,
        )
        if not (inst.get("config_drive") or self.options.force_config_drive):
            return guest
        # Where the driver will put the tagged devices, for the drive (Nova's libvirt
        # driver defines the guest, then writes the drive, then starts it).
        devices = build_device_metadata(
            self.driver.device_layout(guest), network_info, volume_tags or {}
        )
        meta = instance_metadata({**inst, "device_metadata": devices}, network_info, admin_pass)
        meta = await self.options.vendor_data.collect(meta)
        return dataclasses.replace(guest, config_drive=config_drive_files(meta))

    async def _machine_type_record(
        self, instance_uuid: str, system_metadata: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The update recording on the server the machine type the driver gave its guest
        here, when it has none recorded yet (its first spawn, a rebuild from another
        image, a server older than the record): {"system_metadata": ...}, else {}."""
        system_metadata = system_metadata or {}
        if system_metadata.get(MACHINE_TYPE_KEY):
            return {}
        try:
            machine_type = await self.driver.guest_machine_type(instance_uuid)
        except GuestNotFound:
            return {}
        if not machine_type:
            return {}
        return {"system_metadata": {**system_metadata, MACHINE_TYPE_KEY: machine_type}}

    async def _device_metadata(
        self,
        ctx: dict,
        instance_uuid: str,
        network_info: list[dict[str, Any]],
        volume_tags: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The instance's device metadata as the guest has its devices now (Nova rebuilds
        it after every spawn, attach and detach); `volume_tags` are read when not given."""
        if volume_tags is None:
            volume_tags = {
                b["volume_id"]: b["tag"]
                for b in await self.conductor.block_devices(ctx, instance_uuid)
                if b["tag"] and b["volume_id"]
            }
        try:
            addresses = await self.driver.get_device_addresses(instance_uuid)
        except GuestNotFound:
            addresses = ()
        return build_device_metadata(addresses, network_info, volume_tags)

    async def _refresh_device_metadata(self, ctx: dict, instance_uuid: str) -> None:
        """After an attach or a detach: the device metadata again from what is recorded
        now (one at a time per instance, so the last change is always in it). Best
        effort: the attach or detach itself is done, whatever happens here."""
        async with keyed_lock(self._device_locks, instance_uuid):
            try:
                inst = await self.conductor.instance_update(ctx, instance_uuid, {})
                devices = await self._device_metadata(
                    ctx, instance_uuid, inst.get("network_info") or []
                )
                if devices != (inst.get("device_metadata") or []):
                    await self.conductor.instance_update(
                        ctx, instance_uuid, {"device_metadata": devices}, reply=False
                    )
            except Exception:  # noqa: BLE001 - logged; the next change rebuilds it
                LOG.warning("device metadata of %s not updated", instance_uuid, exc_info=True)

    # -- other actions --------------------------------------------------------------

    async def terminate_instance(self, ctx: dict, instance_uuid: str) -> None:
        async with self._instance_lock(instance_uuid):
            await self._terminate_instance(ctx, instance_uuid)

    async def _terminate_instance(self, ctx: dict, instance_uuid: str) -> None:
        token = ctx.get("auth_token") or ""
        await self.conductor.action_event(
            ctx, instance_uuid, "compute_terminate_instance", host=self.host
        )
        instances = {i["uuid"]: i for i in await self.conductor.instances_on_host(ctx, self.host)}
        inst = instances.get(instance_uuid) or {"uuid": instance_uuid, "host": self.host}
        await notify_instance(self.notifier, self.host, "instance.delete.start", inst)
        info = inst.get("network_info") or []
        await self._undo_build(token, instance_uuid, info)
        await self._delete_vtpm_secret(ctx, inst)
        for bdm in await self.conductor.block_devices(ctx, instance_uuid):
            if bdm["attachment_id"]:
                await self._drop_attachment(token, bdm["attachment_id"])
            if bdm["delete_on_termination"] and self.volumes is not None:
                try:
                    await self.volumes.request(
                        "DELETE",
                        f"/v3/volumes/{bdm['volume_id']}",
                        token,
                        headers=VOLUME_API,
                        ok=(202, 204, 404),
                    )
                except Exception:  # noqa: BLE001 - the server goes anyway; say so
                    LOG.warning("could not delete volume %s", bdm["volume_id"])
        await self.conductor.action_event(
            ctx, instance_uuid, "compute_terminate_instance", host=self.host, finish=True
        )
        await self.conductor.instance_deleted(ctx, instance_uuid, self.host)
        gone = {**inst, "vm_state": VmState.DELETED, "task_state": None, "power_state": 0}
        await notify_instance(self.notifier, self.host, "instance.delete.end", gone)

    async def power_action(
        self, ctx: dict, instance_uuid: str, action: str, args: dict[str, Any]
    ) -> None:
        """stop/start/reboot/pause/unpause/suspend/resume, then the state they lead to."""
        done = {
            "stop": (self.driver.power_off, VmState.STOPPED),
            "start": (self.driver.power_on, VmState.ACTIVE),
            "reboot": (lambda u: self.driver.reboot(u, bool(args.get("hard"))), VmState.ACTIVE),
            "pause": (self.driver.pause, VmState.PAUSED),
            "unpause": (self.driver.unpause, VmState.ACTIVE),
            "suspend": (self.driver.suspend, VmState.SUSPENDED),
            "resume": (self.driver.resume, VmState.ACTIVE),
        }
        if action not in done:
            raise ValueError(f"unknown power action {action}")
        call, vm_state = done[action]
        event = f"compute_{action}_instance"
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host)
        error = None
        try:
            if action in ("start", "reboot", "resume"):
                await self._reopen_vtpm(ctx, instance_uuid)
            await call(instance_uuid)
        except (DriverError, GuestNotFound) as exc:
            error = str(exc)
        power = PowerState.NOSTATE
        try:
            power = (await self.driver.get_info(instance_uuid)).state
        except GuestNotFound:
            pass
        updates: dict[str, Any] = {"task_state": None, "power_state": int(power)}
        if error is None:
            updates["vm_state"] = vm_state
        await self.conductor.instance_update(ctx, instance_uuid, updates)
        await self.conductor.action_event(
            ctx, instance_uuid, event, host=self.host, finish=True, error=error
        )

    # -- snapshot, rebuild, resize ------------------------------------------------------

    async def snapshot_instance(self, ctx: dict, instance_uuid: str, image_id: str) -> None:
        """Write the guest's disk into the Image service's image `image_id`."""
        event = "compute_snapshot_instance"
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host)
        error = None
        try:
            await self._set_task(
                ctx, instance_uuid, TaskState.IMAGE_UPLOADING, TaskState.IMAGE_SNAPSHOT
            )
            await self._upload_snapshot(ctx, instance_uuid, image_id)
        except Exception as exc:  # noqa: BLE001 - the snapshot failed; say so
            error = str(exc)
            LOG.warning("snapshot of %s failed: %s", instance_uuid, exc)
        await self._finish_task(ctx, instance_uuid)
        await self.conductor.action_event(
            ctx, instance_uuid, event, host=self.host, finish=True, error=error
        )

    async def _upload_snapshot(self, ctx: dict, instance_uuid: str, image_id: str) -> None:
        """The guest's root disk into image `image_id`; a failure deletes the image."""
        token = ctx.get("auth_token") or ""
        images = self.image_cache.images
        target = self.image_cache.root.parent / f"snapshot-{image_id}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            disk_format = await self.driver.snapshot(instance_uuid, str(target))
            meta = await images.json("GET", f"/v2/images/{image_id}", token)
            inst = await self._read(ctx, instance_uuid)
            # What Nova's libvirt driver sets on a snapshot (_create_snapshot_metadata).
            properties = {
                "image_location": "snapshot",
                "image_state": "available",
                "owner_id": inst["project_id"],
            }
            patch = [{"op": "add", "path": f"/{k}", "value": v} for k, v in properties.items()]
            if meta.get("disk_format") != disk_format:
                patch.append({"op": "replace", "path": "/disk_format", "value": disk_format})
            await images.request(
                "PATCH",
                f"/v2/images/{image_id}",
                token,
                json=patch,
                headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
            )
            await images.request(
                "PUT",
                f"/v2/images/{image_id}/file",
                token,
                content=file_chunks(str(target)),
                headers={"Content-Type": "application/octet-stream"},
            )
        except BaseException:
            try:
                await images.request("DELETE", f"/v2/images/{image_id}", token, ok=(204, 404))
            except Exception:  # noqa: BLE001 - best effort
                LOG.debug("could not delete image %s", image_id)
            raise
        finally:
            target.unlink(missing_ok=True)

    async def _finish_task(self, ctx: dict, instance_uuid: str, **updates: Any) -> None:
        power = PowerState.NOSTATE
        try:
            power = (await self.driver.get_info(instance_uuid)).state
        except GuestNotFound:
            pass
        await self.conductor.instance_update(
            ctx, instance_uuid, {"task_state": None, "power_state": int(power), **updates}
        )

    async def rebuild_instance(
        self,
        ctx: dict,
        instance_uuid: str,
        reimage_image: str | None = None,
        admin_password: str | None = None,
    ) -> None:
        """The same server (ports, name, id) on a fresh root disk from its (new) image;
        a volume-backed server's root volume reimaged from `reimage_image` (2.93). The
        new guest is given `admin_password` as a new one is at its build (the config
        drive's `admin_pass`)."""
        event = "compute_rebuild_instance"
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host)
        try:
            expected = TaskState.REBUILDING
            if reimage_image:
                await self._set_task(
                    ctx, instance_uuid, TaskState.REBUILD_BLOCK_DEVICE_MAPPING, expected
                )
                expected = TaskState.REBUILD_BLOCK_DEVICE_MAPPING
                await self.driver.destroy(instance_uuid)
                root_attachment = await self._reimage_root_volume(ctx, instance_uuid, reimage_image)
            inst = await self._set_task(ctx, instance_uuid, TaskState.REBUILD_SPAWNING, expected)
            await self.driver.destroy(instance_uuid)
            # Its volumes stay attached: connected again for the new guest.
            guest = await self._spec_here(
                ctx, inst, inst.get("network_info") or [], admin_password=admin_password
            )
            if reimage_image:
                await self._complete_attachment(ctx.get("auth_token") or "", root_attachment)
            await self.driver.spawn(guest)
            # A stopped server is rebuilt stopped (Nova powers it off again).
            stopped = inst.get("vm_state") == VmState.STOPPED
            if stopped:
                await self.driver.power_off(instance_uuid)
        except Exception as exc:  # noqa: BLE001 - a failed rebuild leaves the server in ERROR
            LOG.warning("rebuild of %s failed: %s", instance_uuid, exc)
            await self._finish_task(ctx, instance_uuid, vm_state=VmState.ERROR)
            await self.conductor.action_event(
                ctx, instance_uuid, event, host=self.host, finish=True, error=str(exc)
            )
            return
        await self._finish_task(
            ctx,
            instance_uuid,
            vm_state=VmState.STOPPED if stopped else VmState.ACTIVE,
            launched_at=utcnow().isoformat(),
            device_metadata=await self._device_metadata(
                ctx, instance_uuid, inst.get("network_info") or []
            ),
            **await self._machine_type_record(instance_uuid, inst.get("system_metadata")),
        )
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host, finish=True)

    async def resize_instance(
        self,
        ctx: dict,
        instance_uuid: str,
        flavor: dict[str, Any],
        revert: bool,
        migration_id: int | None = None,
    ) -> None:
        """Give the guest another flavor: stop it, resize, start it again if it ran.

        A resize ends in vm_state resized (the user confirms or reverts); a revert
        puts the old flavor back and ends where the server was before the resize.
        """
        event = "compute_revert_resize" if revert else "compute_resize_instance"
        expected = TaskState.RESIZE_REVERTING if revert else TaskState.RESIZE_PREP
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host)
        try:
            inst = await self._set_task(
                ctx,
                instance_uuid,
                TaskState.RESIZE_REVERTING if revert else TaskState.RESIZE_MIGRATING,
                expected,
            )
            was_running = (await self.driver.get_info(instance_uuid)).state == PowerState.RUNNING
            await self.driver.power_off(instance_uuid)
            if revert:
                await self.driver.revert_resize(instance_uuid)
            else:
                # The TPM the new flavor gives (a secret made when it is the first).
                kept = vtpm.SECRET_UUID_KEY in (inst.get("system_metadata") or {})
                passphrase = await self.driver.vtpm_passphrase(instance_uuid) if kept else None
                tpm = await self._vtpm_for(ctx, inst, flavor, passphrase)
                await self.driver.resize(
                    instance_uuid,
                    FlavorSpec(
                        name=flavor["name"],
                        vcpus=flavor["vcpus"],
                        memory_mb=flavor["memory_mb"],
                        root_gb=flavor["root_gb"],
                        ephemeral_gb=flavor.get("ephemeral_gb", 0),
                        swap_mb=flavor.get("swap", 0),
                        extra_specs=flavor.get("extra_specs", {}),
                    ),
                    tpm,
                )
            if was_running or (
                revert and inst["system_metadata"].get("old_vm_state") == VmState.ACTIVE
            ):
                await self.driver.power_on(instance_uuid)
        except Exception as exc:  # noqa: BLE001 - the server stays as it was
            LOG.warning("resize of %s failed: %s", instance_uuid, exc)
            await self._finish_task(ctx, instance_uuid)
            await self.conductor.finish_resize(ctx, instance_uuid, confirm=False)
            if migration_id is not None:
                await self.conductor.migration_update(ctx, migration_id, {"status": "error"})
            await self.conductor.action_event(
                ctx, instance_uuid, event, host=self.host, finish=True, error=str(exc)
            )
            return
        sysmeta = dict(inst.get("system_metadata") or {})
        sizes = {"flavor": flavor, "vcpus": flavor["vcpus"], "memory_mb": flavor["memory_mb"]}
        if revert:
            old_state = sysmeta.pop("old_vm_state", VmState.ACTIVE)
            sysmeta.pop("old_flavor", None)
            await self._drop_vtpm_of_reverted_flavor(ctx, inst, flavor, sysmeta)
            await self.conductor.finish_resize(ctx, instance_uuid, confirm=False)
            await self._finish_task(
                ctx, instance_uuid, vm_state=old_state, system_metadata=sysmeta, **sizes
            )
        else:
            sysmeta["old_flavor"] = inst["flavor"]
            await self._finish_task(
                ctx, instance_uuid, vm_state=VmState.RESIZED, system_metadata=sysmeta, **sizes
            )
        if migration_id is not None:
            status = "reverted" if revert else "finished"
            await self.conductor.migration_update(ctx, migration_id, {"status": status})
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host, finish=True)

    # -- volumes (api-ref: Servers with volume attachments) ------------------------------

    async def attach_volume(
        self, ctx: dict, instance_uuid: str, volume_id: str, attachment_id: str, device: str
    ) -> None:
        async with self._instance_lock(instance_uuid):
            await self._attach_volume(ctx, instance_uuid, volume_id, attachment_id, device)

    async def _attach_volume(
        self, ctx: dict, instance_uuid: str, volume_id: str, attachment_id: str, device: str
    ) -> None:
        """Connect the reserved volume to this host, plug it into the guest, complete."""
        token = ctx.get("auth_token") or ""
        event = "compute_attach_volume"
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host)
        try:
            if self.volumes is None:
                raise DriverError("this compute host has no Block Storage service")
            attachment = (
                await self.volumes.json(
                    "PUT",
                    f"/v3/attachments/{attachment_id}",
                    token,
                    headers=VOLUME_API,
                    json={"attachment": {"connector": self._connector(device)}},
                )
            )["attachment"]
            info = attachment["connection_info"]
            opened = await self._opened(token, BlockDevice(volume_id, device, info))
            await self.driver.attach_volume(instance_uuid, opened)
            await self.volumes.request(
                "POST",
                f"/v3/attachments/{attachment_id}/action",
                token,
                headers=VOLUME_API,
                json={"os-complete": None},
            )
            await self.conductor.volume_attached(ctx, instance_uuid, volume_id, info)
            await self._refresh_device_metadata(ctx, instance_uuid)
        except Exception as exc:  # noqa: BLE001 - undo: the volume goes back to available
            LOG.warning("attaching %s to %s failed: %s", volume_id, instance_uuid, exc)
            await self._drop_attachment(token, attachment_id)
            await self.conductor.volume_detached(ctx, instance_uuid, volume_id)
            await self.conductor.action_event(
                ctx, instance_uuid, event, host=self.host, finish=True, error=str(exc)
            )
            return
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host, finish=True)

    async def _reimage_root_volume(self, ctx: dict, instance_uuid: str, image_id: str) -> str:
        """Nova's volume-backed rebuild: the root volume kept reserved for the server by a
        new attachment while its old one goes, reimaged by Block Storage (os-reimage,
        3.68) from the image; the new attachment's id once the volume holds the image."""
        if self.volumes is None:
            raise DriverError("this compute host has no Block Storage service")
        token = ctx.get("auth_token") or ""
        bdms = await self.conductor.block_devices(ctx, instance_uuid)
        root = next(b for b in bdms if b["boot_index"] == 0 and b["volume_id"])
        attachment = await self._reserve_attachment(token, root["volume_id"], instance_uuid)
        await self.conductor.block_device_update(
            ctx, root["id"], {"attachment_id": attachment["id"], "connection_info": None}
        )
        if root["attachment_id"]:
            await self._drop_attachment(token, root["attachment_id"])
        await self.volumes.request(
            "POST",
            f"/v3/volumes/{root['volume_id']}/action",
            token,
            headers={"OpenStack-API-Version": "volume 3.68"},
            json={"os-reimage": {"image_id": image_id, "reimage_reserved": True}},
        )
        # Cinder also sends volume-reimaged to the API; this host polls for it instead.
        await self._wait_volume(token, root["volume_id"], timeout=3600, want="reserved")
        return attachment["id"]

    async def _reserve_attachment(self, token: str, volume_id: str, instance_uuid: str) -> dict:
        """A new attachment (no connector yet) holding the volume for the server."""
        assert self.volumes is not None
        body = {"attachment": {"volume_uuid": volume_id, "instance_uuid": instance_uuid}}
        made = await self.volumes.json(
            "POST", "/v3/attachments", token, headers=VOLUME_API, json=body
        )
        return made["attachment"]

    async def _complete_attachment(self, token: str, attachment_id: str) -> None:
        assert self.volumes is not None
        await self.volumes.request(
            "POST",
            f"/v3/attachments/{attachment_id}/action",
            token,
            headers=VOLUME_API,
            json={"os-complete": None},
        )

    async def _drop_attachment(self, token: str, attachment_id: str) -> None:
        if self.volumes is None:
            return
        try:
            await self.volumes.request(
                "DELETE",
                f"/v3/attachments/{attachment_id}",
                token,
                headers=VOLUME_API,
                ok=(200, 202, 204, 404),
            )
        except Exception:  # noqa: BLE001 - best effort, logged
            LOG.warning("could not delete volume attachment %s", attachment_id)

    async def external_instance_event(self, ctx: dict, events: list[dict[str, Any]]) -> None:
        """Events the API took for this host's instances (Nova's external_instance_event):
        a network-vif-plugged one ends a build's or an attach's wait for that port."""
        for event in events:
            if (
                event.get("name") == "network-vif-plugged"
                and event.get("status") == "completed"
                and event.get("tag")
                and self.network is not None
            ):
                self.network.plugged.plugged(event["tag"])

    async def extend_volume(self, ctx: dict, instance_uuid: str, volume_id: str) -> None:
        """Block Storage grew an attached volume (the volume-extended event)."""
        event = "compute_extend_volume"
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host)
        error = None
        try:
            await self.driver.extend_volume(instance_uuid, volume_id)
        except (DriverError, GuestNotFound) as exc:
            LOG.warning("volume %s of %s: %s", volume_id, instance_uuid, exc)
            error = str(exc)
        await self.conductor.action_event(
            ctx, instance_uuid, event, host=self.host, finish=True, error=error
        )

    async def volume_snapshot_create(
        self, ctx: dict, instance_uuid: str, volume_id: str, create_info: dict
    ) -> None:
        """An assisted snapshot of an attached volume, for the Block Storage driver that
        asked (os-assisted-volume-snapshots): done by the hypervisor driver, its outcome
        reported on the Block Storage snapshot as Nova's libvirt driver reports it."""
        snapshot_id = create_info["snapshot_id"]
        try:
            await self.driver.volume_snapshot_create(instance_uuid, volume_id, create_info)
        except (DriverError, GuestNotFound) as exc:
            LOG.warning("assisted snapshot %s of volume %s: %s", snapshot_id, volume_id, exc)
            await self._snapshot_status(ctx, snapshot_id, {"status": "error"})
            return
        await self._snapshot_status(ctx, snapshot_id, {"status": "creating", "progress": "90%"})

    async def volume_snapshot_delete(
        self, ctx: dict, instance_uuid: str, volume_id: str, snapshot_id: str, delete_info: dict
    ) -> None:
        try:
            await self.driver.volume_snapshot_delete(
                instance_uuid, volume_id, snapshot_id, delete_info
            )
        except (DriverError, GuestNotFound) as exc:
            LOG.warning("deleting assisted snapshot %s of %s: %s", snapshot_id, volume_id, exc)
            await self._snapshot_status(ctx, snapshot_id, {"status": "error_deleting"})
            return
        await self._snapshot_status(ctx, snapshot_id, {"status": "deleting", "progress": "90%"})

    async def _snapshot_status(self, ctx: dict, snapshot_id: str, status: dict) -> None:
        """os-update_snapshot_status with the caller's token (the volume driver's service
        user); a snapshot Block Storage does not know is only logged."""
        if self.volumes is None:
            return
        try:
            await self.volumes.request(
                "POST",
                url_path("/v3/snapshots/{}/action", snapshot_id),
                ctx.get("auth_token") or "",
                headers=VOLUME_API,
                json={"os-update_snapshot_status": status},
                ok=(202,),
            )
        except ServiceError as exc:
            LOG.warning("snapshot %s: status %s not recorded: %s", snapshot_id, status, exc)

    async def detach_volume(
        self, ctx: dict, instance_uuid: str, volume_id: str, attachment_id: str
    ) -> None:
        async with self._instance_lock(instance_uuid):
            # A swap that ran meanwhile gave the volume another attachment.
            bdms = await self.conductor.block_devices(ctx, instance_uuid)
            bdm = next((b for b in bdms if b["volume_id"] == volume_id), None)
            if bdm is not None and bdm["attachment_id"]:
                attachment_id = bdm["attachment_id"]
            await self._detach_volume(ctx, instance_uuid, volume_id, attachment_id)

    async def _detach_volume(
        self, ctx: dict, instance_uuid: str, volume_id: str, attachment_id: str
    ) -> None:
        token = ctx.get("auth_token") or ""
        event = "compute_detach_volume"
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host)
        error = None
        try:
            await self.driver.detach_volume(instance_uuid, volume_id)
        except GuestNotFound:
            pass
        except DriverError as exc:
            error = str(exc)
        if error is None:
            await self._drop_attachment(token, attachment_id)
            await self.conductor.volume_detached(ctx, instance_uuid, volume_id)
            await self._refresh_device_metadata(ctx, instance_uuid)
        await self.conductor.action_event(
            ctx, instance_uuid, event, host=self.host, finish=True, error=error
        )

    # -- interfaces (api-ref: Port interfaces) ------------------------------------------

    async def attach_interface(
        self, ctx: dict, instance_uuid: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        """A port (made on a network, or the one given) bound here and plugged in."""
        if self.network is None:
            raise DriverError("this compute host has no Network service")
        token = ctx.get("auth_token") or ""
        event = "compute_attach_interface"
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host)
        inst = await self.conductor.instance_update(ctx, instance_uuid, {})
        try:
            info = await self.network.allocate_for_instance(
                token, {**inst, "requested_networks": [request]}, self.host
            )
            try:
                await self.network.wait_for_wiring(token, info, self.options.vif_plugging_timeout)
                await self.driver.attach_interface(instance_uuid, vifs_from_info(info)[0])
            except Exception:
                await self.network.deallocate_for_instance(token, info)
                raise
            current = (await self.conductor.instance_update(ctx, instance_uuid, {}))[
                "network_info"
            ] or []
            await self.conductor.instance_update(
                ctx, instance_uuid, {"network_info": [*current, *info]}
            )
            await self._refresh_device_metadata(ctx, instance_uuid)
        except Exception as exc:
            await self.conductor.action_event(
                ctx, instance_uuid, event, host=self.host, finish=True, error=str(exc)
            )
            raise
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host, finish=True)
        return info[0]

    async def detach_interface(self, ctx: dict, instance_uuid: str, port_id: str) -> None:
        token = ctx.get("auth_token") or ""
        event = "compute_detach_interface"
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host)
        error = None
        try:
            inst = await self.conductor.instance_update(ctx, instance_uuid, {})
            info = inst["network_info"] or []
            entry = next(e for e in info if e["port_id"] == port_id)
            await self.driver.detach_interface(instance_uuid, port_id)
            if self.network is not None:
                await self.network.deallocate_for_instance(token, [entry])
            await self.conductor.instance_update(
                ctx, instance_uuid, {"network_info": [e for e in info if e is not entry]}
            )
            await self._refresh_device_metadata(ctx, instance_uuid)
        except Exception as exc:  # noqa: BLE001 - recorded on the action
            error = str(exc) or type(exc).__name__
        await self.conductor.action_event(
            ctx, instance_uuid, event, host=self.host, finish=True, error=error
        )

    async def get_vnc_console(
        self, ctx: dict, instance_uuid: str, relay_ttl: int | None = None
    ) -> dict[str, Any]:
        return await self._console(instance_uuid, "vnc", relay_ttl)

    async def get_spice_console(
        self, ctx: dict, instance_uuid: str, relay_ttl: int | None = None
    ) -> dict[str, Any]:
        return await self._console(instance_uuid, "spice", relay_ttl)

    async def get_serial_console(
        self, ctx: dict, instance_uuid: str, relay_ttl: int | None = None
    ) -> dict[str, Any]:
        return await self._console(instance_uuid, "serial", relay_ttl)

    async def _console(self, uuid: str, kind: str, relay_ttl: int | None) -> dict[str, Any]:
        """Where the guest's console is: for a proxy on another host (relay_ttl, its
        token's life) a TCP port here relayed to it, else the guest's own socket."""
        if relay_ttl:
            return await self.driver.relay_console(uuid, kind, relay_ttl)
        return await getattr(self.driver, f"get_{kind}_console")(uuid)

    async def set_admin_password(self, ctx: dict, instance_uuid: str, password: str) -> None:
        event = "compute_set_admin_password"
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host)
        try:
            await self.driver.set_admin_password(instance_uuid, password)
        except Exception as exc:
            await self.conductor.action_event(
                ctx, instance_uuid, event, host=self.host, finish=True, error=str(exc)
            )
            raise
        await self.conductor.action_event(ctx, instance_uuid, event, host=self.host, finish=True)

    async def get_diagnostics(self, ctx: dict, instance_uuid: str) -> dict[str, Any]:
        """The 2.48 diagnostics model, from what the hypervisor reports."""
        info = await self.driver.get_info(instance_uuid)
        resources = await self.driver.get_available_resource()
        instances = {i["uuid"]: i for i in await self.conductor.instances_on_host(ctx, self.host)}
        inst = instances.get(instance_uuid) or {}
        nics = inst.get("network_info") or []
        return {
            "state": info.state.name.lower(),
            "driver": type(self.driver).__name__.removesuffix("Driver").lower(),
            "hypervisor": resources.hypervisor_type.lower(),
            "hypervisor_os": "linux",
            "uptime": None,
            "config_drive": bool(inst.get("config_drive") or self.options.force_config_drive),
            "num_cpus": info.num_cpu,
            "num_nics": len(nics),
            "num_disks": 1 + len(await self.conductor.block_devices(ctx, instance_uuid)),
            "memory_details": {"maximum": info.max_mem_kb // 1024, "used": info.mem_kb // 1024},
            "cpu_details": [{"id": 0, "time": info.cpu_time_ns, "utilisation": None}],
            "nic_details": [
                {
                    "mac_address": n["mac"],
                    "rx_octets": None,
                    "rx_errors": None,
                    "rx_drop": None,
                    "rx_packets": None,
                    "rx_rate": None,
                    "tx_octets": None,
                    "tx_errors": None,
                    "tx_drop": None,
                    "tx_packets": None,
                    "tx_rate": None,
                }
                for n in nics
            ],
            "disk_details": [],
        }

    async def confirm_resize(self, ctx: dict, instance_uuid: str) -> None:
        await self.driver.confirm_resize(instance_uuid)

    async def cache_images(self, ctx: dict, image_ids: list[str]) -> dict[str, str]:
        """Fetch images into this host's image cache before any boot needs them (2.81);
        each image's outcome: cached, existing or error (one failure stops no other)."""
        token = ctx.get("auth_token") or ""
        results: dict[str, str] = {}
        for image_id in image_ids:
            try:
                results[image_id] = await self.image_cache.precache(token, image_id)
            except Exception as exc:  # noqa: BLE001 - reported per image, as Nova's
                LOG.warning("pre-caching image %s on %s failed: %s", image_id, self.host, exc)
                results[image_id] = "error"
        return results

    async def get_host_uptime(self, ctx: dict) -> str:
        return host_uptime()

    async def get_console_output(self, ctx: dict, instance_uuid: str, length: int | None) -> str:
        output = await self.driver.get_console_output(instance_uuid)
        if length is not None:
            # Nova's tail: the last `length` pieces between newlines (a trailing one counts).
            output = "\n".join(output.split("\n")[-length:]) if length > 0 else ""
        return output
