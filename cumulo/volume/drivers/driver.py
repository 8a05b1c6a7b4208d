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

GiB = 1 << 30


class DriverError(Exception):
    """The backend could not do what it was asked (the volume goes to an error status)."""


@dataclass(frozen=True)
class Capacity:
    total_gb: float
    free_gb: float


class VolumeDriver(abc.ABC):
    name: str
    storage_protocol: str = "file"

    @abc.abstractmethod
    async def create_volume(self, volume_id: str, size_gb: int) -> None:
        """An empty (zero-filled) volume."""

    @abc.abstractmethod
    async def delete_volume(self, volume_id: str) -> None:
        """Remove the volume's data; removing a volume that is not there is fine."""

    @abc.abstractmethod
    async def create_snapshot(self, snapshot_id: str, volume_id: str) -> None: ...

    @abc.abstractmethod
    async def delete_snapshot(self, snapshot_id: str) -> None: ...

    @abc.abstractmethod
    async def create_from_snapshot(
        self, volume_id: str, snapshot_id: str, size_gb: int
    ) -> None: ...

    @abc.abstractmethod
    async def clone_volume(self, volume_id: str, source_id: str, size_gb: int) -> None: ...

    @abc.abstractmethod
    async def copy_image_to_volume(
        self, volume_id: str, image_file: Path, image_format: str, size_gb: int
    ) -> None:
        """Write an image (a local file in the given disk format) into a new volume."""

    @abc.abstractmethod
    async def copy_volume_to_image(self, volume_id: str, dest: Path, disk_format: str) -> None:
        """Write the volume's data into a local file in the given disk format."""

    @abc.abstractmethod
    async def extend_volume(self, volume_id: str, new_size_gb: int) -> None: ...

    @abc.abstractmethod
    async def initialize_connection(
        self, volume_id: str, attachment_id: str, connector: dict[str, Any], mode: str
    ) -> dict[str, Any]:
        """Connection info for a host: {"driver_volume_type": ..., "data": {...}}."""

    @abc.abstractmethod
    async def terminate_connection(self, volume_id: str, attachment_id: str) -> None: ...

    @abc.abstractmethod
    async def capacity(self) -> Capacity: ...

    @abc.abstractmethod
    def volume_files(self) -> set[str]:
        """Names of every piece of data the backend holds (to find orphans)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop whatever the backend runs (exports)."""
