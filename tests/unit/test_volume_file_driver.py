"""The file volume driver: an attached volume (held open and locked by its NBD export,
as for a guest on another host) can still be snapshotted and cloned."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cumulo.volume.drivers.file import FileDriver

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-storage-daemon") is None and os.environ.get("CI") != "true",
    reason="qemu-storage-daemon is not installed (cumulo host-packages installs it)",
)


async def test_snapshot_and_clone_of_an_exported_volume(tmp_path: Path):
    driver = FileDriver(tmp_path / "volumes", volume_format="qcow2", host="here")
    await driver.create_volume("v1", 1)
    connection = await driver.initialize_connection(
        "v1", "attachment-1", {"host": "elsewhere"}, "rw"
    )
    assert connection["driver_volume_type"] == "nbd"
    try:
        await driver.create_snapshot("s1", "v1")
        await driver.clone_volume("v2", "v1", 2)
        assert driver.snapshot_path("s1").exists() and driver.path("v2").exists()
    finally:
        await driver.terminate_connection("v1", "attachment-1")
        await driver.close()
