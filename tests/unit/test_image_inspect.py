"""What image inspection accepts and refuses, on real qemu-img files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cumulo.image.inspect import ImageRejected, inspect, sniff

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

TIMEOUT, MEMORY = 10.0, 1 << 30


def _make(path: Path, fmt: str, *opts: str, size: str = "2M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *opts, str(path), size], check=True)
    return path


async def test_qcow2_declared_qcow2_is_accepted_with_its_virtual_size(tmp_path: Path):
    found = await inspect(_make(tmp_path / "a.qcow2", "qcow2"), "qcow2", TIMEOUT, MEMORY)
    assert (found.format, found.virtual_size) == ("qcow2", 2 << 20)


async def test_qcow2_declared_raw_is_refused(tmp_path: Path):
    with pytest.raises(ImageRejected, match="does not match disk_format raw"):
        await inspect(_make(tmp_path / "a.qcow2", "qcow2"), "raw", TIMEOUT, MEMORY)


async def test_raw_declared_qcow2_is_refused(tmp_path: Path):
    raw = tmp_path / "a.raw"
    raw.write_bytes(b"\0" * 4096)
    with pytest.raises(ImageRejected, match="it is raw"):
        await inspect(raw, "qcow2", TIMEOUT, MEMORY)


async def test_iso_and_raw_data_are_accepted_as_raw(tmp_path: Path):
    raw = tmp_path / "a.iso"
    raw.write_bytes(b"\0" * 65536)
    assert (await inspect(raw, "iso", TIMEOUT, MEMORY)).virtual_size == 65536


async def test_backing_file_and_data_file_are_refused(tmp_path: Path):
    backed = _make(tmp_path / "b.qcow2", "qcow2", "-b", "/etc/hostname", "-F", "raw")
    with pytest.raises(ImageRejected, match="backing file"):
        await inspect(backed, "qcow2", TIMEOUT, MEMORY)
    external = _make(tmp_path / "d.qcow2", "qcow2", "-o", f"data_file={tmp_path / 'd.raw'}")
    with pytest.raises(ImageRejected, match="external data file"):
        await inspect(external, "qcow2", TIMEOUT, MEMORY)


async def test_vmdk_sparse_is_accepted_and_descriptors_are_refused(tmp_path: Path):
    sparse = _make(tmp_path / "s.vmdk", "vmdk")
    assert (await inspect(sparse, "vmdk", TIMEOUT, MEMORY)).format == "vmdk"
    flat = _make(tmp_path / "f.vmdk", "vmdk", "-o", "subformat=monolithicFlat")
    with pytest.raises(ImageRejected, match="descriptor"):
        await inspect(flat, "vmdk", TIMEOUT, MEMORY)


def test_sniff_recognises_headers():
    assert sniff(b"QFI\xfb" + b"\0" * 100) == "qcow2"
    assert sniff(b"KDMV" + b"\0" * 100) == "vmdk"
    assert sniff(b'# Disk DescriptorFile\ncreateType="monolithicFlat"') == "vmdk-descriptor"
    assert sniff(b"\0" * 512) == "raw"
