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


def _write(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


async def test_a_volume_is_copied_into_another_backend_by_file_and_over_nbd(tmp_path: Path):
    """Migration's copy: the same bytes land in the other backend's volume, whether it is
    reached as a file on this host (raw into qcow2) or through its NBD export."""
    source = FileDriver(tmp_path / "a", host="here")
    local = FileDriver(tmp_path / "b", volume_format="qcow2", host="here")
    remote = FileDriver(tmp_path / "c", host="there")
    await source.create_volume("v", 1)
    _write(source.path("v"), 12345, b"migrated bytes")
    _write(source.path("v"), (1 << 30) - 4, b"tail")
    try:
        for dest, connector in ((local, {"host": "here"}), (remote, {"host": "here"})):
            await dest.create_volume("new", 1)
            connection = await dest.initialize_connection("new", "m", connector, "rw")
            try:
                await source.copy_volume_to("v", connection)
            finally:
                await dest.terminate_connection("new", "m")
            await dest.rename_migrated_volume("new", "v")
            assert not dest.path("new").exists()
            out = tmp_path / f"out-{dest.format}-{dest.host}.raw"
            await dest.copy_volume_to_image("v", out, "raw")
            assert out.read_bytes() == source.path("v").read_bytes()
    finally:
        for driver in (source, local, remote):
            await driver.close()


async def test_unmanaged_data_stays_under_a_new_name_and_is_adopted_again(tmp_path: Path):
    from cumulo.volume.drivers.driver import InvalidReference

    driver = FileDriver(tmp_path / "v", host="here")
    await driver.create_volume("old", 1)
    _write(driver.path("old"), 0, b"keep me")
    await driver.create_snapshot("snap", "old")
    await driver.unmanage("old")
    await driver.unmanage_snapshot("snap")
    assert {o.name for o in await driver.list_objects("volume")} == {"unmanaged-volume-old"}
    assert [o.name for o in await driver.list_objects("snapshot")] == ["unmanaged-snapshot-snap"]

    ref = {"source-name": "unmanaged-volume-old"}
    assert await driver.manage_existing_get_size(ref, "volume") == 1
    assert await driver.manage_existing("new", ref) == 1
    assert driver.path("new").read_bytes()[:7] == b"keep me"
    assert await driver.manage_existing_snapshot("s2", {"source-name": "unmanaged-snapshot-snap"})
    assert driver.snapshot_path("s2").exists()

    # A foreign file of a size not in whole GiB is grown to the size recorded.
    (driver.root / "disk.img").write_bytes(b"x" * 4096)
    assert await driver.manage_existing("other", {"source-name": "disk.img"}) == 1
    assert driver.path("other").stat().st_size == 1 << 30

    for bad in ({"source-name": "missing"}, {"source-id": "x"}, {"source-name": "../v"}, "x"):
        with pytest.raises(InvalidReference):
            await driver.manage_existing_get_size(bad, "volume")  # type: ignore[arg-type]
    qcow = driver.root / "image.qcow2"
    import subprocess

    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(qcow), "1G"], check=True)
    with pytest.raises(InvalidReference, match="qcow2"):
        await driver.manage_existing_get_size({"source-name": "image.qcow2"}, "volume")
    await driver.close()
