"""iSCSI volumes of QEMU guests: QEMU's own initiator (libiscsi) logs in to the target
Block Storage names (`driver_volume_type: iscsi`), with CHAP, as Nova's libvirt driver
gives QEMU a network disk; and the relay that lets a guest in a data-plane namespace
reach a portal of the host's.

QEMU runs in its guest network's namespace (where its taps are), where the portal's
address (often 127.0.0.1) means something else, and libiscsi takes no connected socket
(an NBD drive is handed one). So the agent listens on 127.0.0.1:<port> inside that
namespace (the socket made there by a short-lived thread, as the metadata proxy's) and
carries each connection to the portal from the host's namespace. The port is kept in
the drive's record: a restarted agent listens there again, and libiscsi reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.driver import BlockDevice, DriverError
from cumulo.network.dataplane.metadata_proxy import listen_in_namespace

LOG = logging.getLogger(__name__)

# Nova's fields.DiskBus / BlockDeviceType values this driver gives a volume.
VOLUME_BUSES = ("virtio", "scsi")
VOLUME_DEVICE_TYPES = ("disk", "lun")
SCSI_MODELS = ("virtio-scsi",)


def unsupported(model: str) -> DriverError:
    """Nova's UnsupportedHardware."""
    return DriverError(f"Requested hardware '{model}' is not supported by the 'qemu' virt driver")


def scsi_model(properties: dict[str, Any]) -> str | None:
    """An image's hw_scsi_model (None when unset); DriverError for a model QEMU is not
    given here (only virtio-scsi)."""
    model = properties.get("hw_scsi_model")
    if not model:
        return None
    if model not in SCSI_MODELS:
        raise unsupported(str(model))
    return str(model)


def bus_and_media(device: BlockDevice, protocol: str) -> tuple[str, str]:
    """The guest bus and media of a volume from its mapping's disk_bus and device_type
    (a lun defaults to the scsi bus, as Nova's blockinfo); DriverError, before anything is
    plugged, for what cannot be given: a lun passes SCSI commands through to an iSCSI LUN
    only (NBD and files carry bytes, not SCSI), on the scsi bus, never encrypted."""
    media = device.device_type or "disk"
    if media not in VOLUME_DEVICE_TYPES:
        raise unsupported(media)
    bus = device.disk_bus or ("scsi" if media == "lun" else "virtio")
    if bus not in VOLUME_BUSES:
        raise unsupported(bus)
    if media == "lun":
        if bus != "scsi":
            raise DriverError(
                f"Volume {device.volume_id} with device_type lun needs disk_bus scsi, not {bus}"
            )
        if protocol != "iscsi":
            raise DriverError(
                f"Volume {device.volume_id} cannot be attached with device_type lun: Block "
                f"Storage serves it over {protocol}, which does not pass SCSI commands "
                "through (an iSCSI volume backend does)"
            )
        if device.encrypted:
            raise DriverError(
                f"Volume {device.volume_id} is encrypted: a lun passes the guest's SCSI "
                "commands to its ciphertext, so it is attached as a disk only"
            )
    return bus, media


def iscsi_location(data: dict[str, Any]) -> str:
    """Where Block Storage's iSCSI connection info says the LUN is (iscsi://portal/iqn/lun)."""
    portal, target, lun = data.get("target_portal"), data.get("target_iqn"), data.get("target_lun")
    if not portal or not target or lun is None:
        raise DriverError(
            "the iSCSI connection info has no target_portal, target_iqn or target_lun"
        )
    return qp.iscsi_location(str(portal), str(target), int(lun))


def chap(data: dict[str, Any]) -> tuple[str, str] | None:
    """The CHAP user and password of an iSCSI connection (None without authentication)."""
    method = data.get("auth_method")
    if not method:
        return None
    if str(method).upper() != "CHAP":
        raise DriverError(f"iSCSI authentication {method} is not supported (CHAP is)")
    user, password = data.get("auth_username"), data.get("auth_password")
    if not user or not password:
        raise DriverError("the iSCSI connection info says CHAP but has no credentials")
    return str(user), str(password)


def chap_secret_id(node: str) -> str:
    return f"{node}-chap"


class PortalRelays:
    """One listener per (namespace, portal), inside the namespace on 127.0.0.1."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, str], asyncio.AbstractServer] = {}
        self._ports: dict[tuple[str, str], int] = {}
        self._pipes: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    async def port(self, netns: str, portal: str, port: int = 0) -> int:
        """The port in `netns` that reaches `portal` (listened on if it is not; `port`: a
        port it had before, listened on again)."""
        key = (netns, portal)
        async with self._lock:
            if key in self._servers:
                return self._ports[key]
            try:
                sock = await asyncio.to_thread(listen_in_namespace, netns, port, "127.0.0.1")
            except OSError as exc:
                raise DriverError(
                    f"cannot relay iSCSI portal {portal} into namespace {netns}: {exc}"
                ) from exc
            host, _, target_port = portal.rpartition(":")
            address = (host.strip("[]"), int(target_port))

            async def carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._carry(reader, writer, address)

            self._servers[key] = await asyncio.start_server(carry, sock=sock)
            self._ports[key] = sock.getsockname()[1]
            LOG.info("iSCSI portal %s relayed into %s at port %d", portal, netns, self._ports[key])
            return self._ports[key]

    async def _carry(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: tuple[str, int],
    ) -> None:
        try:
            portal_reader, portal_writer = await asyncio.open_connection(*address)
        except OSError as exc:
            LOG.warning("iSCSI portal %s:%d does not answer: %s", *address, exc)
            writer.close()
            return
        await qp.join_streams((reader, writer), (portal_reader, portal_writer), self._pipes)

    async def close(self) -> None:
        for server in self._servers.values():
            server.close()
        for task in list(self._pipes):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*(s.wait_closed() for s in self._servers.values()))
        self._servers.clear()
        self._ports.clear()
