"""Encrypted volumes on the file backend: LUKS containers made, copied, grown and served
with the key manager's key as passphrase (qemu-img for LUKS1, cryptsetup for LUKS2), and
the cipher specs a volume type may give."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cumulo.volume.drivers.driver import DriverError, GiB
from cumulo.volume.drivers.file import FileDriver
from cumulo.volume.encryption import (
    Encryption,
    EncryptionError,
    check_spec,
    cryptsetup_format_args,
    parse_cipher,
    payload_offset,
    provider_of,
)
from tests.conftest import skip_or_fail

PASSPHRASE = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
PATTERN = b"cumulo-plaintext-marker-" * 40


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        skip_or_fail(f"{tool} is not installed (cumulo host-packages installs it)")


def test_cipher_specs():
    assert parse_cipher("aes-xts-plain64").mode == "xts"
    assert parse_cipher("aes-cbc-essiv:sha256").ivgen_hash == "sha256"
    assert parse_cipher(None).ivgen == "plain64"
    for bad in ("aes-xts", "twofish-xts-plain64", "aes-gcm-plain64", "aes-cbc-essiv"):
        with pytest.raises(EncryptionError):
            parse_cipher(bad)
    check_spec("aes-xts-plain64", 256)  # AES-128 in XTS
    check_spec("aes-xts-plain64", 512)  # AES-256 in XTS
    check_spec("aes-cbc-essiv:sha256", 256)
    for cipher, bits in (
        ("aes-xts-plain64", 128),
        ("aes-cbc-plain64", 512),
        ("aes-xts-plain64", 100),
    ):
        with pytest.raises(EncryptionError):
            check_spec(cipher, bits)
    args = cryptsetup_format_args(
        Encryption("luks", "aes-cbc-essiv:sha256", 256), Path("k"), Path("v")
    )
    assert args[args.index("--type") + 1] == "luks1"
    assert args[args.index("--cipher") + 1] == "aes-cbc-essiv:sha256"
    assert provider_of("nova.volume.encryptors.luks.LuksEncryptor") == "luks"
    assert provider_of("luks2") == "luks2"
    with pytest.raises(EncryptionError):
        provider_of("plain")


def test_the_passphrase_never_reaches_a_command_line():
    assert PASSPHRASE not in repr(Encryption("luks", passphrase=PASSPHRASE))


def _decrypted(path: Path, tmp: Path) -> bytes:
    """The payload's first MiB as a guest sees it, read through QEMU's LUKS driver."""
    out = tmp / "plain.raw"
    out.unlink(missing_ok=True)
    subprocess.run(
        [
            "qemu-img", "dd", "--object", f"secret,id=s0,data={PASSPHRASE}", "--image-opts",
            "-O", "raw", "bs=1M", "count=1",
            f"if=driver=luks,key-secret=s0,file.filename={path}", f"of={out}",
        ],
        check=True,
    )  # fmt: skip
    return out.read_bytes()


def _info(path: Path) -> dict:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("volume_format", ["raw", "qcow2"])
async def test_luks1_volume_lifecycle(tmp_path: Path, volume_format: str):
    _need("qemu-img")
    crypt = Encryption("luks", "aes-xts-plain64", 256, PASSPHRASE)
    driver = FileDriver(tmp_path / "volumes", volume_format=volume_format, host="here")
    image = tmp_path / "image.raw"
    image.write_bytes(PATTERN + b"\0" * (1 << 20))
    try:
        await driver.copy_image_to_volume("v1", image, "raw", 1, crypt)
        path = driver.path("v1")
        info = _info(path)  # the header reads without the key
        assert info["format"] == "luks" and info["virtual-size"] == GiB
        assert info["format-specific"]["data"]["cipher-alg"] == "aes-128"
        with path.open("rb") as f:  # at rest: ciphertext only
            assert PATTERN not in f.read(32 << 20)
        # The one key opens it, and the guest's bytes are the image's.
        assert _decrypted(path, tmp_path).startswith(PATTERN)

        await driver.extend_volume("v1", 2, crypt)
        assert _info(path)["virtual-size"] == 2 * GiB
        assert _decrypted(path, tmp_path).startswith(PATTERN)

        # Snapshot and clone: copies of the container, opened by the same passphrase.
        await driver.create_snapshot("s1", "v1", Encryption("luks"))
        await driver.create_from_snapshot("v2", "s1", 3, Encryption("luks"))
        await driver.clone_volume("v3", "v1", 2, Encryption("luks"))
        assert _info(driver.path("v2"))["virtual-size"] == 3 * GiB
        for copy in (driver.path("v2"), driver.path("v3")):
            assert _decrypted(copy, tmp_path).startswith(PATTERN)

        await driver.create_volume("v4", 1, crypt)
        assert _info(driver.path("v4"))["virtual-size"] == GiB

        local = await driver.initialize_connection("v1", "a1", {"host": "here"}, "rw", crypt)
        assert local["driver_volume_type"] == "file"
        assert local["data"]["format"] == "luks" and local["data"]["encrypted"] is True
    finally:
        await driver.close()
    # Nothing of the passphrase stays on the backend's disk.
    leftovers = list((tmp_path / "volumes" / ".keys").iterdir())
    assert leftovers == []


@pytest.mark.parametrize("volume_format", ["raw", "qcow2"])
async def test_a_container_moves_as_its_bytes(tmp_path: Path, volume_format: str):
    """Backups, images and migrations carry the container (raw on either backend): read
    out as it is, written back in (its payload grown, never cut), copied into a
    migration's placeholder and cut to its header and payload there."""
    _need("qemu-img")
    crypt = Encryption("luks", "aes-xts-plain64", 256, PASSPHRASE)
    driver = FileDriver(tmp_path / "volumes", volume_format=volume_format, host="here")
    other = FileDriver(tmp_path / "other", volume_format="qcow2", host="here")
    image = tmp_path / "image.raw"
    image.write_bytes(PATTERN)
    try:
        await driver.copy_image_to_volume("v1", image, "raw", 1, crypt)
        out = tmp_path / "out.raw"
        await driver.copy_volume_to_image("v1", out, "raw", Encryption("luks"))
        assert out.read_bytes() == driver.path("v1").read_bytes()  # never the plaintext

        await driver.copy_container_to_volume("v2", out, "raw", 2)
        assert _info(driver.path("v2"))["virtual-size"] == 2 * GiB
        assert _decrypted(driver.path("v2"), tmp_path).startswith(PATTERN)
        with pytest.raises(DriverError, match="does not fit"):
            await driver.copy_container_to_volume("v3", driver.path("v2"), "raw", 1)
        assert not driver.path("v3").exists()

        await other.create_volume("m1", 1, Encryption("luks"))  # no passphrase: room only
        connection = await other.initialize_connection(
            "m1", "mig", {"host": "here"}, "rw", Encryption("luks")
        )
        with pytest.raises(DriverError, match="only into another encrypted"):
            await driver.copy_volume_to("v1", connection)
        await driver.copy_volume_to("v1", connection, Encryption("luks"))
        await other.fit_container("m1", 1)
        assert other.path("m1").read_bytes() == driver.path("v1").read_bytes()
    finally:
        await driver.close()
        await other.close()


