"""The interface every volume backend implements.

The volume manager calls these; a backend knows where volume data lives and how
a host reaches it, nothing about the API, quotas or statuses. Every method may
block on I/O, so backends run their work off the event loop.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cumulo.volume.encryption import Encryption

GiB = 1 << 30


class DriverError(Exception):
    """The backend could not do what it was asked (the volume goes to an error status)."""


class InvalidReference(DriverError):
    """A manage request's reference names nothing this backend can adopt (Cinder's
    ManageExistingInvalidReference)."""

    def __init__(self, ref: Any, reason: str) -> None:
        super().__init__(
            f"Manage existing volume failed due to invalid backend reference {ref}: {reason}"
        )


class InvalidConnector(DriverError):
    """The connector lacks what this backend's transport needs (Cinder's
    InvalidConnectorException), e.g. an iSCSI initiator name: the request's fault."""

    def __init__(self, missing: str) -> None:
        super().__init__(f"Connector doesn't have required information: {missing}")


@dataclass(frozen=True)
class Capacity:
    total_gb: float
    free_gb: float


@dataclass(frozen=True)
class BackendObject:
    """A piece of data on the backend as manage-existing sees it: its reference name,
    size in whole GiB, and whether something has it open."""

    name: str
    size_gb: int
    in_use: bool


class VolumeDriver(abc.ABC):
    name: str
    storage_protocol: str = "file"

    @abc.abstractmethod
    async def create_volume(
        self, volume_id: str, size_gb: int, encryption: Encryption | None = None
    ) -> None:
        """An empty (zero-filled) volume; encrypted: an empty LUKS container of that
        payload size, formatted with the encryption's passphrase, or, without one, room
        for a container a migration copies in (see fit_container)."""

    @abc.abstractmethod
    async def delete_volume(self, volume_id: str) -> None:
        """Remove the volume's data; removing a volume that is not there is fine."""

    @abc.abstractmethod
    async def create_snapshot(
        self, snapshot_id: str, volume_id: str, encryption: Encryption | None = None
    ) -> None:
        """A copy of the volume's data (an encrypted volume's: its container's bytes)."""

    @abc.abstractmethod
    async def delete_snapshot(self, snapshot_id: str) -> None: ...

    @abc.abstractmethod
    async def create_from_snapshot(
        self, volume_id: str, snapshot_id: str, size_gb: int, encryption: Encryption | None = None
    ) -> None: ...

    @abc.abstractmethod
    async def clone_volume(
        self, volume_id: str, source_id: str, size_gb: int, encryption: Encryption | None = None
    ) -> None: ...

    @abc.abstractmethod
    async def copy_image_to_volume(
        self,
        volume_id: str,
        image_file: Path,
        image_format: str,
        size_gb: int,
        encryption: Encryption | None = None,
    ) -> None:
        """Write an image (a local file in the given disk format) into a new volume
        (encrypted: into a new LUKS container)."""

    @abc.abstractmethod
    async def copy_container_to_volume(
        self, volume_id: str, container: Path, container_format: str, size_gb: int
    ) -> None:
        """Make (or replace) an encrypted volume's data with a LUKS container kept
        elsewhere (a backup's, an image's; a local file in the given format), copied as
        its bytes are (it opens with the key it was made with), its payload fitted to
        size_gb; no partial volume."""

    @abc.abstractmethod
    async def copy_volume_to_image(
        self,
        volume_id: str,
        dest: Path,
        disk_format: str,
        encryption: Encryption | None = None,
    ) -> None:
        """Write the volume's data into a local file in the given disk format (an
        encrypted volume's: its container's bytes, raw; never the plaintext)."""

    @abc.abstractmethod
    async def extend_volume(
        self, volume_id: str, new_size_gb: int, encryption: Encryption | None = None
    ) -> None: ...

    @abc.abstractmethod
    async def initialize_connection(
        self,
        volume_id: str,
        attachment_id: str,
        connector: dict[str, Any],
        mode: str,
        encryption: Encryption | None = None,
    ) -> dict[str, Any]:
        """Connection info for a host: {"driver_volume_type": ..., "data": {...}}; an
        encrypted volume's says `encrypted` and serves the container (format `luks`):
        the host decrypts it (front-end encryption)."""

    @abc.abstractmethod
    async def terminate_connection(self, volume_id: str, attachment_id: str) -> None: ...

    @abc.abstractmethod
    async def capacity(self) -> Capacity: ...

    # -- moving volumes between backends (migration) ---------------------------------

    @abc.abstractmethod
    async def copy_volume_to(
        self, volume_id: str, connection: dict[str, Any], encryption: Encryption | None = None
    ) -> None:
        """Write the volume's data onto another backend's (empty) volume of the same
        size, reached through that backend's connection info for this host (an
        encrypted volume's container byte for byte: it keeps its key)."""

    @abc.abstractmethod
    async def fit_container(self, volume_id: str, size_gb: int) -> None:
        """An encrypted volume whose container was copied in whole (a migration) cut
        or grown to its header and a payload of size_gb."""

    @abc.abstractmethod
    async def rename_migrated_volume(self, new_volume_id: str, original_id: str) -> None:
        """The data a migration wrote into `new_volume_id` on this backend takes the
        moved volume's name (Cinder's update_migrated_volume)."""

    def moved_connection(self, info: dict[str, Any], volume_id: str) -> dict[str, Any]:
        """A connection to the new volume of a migration of an attached volume, as it is
        once its data carries the moved volume's name (`volume_id`): what the server
        reopens it by from then on."""
        return {**info, "data": {**(info.get("data") or {}), "volume_id": volume_id}}

    # -- manage / unmanage -----------------------------------------------------------

    @abc.abstractmethod
    async def list_objects(self, kind: str) -> list[BackendObject]:
        """The backend's data of one kind ("volume" or "snapshot"), managed or not."""

    @abc.abstractmethod
    async def manage_existing_get_size(self, ref: dict[str, Any], kind: str) -> int:
        """Size in GiB of the object `ref` names; InvalidReference when there is none
        this backend can adopt as a `kind`."""

    @abc.abstractmethod
    async def manage_existing(self, volume_id: str, ref: dict[str, Any]) -> int:
        """Adopt the object `ref` names as the volume's data (renamed to the volume's
        name); its size in GiB."""

    @abc.abstractmethod
    async def manage_existing_snapshot(self, snapshot_id: str, ref: dict[str, Any]) -> int:
        """Adopt the object `ref` names as the snapshot's data; its size in GiB."""

    @abc.abstractmethod
    async def unmanage(self, volume_id: str) -> None:
        """Let go of a volume's data: it stays on the backend, no longer the volume's."""

    @abc.abstractmethod
    async def unmanage_snapshot(self, snapshot_id: str) -> None: ...

    @abc.abstractmethod
    def volume_files(self) -> set[str]:
        """Names of every piece of data the backend holds (to find orphans)."""

    async def ensure_exports(self) -> None:
        """Exports that attached hosts use made again where what serves them lost them
        (Cinder's ensure_export when the volume service starts); nothing by default."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop whatever the backend runs (exports)."""
