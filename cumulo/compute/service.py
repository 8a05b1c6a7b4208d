"""What the Compute REST layer calls: checks, database records, casts (Nova's compute/api.py).

Every server action is declared with the states it accepts (states.check_state);
an action in another state raises InstanceInvalidState, which the API answers 409.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig
from cumulo.common.context import RequestContext
from cumulo.common.db import Database, utcnow
from cumulo.common.faults import BadRequest, Conflict, Forbidden, NotFound, NotImplementedYet
from cumulo.common.policy import Policy
from cumulo.common.rpc import RemoteError, Transport
from cumulo.common.service_client import ServiceClient, ServiceError, url_path
from cumulo.compute import image_properties, personality, quotas, rpcapi, vtpm
from cumulo.compute.block_device import image_defined_mappings, merge_image_mappings
from cumulo.compute.image_signature import with_trusted_certs
from cumulo.compute.models import (
    BlockDeviceMapping,
    Flavor,
    FlavorProject,
    Instance,
    InstanceAction,
    InstanceFault,
    KeyPair,
    ServerGroup,
    ServerGroupMember,
)
from cumulo.compute.models import ComputeService as ServiceRecord
from cumulo.compute.network import (
    NETWORK_AMBIGUOUS,
    available_networks,
    can_auto_allocate,
    unable_to_auto_allocate,
)
from cumulo.compute.policies import COMPUTE_RULES
from cumulo.compute.scheduler.claims import COMPUTE_BINARY, release
from cumulo.compute.service_moves import BOOT_PROPERTIES, ServerMoves
from cumulo.compute.service_snapshots import VolumeBackedSnapshots
from cumulo.compute.states import TaskState, VmState, check_state
from cumulo.compute.virt.driver import MACHINE_TYPE_KEY

LOG = logging.getLogger(__name__)
BDM_SOURCES = ("volume", "image", "snapshot", "blank")
BDM_DESTINATIONS = ("local", "volume")
# Nova's BlockDeviceType and DiskBus fields (what a mapping may ask for; the host's
# driver says what it can give: the QEMU driver disk/lun on virtio/scsi).
BDM_DEVICE_TYPES = ("cdrom", "disk", "floppy", "fs", "lun")
BDM_DISK_BUSES = ("fdc", "ide", "sata", "scsi", "usb", "virtio", "xen", "lxc", "uml")


def _check_bus_and_type(raw: dict[str, Any]) -> tuple[str | None, str | None]:
    """A mapping's disk_bus and device_type: absent, or one of Nova's values (400)."""
    found = []
    for attribute, allowed in (("disk_bus", BDM_DISK_BUSES), ("device_type", BDM_DEVICE_TYPES)):
        value = raw.get(attribute)
        if value is not None and value not in allowed:
            raise BadRequest(
                f"Invalid input for field/attribute {attribute}. Value: {value}. "
                f"'{value}' is not one of {list(allowed)}"
            )
        found.append(value)
    return found[0], found[1]


GiB = 1024**3
# The system metadata key recording OS-DCF:diskConfig AUTO (Nova's auto_disk_config).
AUTO_DISK_CONFIG = "auto_disk_config"
_IMAGE_SYSMETA = ("name", "min_ram", "min_disk", "disk_format", "container_format")
_HOSTNAME_SEPARATORS = re.compile(r"[ _.]")
# ASCII word characters only (Nova's pattern keeps Unicode letters: not RFC 952 names).
_HOSTNAME_BAD = re.compile(r"[^\w.-]+", re.ASCII)


def _check_volume_fits_image(volume: dict[str, Any], image: dict[str, Any]) -> None:
    """A root volume reimaged from `image` must hold it (Nova's VolumeSmallerThanMinDisk)."""
    size = volume["size"] * GiB
    needed = max((image.get("min_disk") or 0) * GiB, image.get("virtual_size") or 0)
    if size < needed:
        raise BadRequest(
            "Volume is smaller than the minimum size specified in image metadata. Volume "
            f"size is {size} bytes, minimum size is {needed} bytes."
        )


def sanitize_hostname(name: str, default: str = "server") -> str:
    """The hostname made from a display name, as Nova's utils.sanitize_hostname (what a
    server has unless 2.90's `hostname` is given): at most 63 characters kept, spaces,
    underscores and dots become hyphens (`a.b.com` is `a-b-com`), anything but ASCII
    letters, digits and hyphens dropped, lowercased, no hyphen or dot at either end;
    `default` when nothing is left (Nova's `Server-<uuid>`)."""
    host = _HOSTNAME_BAD.sub("", _HOSTNAME_SEPARATORS.sub("-", name[:63]))
    return host.lower().strip(".-") or default


def flavor_snapshot(flavor: Flavor) -> dict[str, Any]:
    """The flavor as an instance keeps it (later flavor changes do not move servers)."""
    return {
        "id": flavor.flavorid,
        "name": flavor.name,
        "vcpus": flavor.vcpus,
        "memory_mb": flavor.memory_mb,
        "root_gb": flavor.root_gb,
        "ephemeral_gb": flavor.ephemeral_gb,
        "swap": flavor.swap,
        "extra_specs": dict(flavor.extra_specs or {}),
    }


@dataclass
class CreateRequest:
    """A validated server create request (the REST layer fills it from the body)."""

    name: str
    flavor_ref: str
    image_ref: str | None
    networks: str | list[dict[str, str]]
    key_name: str | None = None
    user_data: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    security_groups: list[str] = field(default_factory=lambda: ["default"])
    availability_zone: str | None = None
    config_drive: bool = False
    admin_pass: str | None = None
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    min_count: int = 1
    max_count: int = 1
    access_ip_v4: str | None = None
    access_ip_v6: str | None = None
    server_group: str | None = None
    # Scheduler hints: servers to share a host with / to stay away from.
    same_host: list[str] = field(default_factory=list)
    different_host: list[str] = field(default_factory=list)
    # Every hint given, as the server keeps them (each a list of strings).
    scheduler_hints: dict[str, list[str]] = field(default_factory=dict)
    block_device_mapping: list[dict[str, Any]] = field(default_factory=list)
    auto_disk_config: bool = False
    # 2.90: the guest's hostname, instead of one made from the name.
    hostname: str | None = None
    # Personality (below 2.57): (path, base64 contents) of the files the guest is given.
    injected_files: list[tuple[str, str]] = field(default_factory=list)
    # 2.63: certificates the image's signing certificate must chain up to.
    trusted_certs: list[str] | None = None


_INSERT_INSTANCE = insert(Instance.__table__)
_INSERT_ACTION = insert(InstanceAction.__table__)
_FLAVOR = select(Flavor.__table__).where(Flavor.__table__.c.flavorid == bindparam("b_id"))
_FLAVOR_MEMBER = select(FlavorProject.flavor_id).where(
    FlavorProject.flavor_id == bindparam("b_id"), FlavorProject.project_id == bindparam("b_project")
)


def _flavor_and_access(s: Session, flavor_id: str, project_id: str | None):
    """The flavor as a row (or None), and whether the project was given access to it."""
    conn = s.connection()
    flavor = conn.execute(_FLAVOR, {"b_id": flavor_id}).first()
    member = (
        flavor is not None
        and not flavor.is_public
        and conn.execute(_FLAVOR_MEMBER, {"b_id": flavor.id, "b_project": project_id}).first()
        is not None
    )
    return flavor, member


def _live_instance(s: Session, server_id: str) -> Instance | None:
    return s.scalar(select(Instance).where(Instance.uuid == server_id, Instance.deleted.is_(False)))


def _key_and_group(s: Session, user_id: str, key_name: str | None, group_uuid: str | None):
    key = group = None
    if key_name:
        key = s.scalar(select(KeyPair).where(KeyPair.user_id == user_id, KeyPair.name == key_name))
    if group_uuid:
        group = s.scalar(select(ServerGroup).where(ServerGroup.uuid == group_uuid))
    return key, group


class ComputeService(ServerMoves, VolumeBackedSnapshots):
    def __init__(
        self,
        config: CumuloConfig,
        state_dir: Path,
        db: Database,
        bus: Transport,
        validator: TokenValidator,
        images: ServiceClient | None,
        networks: ServiceClient | None,
        volumes: ServiceClient | None = None,
        *,
        key_manager: ServiceClient | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.db = db
        self.bus = bus
        self.validator = validator
        self.images = images
        self.networks = networks
        self.volumes = volumes
        # The Key Manager: a vTPM secret goes with a server deleted here (its host down).
        self.key_manager = key_manager
        self.policy = Policy(COMPUTE_RULES, state_dir / config.policy_file)
        self.conductor = rpcapi.ConductorAPI(bus)
        self.compute_rpc = rpcapi.ComputeAPI(bus)
        # The compute hosts running in this process, beside its console proxies (the
        # all-in-one cloud's): their guests' console sockets are the proxies' to open.
        self.local_hosts: set[str] = set()

    # -- lookups --------------------------------------------------------------------

    async def get_instance(self, ctx: RequestContext, server_id: str, rule: str) -> Instance:
        """The server, if the caller may see it: another project's server is a 404."""
        inst = await self.db.run_read(_live_instance, server_id)
        if inst is None or not self.policy.check(rule, ctx, {"project_id": inst.project_id}):
            raise NotFound(f"Instance {server_id} could not be found.")
        return inst

    async def find_flavor(self, ctx: RequestContext, flavor_ref: str) -> Flavor:
        flavor_id = flavor_ref.rstrip("/").rsplit("/", 1)[-1]
        flavor, member = await self.db.run_read(_flavor_and_access, flavor_id, ctx.project_id)
        allowed = flavor is not None and (
            flavor.is_public or member or self.policy.check("cloud_admin", ctx)
        )
        if flavor is None or flavor.disabled or not allowed:
            raise BadRequest(f"Flavor {flavor_id} could not be found.")
        return flavor

    async def _image(self, ctx: RequestContext, image_ref: str) -> dict[str, Any]:
        image_id = image_ref.rstrip("/").rsplit("/", 1)[-1]
        if self.images is None:
            raise BadRequest("This cloud has no Image service: boot from an image is not possible.")
        try:
            image = await self.images.json(
                "GET", url_path("/v2/images/{}", image_id), ctx.auth_token
            )
        except ServiceError as exc:
            if exc.status == 404:
                raise BadRequest(f"Image {image_id} could not be found.") from None
            raise
        if image.get("status") != "active":
            raise BadRequest(f"Image {image_id} is not active.")
        return image

    async def cache_images(
        self, ctx: RequestContext, hosts: list[str], image_ids: list[str]
    ) -> None:
        """Pre-cache images on an aggregate's hosts (2.81): every image must exist (400
        otherwise) before any host is asked; hosts that are down are skipped."""
        if self.images is None:
            raise BadRequest("This cloud has no Image service to cache images from.")
        for image_id in image_ids:
            try:
                await self.images.json("GET", url_path("/v2/images/{}", image_id), ctx.auth_token)
            except ServiceError as exc:
                if exc.status == 404:
                    raise BadRequest(f"Image {image_id} could not be found.") from None
                raise
        up = [host for host in hosts if await self._host_up(host)]
        for host in sorted(set(hosts) - set(up)):
            LOG.info("skipping image pre-cache on %s: its compute service is down", host)
        if up:
            await self.conductor.cache_images(self.rpc_context(ctx), up, image_ids)

    @staticmethod
    def _check_flavor_fits_image(flavor: Flavor, image: dict[str, Any]) -> None:
        if flavor.memory_mb < int(image.get("min_ram") or 0):
            raise BadRequest("Flavor's memory is too small for requested image.")
        # Nova's get_secure_boot_constraint (FlavorImageConflict, 400).
        wanted = (flavor.extra_specs or {}).get("os:secure_boot"), image.get("os_secure_boot")
        if all(wanted) and wanted[0] != wanted[1]:
            raise BadRequest(
                "Conflicting values for secure_boot found in the flavor "
                f"({wanted[0]}) and the image ({wanted[1]})."
            )
        if flavor.root_gb:
            size = int(image.get("size") or 0)
            if size > flavor.root_gb * GiB:
                raise BadRequest(
                    "Flavor's disk is too small for requested image. Flavor disk is "
                    f"{flavor.root_gb * GiB} bytes, image is {size} bytes."
                )
            if int(image.get("min_disk") or 0) > flavor.root_gb:
                raise BadRequest(
                    "Flavor's disk is too small for requested image. Flavor disk is "
                    f"{flavor.root_gb * GiB} bytes, minimum disk is {image['min_disk']} GiB."
                )

    @staticmethod
    def _check_vtpm(flavor: Flavor, image: dict[str, Any] | None) -> set[str]:
        """Nova's get_vtpm_constraint at the API (400 with its message): the traits a
        host needs for the TPM asked for, none when none is."""
        extra_specs = flavor.extra_specs or {}
        try:
            config = vtpm.vtpm_constraint(
                extra_specs, image or {}, flavor.name, (image or {}).get("name") or ""
            )
        except vtpm.VTPMInvalid as exc:
            raise BadRequest(str(exc)) from None
        return vtpm.required_traits(config, extra_specs)

    async def _check_networks(self, ctx: RequestContext, networks) -> list | str:
        if networks == "none":
            return "none"
        if self.networks is None:
            raise BadRequest(
                "This cloud has no Network service: create servers with networks 'none'."
            )
        if networks in ("auto", []):
            await self._check_unnamed_network(ctx, auto=networks == "auto")
            return networks
        for req in networks:
            try:
                if req.get("port"):
                    port = (
                        await self.networks.json(
                            "GET", url_path("/v2.0/ports/{}", req["port"]), ctx.auth_token
                        )
                    )["port"]
                    if port.get("device_id"):
                        raise Conflict(f"Port {req['port']} is still in use.")
                else:
                    await self.networks.json(
                        "GET", url_path("/v2.0/networks/{}", req["uuid"]), ctx.auth_token
                    )
            except ServiceError as exc:
                if exc.status == 404:
                    what = f"Port {req['port']}" if req.get("port") else f"Network {req['uuid']}"
                    raise BadRequest(f"{what} could not be found.") from None
                raise
        return networks

    async def _check_unnamed_network(self, ctx: RequestContext, auto: bool) -> None:
        """Nova's validate_networks when no network is named: more than one the project
        can use is ambiguous (409); none is fine unless "auto" asks for one that
        Neutron's auto-allocated topology cannot give (400)."""
        assert self.networks is not None
        project_id = ctx.project_id or ""
        nets = await available_networks(self.networks, ctx.auth_token, project_id, auto)
        if len(nets) > 1:
            raise Conflict(NETWORK_AMBIGUOUS)
        if (
            not nets
            and auto
            and not await can_auto_allocate(self.networks, ctx.auth_token, project_id)
        ):
            raise BadRequest(unable_to_auto_allocate(project_id))

    async def _availability_zone(self, ctx: RequestContext, requested: str | None):
        """'az', 'az:host' or 'az:host:node'; forcing a host is for admins."""
        if not requested:
            return None, []
        az, _, rest = requested.partition(":")
        host = rest.partition(":")[0]
        if host and not self.policy.check("compute:servers:create:forced_host", ctx):
            raise Forbidden(
                "Policy doesn't allow compute:servers:create:forced_host to be performed."
            )
        async with self.db.read() as s:
            zones = set(
                await s.scalars(
                    select(ServiceRecord.availability_zone).where(
                        ServiceRecord.binary == COMPUTE_BINARY
                    )
                )
            )
        if az and az not in zones | {"nova"}:
            raise BadRequest("The requested availability zone is not available")
        return az or None, [host] if host else []

    # -- create -------------------------------------------------------------------------

    async def create_servers(
        self, ctx: RequestContext, req: CreateRequest
    ) -> tuple[list[Instance], str, str]:
        """Validate, record the instances and their actions, cast to the conductor."""
        self.policy.enforce("compute:servers:create", ctx, {"project_id": ctx.project_id})
        if not ctx.project_id:
            raise Forbidden("Servers are created with a project-scoped token.")
        flavor = await self.find_flavor(ctx, req.flavor_ref)
        image: dict[str, Any] | None = None
        boot_image = await self._merge_image_bdms(ctx, req)
        volume_bdms = await self._check_volume_bdms(ctx, req)
        boot_from_volume = any(b["boot_index"] == 0 for b in volume_bdms)
        if boot_from_volume:
            root = next(b for b in volume_bdms if b["boot_index"] == 0)
            if root["source_type"] == "image":
                same = boot_image is not None and boot_image["id"] == root["image_id"]
                image = boot_image if same else await self._image(ctx, root["image_id"])
            elif root["source_type"] == "snapshot":
                image = boot_image  # the snapshot image's properties (Nova's boot_meta)
            if image is not None and int(image.get("min_disk") or 0) > root["volume_size"]:
                raise BadRequest(
                    "Volume is smaller than the minimum size specified in image metadata."
                )
            req.image_ref = None
            if req.trusted_certs:
                raise BadRequest(
                    "Image certificate validation is not supported when booting from volume"
                )
        elif not req.image_ref:
            raise BadRequest("Missing imageRef attribute")
        else:
            image = boot_image or await self._image(ctx, req.image_ref)
            self._check_flavor_fits_image(flavor, image)
        tpm_traits = self._check_vtpm(flavor, image)
        networks = await self._check_networks(ctx, req.networks)
        az, force_hosts = await self._availability_zone(ctx, req.availability_zone)
        key_data, group = None, None
        if req.key_name or req.server_group:
            key, group = await self.db.run_read(
                _key_and_group, ctx.user_id, req.key_name, req.server_group
            )
            if req.key_name:
                if key is None:
                    raise BadRequest("Invalid key_name provided.")
                key_data = key.public_key
            if req.server_group and (group is None or group.project_id != ctx.project_id):
                raise BadRequest(f"Invalid server group {req.server_group}")
        await self._check_injected_files(ctx, req.injected_files)
        admin_pass = req.admin_pass or secrets.token_urlsafe(9)
        reservation_id = f"r-{secrets.token_hex(4)}"
        snapshot = flavor_snapshot(flavor)

        def record(s: Session) -> list[Instance]:
            """Quota check and the records, one transaction (in one database call)."""
            count = self._count_within_quota(s, ctx, req, flavor)
            instances: list[Instance] = []
            for index in range(count):
                name = req.name if req.max_count == 1 else f"{req.name}-{index + 1}"
                server_uuid = str(uuid.uuid4())
                values = dict(
                    uuid=server_uuid,
                    display_name=name,
                    display_description=req.description,
                    hostname=req.hostname or sanitize_hostname(name, f"Server-{server_uuid}"),
                    project_id=ctx.project_id,
                    user_id=ctx.user_id,
                    image_ref=image["id"] if image and not boot_from_volume else None,
                    flavor=snapshot,
                    vcpus=flavor.vcpus,
                    memory_mb=flavor.memory_mb,
                    vm_state=VmState.BUILDING,
                    task_state=TaskState.SCHEDULING,
                    power_state=0,
                    availability_zone=az,
                    pinned_availability_zone=az,
                    key_name=req.key_name,
                    key_data=key_data,
                    user_data=req.user_data,
                    config_drive=req.config_drive,
                    access_ip_v4=req.access_ip_v4,
                    access_ip_v6=req.access_ip_v6,
                    reservation_id=reservation_id,
                    launch_index=index,
                    requested_networks=networks,
                    security_groups=req.security_groups,
                    metadata_items=dict(req.metadata),
                    tags=list(req.tags),
                    server_group_id=group.uuid if group else None,
                    scheduler_hints=dict(req.scheduler_hints),
                    system_metadata=personality.with_files(
                        with_trusted_certs(
                            {
                                **{
                                    "image_" + k: str(v)
                                    for k, v in (image or {}).items()
                                    if k in _IMAGE_SYSMETA
                                },
                                **image_properties.sysmeta_of(image or {}),
                                **({AUTO_DISK_CONFIG: "True"} if req.auto_disk_config else {}),
                                # The booting user's roles, for dynamic vendordata (as Nova).
                                "boot_roles": ",".join(sorted(ctx.roles)),
                            },
                            req.trusted_certs,
                        ),
                        req.injected_files,
                    ),
                    created_at=utcnow(),
                )
                # Core inserts (the records of every boot); the caller gets the values.
                conn = s.connection()
                conn.execute(_INSERT_INSTANCE, values)
                conn.execute(
                    _INSERT_ACTION,
                    {
                        "instance_uuid": values["uuid"],
                        "request_id": ctx.request_id,
                        "action": "create",
                        "project_id": ctx.project_id,
                        "user_id": ctx.user_id,
                        "start_time": values["created_at"],
                    },
                )
                inst = Instance(**values)
                if group is not None:
                    s.add(ServerGroupMember(group_id=group.id, instance_uuid=inst.uuid))
                for bdm in volume_bdms:
                    s.add(BlockDeviceMapping(instance_uuid=inst.uuid, **bdm))
                instances.append(inst)
            s.flush()
            return instances

        instances = await self.db.run_write(record)
        image_props = {
            k: v
            for k, v in (image or {}).items()
            if k in ("hypervisor_type", "architecture", "hw_architecture", "img_hv_type")
        }
        spec = {
            "flavor": snapshot,
            "image_properties": image_props,
            "availability_zone": az,
            "force_hosts": force_hosts,
            "server_group": group.uuid if group else None,
            "same_host": req.same_host,
            "different_host": req.different_host,
            "boot_from_volume": boot_from_volume,
            "required_traits": sorted(tpm_traits),
            # Travels to the host for the config drive; never stored.
            "admin_password": admin_pass,
            # The image record as read here: the host does not read it again.
            "image": image if image and not boot_from_volume else None,
            # Whether the host has volume mappings to read and attach.
            "block_devices": bool(volume_bdms),
        }
        uuids = [i.uuid for i in instances]
        try:
            await self.conductor.build_instances(self.rpc_context(ctx), uuids, spec)
        except Exception:
            # The builds never started (the bus is away): the client is told the request
            # failed, so no server of it is left behind.
            await self.db.run_write(_forget_instances, uuids)
            raise
        return instances, reservation_id, admin_pass

    async def _merge_image_bdms(
        self, ctx: RequestContext, req: CreateRequest
    ) -> dict[str, Any] | None:
        """The image booted (`imageRef`, else the request's root image mapping), with its
        own block device mappings (a volume-backed server's snapshot) merged into the
        request as Nova's _check_and_transform_bdm merges them."""
        image_ref = req.image_ref or next(
            (
                b.get("uuid")
                for b in req.block_device_mapping
                if isinstance(b, dict)
                and b.get("source_type") == "image"
                and str(b.get("boot_index")) == "0"
            ),
            None,
        )
        if not isinstance(image_ref, str) or not image_ref:
            return None
        image = await self._image(ctx, image_ref)
        mappings = image_defined_mappings(image)
        if mappings:
            req.block_device_mapping = merge_image_mappings(req.block_device_mapping, mappings)
        return image

    async def _check_volume_bdms(
        self, ctx: RequestContext, req: CreateRequest
    ) -> list[dict[str, Any]]:
        """block_device_mapping_v2: the volume mappings to record (image-to-local ones
        only name the image to boot)."""
        volumes: list[dict[str, Any]] = []
        for raw in req.block_device_mapping:
            if not isinstance(raw, dict):
                raise BadRequest("Invalid input for field/attribute block_device_mapping_v2.")
            source = raw.get("source_type")
            destination = raw.get("destination_type") or (
                "local" if source == "image" else "volume"
            )
            # Nova's schema: both are enums (400 before anything is looked up).
            for attribute, value, allowed in (
                ("source_type", source, BDM_SOURCES),
                ("destination_type", destination, BDM_DESTINATIONS),
            ):
                if value is not None and value not in allowed:
                    raise BadRequest(
                        f"Invalid input for field/attribute {attribute}. Value: {value}. "
                        f"'{value}' is not one of {list(allowed)}"
                    )
            try:
                boot_index = (
                    int(raw["boot_index"])
                    if raw.get("boot_index") not in (None, "none", "")
                    else None
                )
            except (TypeError, ValueError):
                raise BadRequest("Invalid input for field/attribute boot_index.") from None
            disk_bus, device_type = _check_bus_and_type(raw)
            if destination == "local":
                if source == "image" and boot_index == 0:
                    req.image_ref = req.image_ref or raw.get("uuid")
                    continue
                if source == "blank":
                    continue  # ephemeral/swap disks come from the flavor
                raise BadRequest(f"Mapping {source} to a local disk is not supported.")
            if self.volumes is None:
                raise BadRequest("This cloud has no Block Storage service.")
            size = raw.get("volume_size")
            if source in ("image", "blank") or (source == "snapshot" and size is not None):
                try:
                    size = int(size)
                except (TypeError, ValueError):
                    raise BadRequest(
                        "volume_size is required (a positive integer) to create a volume."
                    ) from None
                if size < 1:
                    raise BadRequest("volume_size must be at least 1.")
                if size > 2**31 - 1:  # Nova's db.MAX_INT: what a database column holds
                    raise BadRequest(
                        f"volume_size {size} is greater than the maximum of 2147483647."
                    )
            if source == "volume":
                try:
                    vol = (
                        await self.volumes.json(
                            "GET",
                            url_path("/v3/volumes/{}", raw.get("uuid")),
                            ctx.auth_token,
                            headers={"OpenStack-API-Version": "volume 3.44"},
                        )
                    )["volume"]
                except ServiceError as exc:
                    if exc.status == 404:
                        raise BadRequest(f"Volume {raw.get('uuid')} could not be found.") from None
                    raise
                if vol["status"] != "available":
                    raise BadRequest(f"Invalid volume: volume {vol['id']} is {vol['status']}.")
                if boot_index == 0 and str(vol.get("bootable")).lower() != "true":
                    raise BadRequest(f"Block Device {vol['id']} is not bootable.")
            if source == "snapshot":
                size = size or (await self._bdm_snapshot(ctx, raw.get("uuid")))["size"]
            volumes.append(
                {
                    "source_type": source,
                    "destination_type": "volume",
                    "boot_index": boot_index,
                    "device_name": raw.get("device_name"),
                    "image_id": raw.get("uuid") if source == "image" else None,
                    "volume_id": raw.get("uuid") if source == "volume" else None,
                    "snapshot_id": raw.get("uuid") if source == "snapshot" else None,
                    "volume_size": size,
                    "delete_on_termination": bool(raw.get("delete_on_termination", False)),
                    "tag": raw.get("tag"),
                    "disk_bus": disk_bus,
                    "device_type": device_type,
                }
            )
        if sum(1 for b in volumes if b["boot_index"] == 0) > 1:
            raise BadRequest(
                "Boot sequence for the instance and image/block device mapping "
                "combination is not valid."
            )
        return volumes

    async def _bdm_snapshot(self, ctx: RequestContext, snapshot_id: Any) -> dict[str, Any]:
        """A `snapshot` mapping's Block Storage snapshot, if the caller may read it (400
        otherwise, Nova's InvalidBDMSnapshot)."""
        assert self.volumes is not None
        refused = BadRequest(
            f"Block Device Mapping is Invalid: failed to get snapshot {snapshot_id}."
        )
        if not isinstance(snapshot_id, str) or not snapshot_id:
            raise refused
        try:
            path = url_path("/v3/snapshots/{}", snapshot_id)
            return (await self.volumes.json("GET", path, ctx.auth_token))["snapshot"]
        except ServiceError as exc:
            if exc.status >= 500:
                raise
            raise refused from None

    @staticmethod
    def _count_within_quota(
        s: Session, ctx: RequestContext, req: CreateRequest, flavor: Flavor
    ) -> int:
        """As many instances as the quota allows, up to max_count; 403 under min_count.
        Found by bisection: a max_count of a billion costs some thirty checks."""

        def needs(count: int) -> dict[str, int]:
            return {
                "instances": count,
                "cores": count * flavor.vcpus,
                "ram": count * flavor.memory_mb,
            }

        try:
            quotas.check(s, ctx.project_id, needs(req.min_count))
        except quotas.QuotaExceeded as exc:
            raise Forbidden(str(exc)) from None
        low, high = req.min_count, req.max_count  # low fits; the most that fits is in between
        while low < high:
            middle = (low + high + 1) // 2
            try:
                quotas.check(s, ctx.project_id, needs(middle))
                low = middle
            except quotas.QuotaExceeded:
                high = middle - 1
        return low

    async def _check_injected_files(
        self, ctx: RequestContext, files: list[tuple[str, str]]
    ) -> None:
        """Personality files within the project's injected_file* quotas (403 as Nova)."""
        if not files:
            return
        limits = await self.db.run_read(quotas.limits, ctx.project_id)
        try:
            personality.check_quota(limits, files)
        except personality.PersonalityLimitExceeded as exc:
            raise Forbidden(str(exc)) from None

    @staticmethod
    def rpc_context(ctx: RequestContext) -> dict[str, Any]:
        return ctx.to_dict()

    # -- delete ---------------------------------------------------------------------------

    async def _record_action(self, ctx: RequestContext, inst: Instance, action: str) -> None:
        async with self.db.write() as s:
            s.add(
                InstanceAction(
                    instance_uuid=inst.uuid,
                    request_id=ctx.request_id,
                    action=action,
                    project_id=inst.project_id,
                    user_id=ctx.user_id,
                )
            )

    def _check_lock(self, ctx: RequestContext, inst: Instance) -> None:
        if inst.locked and not self.policy.check("cloud_admin", ctx):
            raise Conflict(f"Instance {inst.uuid} is locked")

    async def _set_task(self, inst: Instance, task: str, expected: set[str | None]) -> None:
        """Compare-and-swap the task state, so two actions never run at once."""
        allowed = [t for t in expected if t is not None]
        cond = Instance.task_state.in_(allowed)
        if None in expected:
            cond = cond | Instance.task_state.is_(None)
        async with self.db.write() as s:
            result = await s.execute(
                update(Instance)
                .where(
                    Instance.uuid == inst.uuid,
                    Instance.deleted.is_(False),
                    Instance.vm_state == inst.vm_state,
                    cond,
                )
                .values(task_state=task, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        if result.rowcount != 1:
            raise Conflict(f"Cannot change instance {inst.uuid}: another action changed it first.")

    async def delete(self, ctx: RequestContext, inst: Instance) -> None:
        """DELETE /servers/{id}: allowed in any state, even while building."""
        self._check_lock(ctx, inst)
        host_up = bool(inst.host) and await self._host_up(inst.host)
        if inst.task_state == TaskState.DELETING and host_up:
            return
        await self._record_action(ctx, inst, "delete")
        # A build moves on while the delete is asked (scheduling, networking, spawning):
        # the delete takes the instance as it is now rather than failing with 409.
        for attempt in range(10):
            try:
                await self._set_task(inst, TaskState.DELETING, {inst.task_state})
                break
            except Conflict:
                fresh = await self.db.run_read(_live_instance, inst.uuid)
                if fresh is None or fresh.task_state == TaskState.DELETING:
                    return  # deleted, or being deleted, meanwhile
                if attempt == 9:
                    raise
                inst = fresh
                host_up = bool(inst.host) and await self._host_up(inst.host)
        if host_up:
            await self.compute_rpc.terminate_instance(self.rpc_context(ctx), inst.host, inst.uuid)
            return
        # Never reached a host, or its host is down: delete it here (Nova's local delete).
        await self._release_external(ctx, inst)
        await self._delete_vtpm_secret(ctx, inst)
        now = utcnow()
        async with self.db.write() as s:
            await s.run_sync(release, inst.uuid)
            await s.execute(
                update(Instance)
                .where(Instance.uuid == inst.uuid)
                .values(
                    vm_state=VmState.DELETED,
                    task_state=None,
                    deleted=True,
                    deleted_at=now,
                    terminated_at=now,
                )
            )

    async def _delete_vtpm_secret(
        self, ctx: RequestContext, inst: Instance, flavor: dict[str, Any] | None = None
    ) -> bool:
        """The server's vTPM secret, deleted with the deleter's token, or the service
        user's when the flavor that made it (`flavor`, else the server's) has a
        `deployment` policy (a refusal logged: the server goes anyway, as its host
        deletes it)."""
        flavor = flavor if flavor is not None else inst.flavor or {}
        token = ctx.auth_token or ""
        if vtpm.secret_is_services(inst.system_metadata, flavor):
            try:
                token = await self.validator.client.service_token()
            except Exception as exc:  # noqa: BLE001 - logged; the server goes anyway
                LOG.warning("vTPM secret of %s not deleted: %s", inst.uuid, exc)
                return False
        return await vtpm.delete_instance_secret(
            self.key_manager, token, inst.uuid, inst.system_metadata
        )

    async def _host_up(self, host: str) -> bool:
        """Whether the host's compute agent reported within service_down_time."""
        async with self.db.read() as s:
            svc = await s.scalar(
                select(ServiceRecord).where(
                    ServiceRecord.host == host, ServiceRecord.binary == COMPUTE_BINARY
                )
            )
        if svc is None or svc.forced_down or svc.last_seen_up is None:
            return False
        age = (utcnow() - svc.last_seen_up).total_seconds()
        return age <= self.config.compute.service_down_time

    async def _release_external(self, ctx: RequestContext, inst: Instance) -> None:
        """Ports and volume attachments of an instance deleted without its host, and its
        delete_on_termination volumes (Nova's _local_cleanup_bdm_volumes)."""
        if self.networks is not None:
            try:
                ports = (
                    await self.networks.json(
                        "GET", "/v2.0/ports", ctx.auth_token, params={"device_id": inst.uuid}
                    )
                )["ports"]
                mine = {e["port_id"] for e in inst.network_info or [] if not e.get("preexisting")}
                for port in ports:
                    if port["id"] in mine or port["device_owner"].startswith("compute:"):
                        await self.networks.request(
                            "DELETE",
                            url_path("/v2.0/ports/{}", port["id"]),
                            ctx.auth_token,
                            ok=(204, 404),
                        )
            except ServiceError as exc:
                LOG.warning("ports of %s not released: %s", inst.uuid, exc)
        if self.volumes is not None:
            for bdm in await self.block_devices(inst.uuid):
                if bdm.attachment_id:
                    try:
                        await self._delete_attachment(ctx, bdm.attachment_id)
                    except ServiceError as exc:
                        LOG.warning("attachment %s not released: %s", bdm.attachment_id, exc)
                if bdm.delete_on_termination:
                    try:
                        await self.volumes.request(
                            "DELETE",
                            url_path("/v3/volumes/{}", bdm.volume_id),
                            ctx.auth_token,
                            ok=(202, 204, 404),
                        )
                    except ServiceError as exc:
                        LOG.warning("volume %s not deleted: %s", bdm.volume_id, exc)
        async with self.db.write() as s:
            await s.execute(
                delete(BlockDeviceMapping).where(BlockDeviceMapping.instance_uuid == inst.uuid)
            )

    # -- power actions (api-ref: Servers - run an action) -----------------------------------

    async def _power(
        self, ctx: RequestContext, inst: Instance, action: str, task: str, **args: Any
    ) -> None:
        self._check_lock(ctx, inst)
        if not inst.host:
            raise Conflict(f"Instance {inst.uuid} is not on a host.")
        await self._record_action(ctx, inst, action)
        await self._set_task(inst, task, {inst.task_state})
        await self.compute_rpc.power_action(
            self.rpc_context(ctx), inst.host, inst.uuid, action, **args
        )

    @check_state(vm_state=[VmState.ACTIVE, VmState.ERROR])
    async def stop(self, inst: Instance, ctx: RequestContext) -> None:
        await self._power(ctx, inst, "stop", TaskState.POWERING_OFF)

    @check_state(vm_state=[VmState.STOPPED])
    async def start(self, inst: Instance, ctx: RequestContext) -> None:
        await self._power(ctx, inst, "start", TaskState.POWERING_ON)

    @check_state(vm_state=[VmState.ACTIVE])
    async def soft_reboot(self, inst: Instance, ctx: RequestContext) -> None:
        await self._power(ctx, inst, "reboot", TaskState.REBOOTING, hard=False)

    @check_state(
        vm_state=[
            VmState.ACTIVE,
            VmState.STOPPED,
            VmState.PAUSED,
            VmState.SUSPENDED,
            VmState.ERROR,
        ],
        task_state=[
            None,
            TaskState.REBOOTING,
            TaskState.REBOOT_PENDING,
            TaskState.REBOOT_STARTED,
            TaskState.REBOOTING_HARD,
        ],
    )
    async def hard_reboot(self, inst: Instance, ctx: RequestContext) -> None:
        await self._power(ctx, inst, "reboot", TaskState.REBOOTING_HARD, hard=True)

    @check_state(vm_state=[VmState.ACTIVE])
    async def pause(self, inst: Instance, ctx: RequestContext) -> None:
        await self._power(ctx, inst, "pause", TaskState.PAUSING)

    @check_state(vm_state=[VmState.PAUSED])
    async def unpause(self, inst: Instance, ctx: RequestContext) -> None:
        await self._power(ctx, inst, "unpause", TaskState.UNPAUSING)

    @check_state(vm_state=[VmState.ACTIVE])
    async def suspend(self, inst: Instance, ctx: RequestContext) -> None:
        await self._power(ctx, inst, "suspend", TaskState.SUSPENDING)

    @check_state(vm_state=[VmState.SUSPENDED])
    async def resume(self, inst: Instance, ctx: RequestContext) -> None:
        await self._power(ctx, inst, "resume", TaskState.RESUMING)

    # -- lock ----------------------------------------------------------------------------

    async def lock(self, ctx: RequestContext, inst: Instance, reason: str | None) -> None:
        by = "owner" if ctx.project_id == inst.project_id else "admin"
        await self._record_action(ctx, inst, "lock")
        async with self.db.write() as s:
            await s.execute(
                update(Instance)
                .where(Instance.uuid == inst.uuid)
                .values(locked=True, locked_by=by, locked_reason=reason)
            )

    async def unlock(self, ctx: RequestContext, inst: Instance) -> None:
        if (
            inst.locked_by == "admin"
            and ctx.project_id == inst.project_id
            and not (self.policy.check("compute:servers:unlock:unlock_override", ctx))
        ):
            raise Forbidden("The server was locked by an admin: only an admin may unlock it.")
        await self._record_action(ctx, inst, "unlock")
        async with self.db.write() as s:
            await s.execute(
                update(Instance)
                .where(Instance.uuid == inst.uuid)
                .values(locked=False, locked_by=None, locked_reason=None)
            )

    # -- snapshot, rebuild (resize and the other moves: service_moves) ------------

    @check_state(vm_state=[VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.SUSPENDED])
    async def create_image(
        self, inst: Instance, ctx: RequestContext, name: str, metadata: dict[str, str]
    ) -> str:
        """createImage: a private snapshot image in the Image service, filled by the host;
        of a volume-backed server, volume snapshots named by an image (no host)."""
        self._check_lock(ctx, inst)
        if not inst.image_ref:
            return await self.snapshot_volume_backed(inst, ctx, name, metadata)
        if self.images is None or not inst.host:
            raise Conflict(f"Instance {inst.uuid} cannot be snapshotted now.")
        sysmeta = inst.system_metadata or {}
        body = {
            # Nova: the user's metadata may set these properties over the defaults.
            "image_type": "snapshot",
            "instance_uuid": inst.uuid,
            "user_id": ctx.user_id,
            **metadata,
            "name": name,
            "disk_format": sysmeta.get("image_disk_format", "qcow2"),
            "container_format": sysmeta.get("image_container_format", "bare"),
            "visibility": "private",
        }
        if inst.image_ref:
            body["base_image_ref"] = inst.image_ref
            try:
                source = await self.images.json(
                    "GET", url_path("/v2/images/{}", inst.image_ref), ctx.auth_token
                )
                for key in BOOT_PROPERTIES:
                    if source.get(key) and key not in metadata:
                        body[key] = source[key]
            except ServiceError:
                pass  # the image is gone: the snapshot boots on its own
        # The machine type the server runs on (Nova's snapshot carries its recorded image
        # properties): a server booted from the snapshot gets the same machine.
        if sysmeta.get(MACHINE_TYPE_KEY) and "hw_machine_type" not in metadata:
            body["hw_machine_type"] = sysmeta[MACHINE_TYPE_KEY]
        # The task first: a second snapshot while one is saved is a 409 that leaves no image.
        await self._set_task(inst, TaskState.IMAGE_SNAPSHOT, {None})
        try:
            image = await self.images.json("POST", "/v2/images", ctx.auth_token, json=body)
        except ServiceError as exc:
            await self.update_instance(inst.uuid, {"task_state": None})
            if exc.status in (400, 409, 413):
                raise BadRequest(f"The image could not be created: {exc.body[:200]}") from None
            raise
        await self._record_action(ctx, inst, "createImage")
        await self.compute_rpc.snapshot_instance(
            self.rpc_context(ctx), inst.host, inst.uuid, image["id"]
        )
        return image["id"]

    @check_state(vm_state=[VmState.ACTIVE, VmState.STOPPED, VmState.ERROR])
    async def rebuild(
        self,
        inst: Instance,
        ctx: RequestContext,
        image_ref: str,
        changes: dict[str, Any],
        reimage_boot_volume: bool = False,
        injected_files: list[tuple[str, str]] | None = None,
        admin_pass: str | None = None,
    ) -> Instance:
        """A new root disk from `image_ref`, the guest told `admin_pass`. A volume-backed
        server keeps its root volume: with `reimage_boot_volume` (2.93) the volume is
        reimaged from the image by Block Storage; without it only its own image is
        accepted (Nova's ImageUnacceptable).
        The personality files `injected_files` replace the server's (none given: it has
        none, as Nova's rebuild injects only the files it is given)."""
        self._check_lock(ctx, inst)
        if not inst.host:
            raise Conflict(f"Instance {inst.uuid} is not on a host.")
        self._reject_vtpm(inst, "rebuild")
        image = await self._image(ctx, image_ref)
        root_volume = None if inst.image_ref else await self._root_volume(ctx, inst)
        reimage = None
        if root_volume is None:
            async with self.db.read() as s:
                flavor = await s.scalar(select(Flavor).where(Flavor.flavorid == inst.flavor["id"]))
            if flavor is not None:
                self._check_flavor_fits_image(flavor, image)
            changes = {"image_ref": image["id"], **changes}
        elif reimage_boot_volume:
            _check_volume_fits_image(root_volume, image)
            reimage = image["id"]
        elif (root_volume.get("volume_image_metadata") or {}).get("image_id") != image["id"]:
            raise BadRequest(
                f"Image {image['id']} is unacceptable: Unable to rebuild with a different "
                "image for a volume-backed server."
            )
        await self._check_injected_files(ctx, injected_files or [])
        sysmeta = changes.get("system_metadata", inst.system_metadata or {})
        booted = inst.image_ref or ((root_volume or {}).get("volume_image_metadata") or {}).get(
            "image_id"
        )
        if image["id"] != booted:
            # Another image: the spawn records the machine type anew (Nova drops what it
            # kept of the old image; the same image keeps the server's), and the server
            # keeps the new image's properties instead of the old one's.
            sysmeta = {
                k: v
                for k, v in sysmeta.items()
                if k != MACHINE_TYPE_KEY and not image_properties.is_kept_property(k)
            }
            sysmeta.update(image_properties.sysmeta_of(image))
        changes = {
            **changes,
            "system_metadata": personality.with_files(sysmeta, injected_files or []),
        }
        await self._record_action(ctx, inst, "rebuild")
        await self._set_task(inst, TaskState.REBUILDING, {None})
        inst = await self.update_instance(inst.uuid, changes)
        await self.compute_rpc.rebuild_instance(
            self.rpc_context(ctx),
            inst.host,
            inst.uuid,
            reimage_image=reimage,
            admin_password=admin_pass,
        )
        return inst

    async def _root_volume(self, ctx: RequestContext, inst: Instance) -> dict[str, Any] | None:
        """The root volume of a volume-backed server, as Block Storage shows it."""
        root = next((b for b in await self.block_devices(inst.uuid) if b.boot_index == 0), None)
        if root is None or self.volumes is None:
            return None
        return (
            await self.volumes.json(
                "GET",
                url_path("/v3/volumes/{}", root.volume_id),
                ctx.auth_token,
                headers={"OpenStack-API-Version": "volume 3.44"},
            )
        )["volume"]

    # -- volume attachments ------------------------------------------------------------

    async def volume_extended(
        self, ctx: RequestContext, instance_uuid: str, volume_id: str
    ) -> None:
        """The volume-extended event: an `extend_volume` action, carried out by the host."""
        async with self.db.read() as s:
            inst = await s.scalar(select(Instance).where(Instance.uuid == instance_uuid))
        if inst is None or not inst.host:
            return
        async with self.db.write() as s:
            s.add(
                InstanceAction(
                    instance_uuid=inst.uuid,
                    request_id=ctx.request_id,
                    action="extend_volume",
                    project_id=inst.project_id,
                    user_id=ctx.user_id,
                )
            )
        await self.compute_rpc.extend_volume(self.rpc_context(ctx), inst.host, inst.uuid, volume_id)

    async def _delete_attachment(self, ctx: RequestContext, attachment_id: str) -> None:
        await self.volumes.request(
            "DELETE",
            url_path("/v3/attachments/{}", attachment_id),
            ctx.auth_token,
            headers={"OpenStack-API-Version": "volume 3.44"},
            ok=(200, 202, 204, 404),
        )

    async def block_devices(self, instance_uuid: str) -> list[BlockDeviceMapping]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(BlockDeviceMapping)
                .where(
                    BlockDeviceMapping.instance_uuid == instance_uuid,
                    BlockDeviceMapping.volume_id.is_not(None),
                )
                .order_by(BlockDeviceMapping.id)
            )
            return list(rows)

    async def set_delete_on_termination(self, bdm: BlockDeviceMapping, value: bool) -> None:
        """2.85: whether the volume goes with the server (read when the server is deleted)."""
        async with self.db.write() as s:
            await s.execute(
                update(BlockDeviceMapping)
                .where(BlockDeviceMapping.id == bdm.id)
                .values(delete_on_termination=value, updated_at=utcnow())
            )

    @check_state(
        vm_state=[
            VmState.ACTIVE,
            VmState.PAUSED,
            VmState.STOPPED,
            VmState.SUSPENDED,
            VmState.RESIZED,
            VmState.SHELVED,
            VmState.SHELVED_OFFLOADED,
        ]
    )
    async def attach_volume(
        self,
        inst: Instance,
        ctx: RequestContext,
        volume_id: str,
        device: str | None,
        tag: str | None,
        delete_on_termination: bool,
    ) -> BlockDeviceMapping:
        """Reserve the volume in Block Storage, record the mapping, cast to the host."""
        self._check_lock(ctx, inst)
        if self.volumes is None:
            raise BadRequest("This cloud has no Block Storage service.")
        if tag and inst.vm_state == VmState.SHELVED_OFFLOADED:
            # Nova: no host to say where the device is until the server is unshelved.
            raise BadRequest(
                "Tagged volume attachment is not supported for shelved-offloaded instances."
            )
        existing = await self.block_devices(inst.uuid)
        if any(b.volume_id == volume_id for b in existing):
            raise BadRequest(
                f"Invalid volume: volume {volume_id} is already attached to instance {inst.uuid}."
            )
        used = {b.device_name for b in existing} | {"/dev/vda"}
        if device is None:
            device = next(
                f"/dev/vd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"/dev/vd{c}" not in used
            )
        elif device in used:
            raise Conflict(f"The supplied device path ({device}) is in use.")
        try:
            attachment = (
                await self.volumes.json(
                    "POST",
                    "/v3/attachments",
                    ctx.auth_token,
                    headers={"OpenStack-API-Version": "volume 3.44"},
                    json={"attachment": {"volume_uuid": volume_id, "instance_uuid": inst.uuid}},
                )
            )["attachment"]
        except ServiceError as exc:
            if exc.status == 404:
                raise NotFound(f"Volume {volume_id} could not be found.") from None
            if exc.status in (400, 409):
                raise BadRequest(f"Invalid volume: {exc.body[:300]}") from None
            raise
        await self._record_action(ctx, inst, "attach_volume")
        bdm = BlockDeviceMapping(
            instance_uuid=inst.uuid,
            source_type="volume",
            destination_type="volume",
            volume_id=volume_id,
            device_name=device,
            attachment_id=attachment["id"],
            tag=tag,
            delete_on_termination=delete_on_termination,
        )
        async with self.db.write() as s:
            s.add(bdm)
        if inst.vm_state == VmState.SHELVED_OFFLOADED:
            # No host to connect it to: attached now, connected where it is unshelved.
            await self.volumes.request(
                "POST",
                url_path("/v3/attachments/{}/action", attachment["id"]),
                ctx.auth_token,
                headers={"OpenStack-API-Version": "volume 3.44"},
                json={"os-complete": None},
            )
            return bdm
        await self.compute_rpc.attach_volume(
            self.rpc_context(ctx), inst.host, inst.uuid, volume_id, attachment["id"], device
        )
        return bdm

    @check_state(
        vm_state=[
            VmState.ACTIVE,
            VmState.PAUSED,
            VmState.STOPPED,
            VmState.SUSPENDED,
            VmState.RESIZED,
            VmState.ERROR,
            VmState.SHELVED,
            VmState.SHELVED_OFFLOADED,
        ]
    )
    async def detach_volume(self, inst: Instance, ctx: RequestContext, volume_id: str) -> None:
        self._check_lock(ctx, inst)
        bdm = next(
            (b for b in await self.block_devices(inst.uuid) if b.volume_id == volume_id), None
        )
        if bdm is None:
            raise NotFound(f"volume_id not found: {volume_id}")
        if bdm.boot_index == 0:
            raise BadRequest("Cannot detach a root device volume")
        await self._record_action(ctx, inst, "detach_volume")
        if inst.vm_state == VmState.SHELVED_OFFLOADED:  # not connected anywhere
            await self._delete_attachment(ctx, bdm.attachment_id)
            async with self.db.write() as s:
                await s.execute(delete(BlockDeviceMapping).where(BlockDeviceMapping.id == bdm.id))
            return
        await self.compute_rpc.detach_volume(
            self.rpc_context(ctx), inst.host, inst.uuid, volume_id, bdm.attachment_id or ""
        )

    async def swap_volume(
        self, inst: Instance, ctx: RequestContext, volume_id: str, new_volume_id: str
    ) -> None:
        """Nova's swap volume (the Block Storage service's call while it migrates an
        attached volume): the volumes checked, the old one's detach begun, the new one
        reserved for the server, the copy cast to its host."""
        if self.volumes is None:
            raise BadRequest("This cloud has no Block Storage service.")
        try:
            old = await self._volume(ctx, volume_id)
        except ServiceError as exc:
            if exc.status == 404:
                raise NotFound(f"Volume {volume_id} could not be found.") from None
            raise
        migration = old.get("migration_status") or old.get("os-vol-mig-status-attr:migstat")
        if not migration:
            # Nova since bug 2112187: a direct swap leaves the server's records out of step.
            raise Conflict(
                f"volume {volume_id} is not migrating; this API should only be called by Cinder"
            )
        try:
            new = await self._volume(ctx, new_volume_id)
        except ServiceError as exc:
            if exc.status == 404:  # named in the body, not the path: 400 (Nova)
                raise BadRequest(f"Volume {new_volume_id} could not be found.") from None
            raise
        await self._swap_volume(inst, ctx, old, new)

    async def _volume(self, ctx: RequestContext, volume_id: str) -> dict[str, Any]:
        assert self.volumes is not None
        path = url_path("/v3/volumes/{}", volume_id)
        headers = {"OpenStack-API-Version": "volume 3.44"}
        return (await self.volumes.json("GET", path, ctx.auth_token, headers=headers))["volume"]

    async def _volume_action(
        self, ctx: RequestContext, volume_id: str, action: dict[str, Any]
    ) -> None:
        assert self.volumes is not None
        await self.volumes.request(
            "POST",
            url_path("/v3/volumes/{}/action", volume_id),
            ctx.auth_token,
            headers={"OpenStack-API-Version": "volume 3.44"},
            json=action,
        )

    @check_state(vm_state=[VmState.ACTIVE, VmState.PAUSED, VmState.RESIZED])
    async def _swap_volume(
        self, inst: Instance, ctx: RequestContext, old: dict[str, Any], new: dict[str, Any]
    ) -> None:
        self._check_lock(ctx, inst)
        servers = [a.get("server_id") for a in old.get("attachments") or []]
        if inst.uuid not in servers:
            raise BadRequest("Invalid volume: Old volume is attached to a different instance.")
        if new.get("attachments"):
            raise BadRequest("Invalid volume: New volume must be detached in order to swap.")
        if int(new["size"]) < int(old["size"]):
            raise BadRequest("Invalid volume: New volume must be the same size or larger.")
        try:
            await self._volume_action(ctx, old["id"], {"os-begin_detaching": None})
        except ServiceError as exc:
            raise BadRequest(f"Invalid volume: {exc.body[:300]}") from None
        try:
            if len(servers) > 1 and await self._rw_attachments(ctx, old) > 1:
                raise BadRequest(
                    "Swapping multi-attach volumes with more than one read/write "
                    "attachment is not supported."
                )
            bdm = next(
                (b for b in await self.block_devices(inst.uuid) if b.volume_id == old["id"]),
                None,
            )
            if bdm is None:
                raise NotFound(f"No volume Block Device Mapping with id {old['id']}.")
            try:
                made = await self.volumes.json(  # type: ignore[union-attr]
                    "POST",
                    "/v3/attachments",
                    ctx.auth_token,
                    headers={"OpenStack-API-Version": "volume 3.44"},
                    json={"attachment": {"volume_uuid": new["id"], "instance_uuid": inst.uuid}},
                )
            except ServiceError as exc:
                raise BadRequest(f"Invalid volume: {exc.body[:300]}") from None
        except BaseException:
            await self._volume_action(ctx, old["id"], {"os-roll_detaching": None})
            raise
        attachment_id = made["attachment"]["id"]
        await self._record_action(ctx, inst, "swap_volume")
        try:
            await self.compute_rpc.swap_volume(
                self.rpc_context(ctx), inst.host, inst.uuid, old["id"], new["id"], attachment_id
            )
        except BaseException:
            await self._volume_action(ctx, old["id"], {"os-roll_detaching": None})
            await self._delete_attachment(ctx, attachment_id)
            raise

    async def _rw_attachments(self, ctx: RequestContext, volume: dict[str, Any]) -> int:
        """Nova's count for a swap: a multiattach volume's read/write attachments."""
        count = 0
        for entry in volume.get("attachments") or []:
            try:
                found = await self.volumes.json(  # type: ignore[union-attr]
                    "GET",
                    url_path("/v3/attachments/{}", entry["attachment_id"]),
                    ctx.auth_token,
                    headers={"OpenStack-API-Version": "volume 3.44"},
                )
            except ServiceError:
                count += 1  # read/write unless shown otherwise
                continue
            count += found["attachment"].get("attach_mode") != "ro"
        return count

    # -- interfaces ----------------------------------------------------------------------

    @check_state(vm_state=[VmState.ACTIVE, VmState.PAUSED, VmState.STOPPED])
    async def attach_interface(
        self, inst: Instance, ctx: RequestContext, request: dict[str, Any]
    ) -> dict[str, Any]:
        self._check_lock(ctx, inst)
        if self.networks is None:
            raise BadRequest("This cloud has no Network service.")
        await self._check_networks(ctx, [request])
        await self._record_action(ctx, inst, "attach_interface")
        try:
            return await self.compute_rpc.attach_interface(
                self.rpc_context(ctx), inst.host, inst.uuid, request
            )
        except RemoteError as exc:
            raise Conflict(
                f"Failed to attach network adapter device to {inst.uuid}: {exc.message}"
            ) from None

    @check_state(vm_state=[VmState.ACTIVE, VmState.PAUSED, VmState.STOPPED])
    async def detach_interface(self, inst: Instance, ctx: RequestContext, port_id: str) -> None:
        self._check_lock(ctx, inst)
        if not any(e["port_id"] == port_id for e in inst.network_info or []):
            raise NotFound(f"Port {port_id} is not attached")
        await self._record_action(ctx, inst, "detach_interface")
        await self.compute_rpc.detach_interface(
            self.rpc_context(ctx), inst.host, inst.uuid, port_id
        )

    # -- consoles, diagnostics, passwords ------------------------------------------------

    async def _host_console(
        self, ctx: RequestContext, inst: Instance, kind: str, relay: bool = True
    ) -> dict[str, Any]:
        """Where the guest's `kind` console is, from its host (409 while it cannot have
        one; 400 when its host says it has none of this kind). A host outside this
        process (where the console proxies run) relays it to a TCP port for the token's
        life, unless relay is false (spice-direct: the host's own SPICE port)."""
        if not inst.host or inst.vm_state != VmState.ACTIVE:
            raise Conflict(
                f"Instance {inst.uuid} is not ready for a console (vm_state {inst.vm_state})."
            )
        remote = relay and inst.host not in self.local_hosts
        ttl = self.config.compute.console_token_ttl if remote else None
        try:
            return await self.compute_rpc.get_console(
                self.rpc_context(ctx), inst.host, inst.uuid, kind, ttl
            )
        except RemoteError as exc:
            if exc.type == "ConsoleTypeUnavailable":
                raise BadRequest(exc.message) from None
            raise Conflict(f"No console for instance {inst.uuid}: {exc.message}") from None

    async def vnc_console(self, ctx: RequestContext, inst: Instance) -> dict[str, Any]:
        return await self._host_console(ctx, inst, "vnc")

    async def spice_console(
        self, ctx: RequestContext, inst: Instance, console_type: str
    ) -> dict[str, Any]:
        """Where the guest's SPICE server is (Nova's get_spice_console): 400 when SPICE
        consoles are off or the guest has none."""
        if not self.config.compute.spice_console_enabled:
            raise BadRequest(f"Unavailable console type {console_type}.")
        return await self._host_console(ctx, inst, "spice", relay=console_type != "spice-direct")

    async def serial_console(self, ctx: RequestContext, inst: Instance) -> dict[str, Any]:
        """Where the guest's serial port is (Nova's get_serial_console): 400 when serial
        consoles are off or the guest has no interactive serial port."""
        if not self.config.compute.serial_console_enabled:
            raise BadRequest("Unavailable console type serial.")
        return await self._host_console(ctx, inst, "serial")

    async def diagnostics(self, ctx: RequestContext, inst: Instance) -> dict[str, Any]:
        self.policy.enforce("compute:diagnostics", ctx, {"project_id": inst.project_id})
        if not inst.host or inst.vm_state == VmState.BUILDING:
            raise Conflict(f"Instance {inst.uuid} is not on a host yet.")
        return await self.compute_rpc.get_diagnostics(self.rpc_context(ctx), inst.host, inst.uuid)

    @check_state(vm_state=[VmState.ACTIVE])
    async def change_password(self, inst: Instance, ctx: RequestContext, password: str) -> None:
        self._check_lock(ctx, inst)
        await self._record_action(ctx, inst, "changePassword")
        try:
            await self.compute_rpc.set_admin_password(
                self.rpc_context(ctx), inst.host, inst.uuid, password
            )
        except RemoteError as exc:
            if exc.type == "NotImplementedError":
                raise NotImplementedYet(
                    f"Unable to set password on instance: {exc.message}"
                ) from None
            raise Conflict(f"Unable to set password on instance: {exc.message}") from None

    async def clear_password(self, ctx: RequestContext, inst: Instance) -> None:
        """os-server-password DELETE: forget the password the guest posted."""
        meta = {
            k: v for k, v in (inst.system_metadata or {}).items() if not k.startswith("password_")
        }
        await self.update_instance(inst.uuid, {"system_metadata": meta})

    async def console_output(self, ctx: RequestContext, inst: Instance, length: int | None) -> str:
        if not inst.host or inst.vm_state == VmState.BUILDING:
            raise Conflict(f"Instance {inst.uuid} has no console yet (it is not on a host).")
        return await self.compute_rpc.get_console_output(
            self.rpc_context(ctx), inst.host, inst.uuid, length
        )

    # -- small updates --------------------------------------------------------------------

    async def update_instance(self, instance_uuid: str, changes: dict[str, Any]) -> Instance:
        """Change user-owned fields (name, description, metadata, tags, access IPs)."""
        async with self.db.write() as s:
            inst = await s.scalar(
                select(Instance).where(Instance.uuid == instance_uuid, Instance.deleted.is_(False))
            )
            if inst is None:
                raise NotFound(f"Instance {instance_uuid} could not be found.")
            for name, value in changes.items():
                setattr(inst, name, value)
            inst.updated_at = utcnow()
        return inst


def _forget_instances(s: Session, uuids: list[str]) -> None:
    """Remove instances recorded for a request that failed before any build started
    (their actions' events go with the actions)."""
    for model in (InstanceAction, ServerGroupMember, BlockDeviceMapping, InstanceFault):
        s.execute(delete(model).where(model.instance_uuid.in_(uuids)))
    s.execute(delete(Instance).where(Instance.uuid.in_(uuids)))