async def test_luks1_volume_served_over_nbd_is_the_container(tmp_path: Path):
    _need("qemu-img")
    _need("qemu-storage-daemon")
    crypt = Encryption("luks", passphrase=PASSPHRASE)
    driver = FileDriver(tmp_path / "volumes", host="here")
    await driver.create_volume("v1", 1, crypt)
    try:
        remote = await driver.initialize_connection("v1", "a1", {"host": "far"}, "rw", crypt)
        assert remote["driver_volume_type"] == "nbd"
        data = remote["data"]
        assert data["format"] == "luks" and data["encrypted"] is True
        # The export serves the container's bytes: its LUKS header, not plaintext.
        out = subprocess.run(
            ["qemu-img", "info", "--output=json", "-f", "luks", data["uri"]],
            capture_output=True,
            check=True,
        )
        assert json.loads(out.stdout)["virtual-size"] == GiB
    finally:
        await driver.terminate_connection("v1", "a1")
        await driver.close()


async def test_luks2_volume(tmp_path: Path):
    _need("cryptsetup")
    crypt = Encryption("luks2", "aes-xts-plain64", 512, PASSPHRASE)
    driver = FileDriver(tmp_path / "volumes", host="here")
    try:
        await driver.create_volume("v1", 1, crypt)
        path = driver.path("v1")
        assert path.read_bytes()[:6] == b"LUKS\xba\xbe"
        offset = payload_offset(path)
        assert offset == 16 << 20 and path.stat().st_size == offset + GiB
        dump = subprocess.run(
            ["cryptsetup", "luksDump", str(path)], capture_output=True, text=True, check=True
        ).stdout
        assert "Version:       \t2" in dump and "aes-xts-plain64" in dump
        # The key manager's key opens it (cryptsetup checks the passphrase without
        # device-mapper).
        key = tmp_path / "key"
        key.write_text(PASSPHRASE)
        subprocess.run(
            ["cryptsetup", "open", "--test-passphrase", "--key-file", str(key), str(path)],
            check=True,
        )
        await driver.extend_volume("v1", 2, crypt)
        assert path.stat().st_size == offset + 2 * GiB
        with pytest.raises(DriverError, match="LUKS2"):
            image = tmp_path / "image.raw"
            image.write_bytes(b"\0" * 4096)
            await driver.copy_image_to_volume("v2", image, "raw", 1, crypt)
        assert not driver.path("v2").exists()  # nothing half-made
    finally:
        await driver.close()


def test_payload_offset_refuses_what_is_not_luks(tmp_path: Path):
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(8192))
    with pytest.raises(ValueError):
        payload_offset(plain)
