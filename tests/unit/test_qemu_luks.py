"""Encrypted volumes on the QEMU driver: a LUKS1 volume is QEMU's own LUKS driver over
the file or NBD node, opened with a secret object QEMU reads from a 0600 file that
exists only while it reads it (never the passphrase in argv or a QMP command); the
passphrases are kept on the host beside guest.json, not in it, and go with their
volume; LUKS2 (dm-crypt's) is refused before anything is attached."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt import qemu_secrets
from cumulo.compute.virt.driver import BlockDevice, DriverError, VolumeEncryption
from cumulo.compute.virt.fake import FakeDriver
from cumulo.compute.virt.qemu import QemuDriver, _volume_drive
from tests.unit.test_fake_driver import spec as fake_guest

PASSPHRASE = bytes(range(32)).hex()
VOLUME = "0123456789ab-cdef-0123-4567-89abcdef0123"
GUEST = "11111111-2222-3333-4444-555555555555"


def encrypted(provider: str = "luks", kind: str = "file", **data: Any) -> BlockDevice:
    where = {"path": "/srv/volumes/v1"} if kind == "file" else {"uri": "nbd://10.0.0.5:10809/v1"}
    return BlockDevice(
        VOLUME,
        "/dev/vdc",
        {
            "driver_volume_type": kind,
            "data": {**where, "format": "luks", "encrypted": True, **data},
        },
        encryption=VolumeEncryption(provider, PASSPHRASE, "aes-xts-plain64", 256),
    )


def test_the_passphrase_is_not_in_the_repr_of_a_device():
    device = encrypted()
    assert PASSPHRASE not in repr(device)
    assert "provider='luks'" in repr(device)


def test_a_luks_volume_is_the_luks_driver_over_its_file_with_a_key_secret():
    drive = _volume_drive(encrypted(), slot=0x0B)
    assert (drive.format, drive.key_secret) == ("luks", "vol-0123456789ab-key")
    assert qp.blockdev_args(drive) == {
        "node-name": "vol-0123456789ab",
        "driver": "luks",
        "read-only": False,
        "key-secret": "vol-0123456789ab-key",
        "file": {"driver": "file", "filename": "/srv/volumes/v1", "read-only": False},
    }
    # What guest.json keeps of it: the secret's id, never the passphrase.
    assert PASSPHRASE not in json.dumps(drive.__dict__)


def test_a_luks_volume_over_nbd_is_the_luks_driver_over_the_nbd_node():
    drive = _volume_drive(encrypted(kind="nbd", format="raw"))
    args = qp.blockdev_args(drive, nbd_fd="vol-0123456789ab")
    assert args["driver"] == "luks" and args["key-secret"] == drive.key_secret
    assert args["file"]["driver"] == "nbd"
    assert args["file"]["server"] == {"type": "fd", "str": "vol-0123456789ab"}


@pytest.mark.parametrize("provider", ["luks2", "plain"])
def test_luks2_and_plain_volumes_are_refused_for_the_host_has_no_dm_crypt(provider):
    with pytest.raises(DriverError, match=r"opened by the host's dm-crypt \(os-brick\)"):
        _volume_drive(encrypted(provider))


def test_an_encrypted_volume_without_its_key_is_never_opened_as_plain():
    device = encrypted()
    keyless = BlockDevice(device.volume_id, device.device_name, device.connection_info)
    with pytest.raises(DriverError, match="no key was given"):
        _volume_drive(keyless)
    unflagged = BlockDevice(
        VOLUME, "/dev/vdc", {"driver_volume_type": "file", "data": {"path": "/v", "format": "luks"}}
    )
    with pytest.raises(DriverError, match="does not say is encrypted"):
        _volume_drive(unflagged)
    with pytest.raises(DriverError, match="opens raw LUKS containers only"):
        _volume_drive(encrypted(format="qcow2"))


def test_the_command_line_names_a_secret_file_never_the_passphrase(tmp_path):
    drive = _volume_drive(encrypted(), slot=0x0B)
    machine = qp.MachineConfig(GUEST, "vm", 1, 256, "tcg", drives=[drive])
    key_file = tmp_path / "vol-0123456789ab-key.key"
    argv = qp.command_line(machine, tmp_path, 3, secret_files={drive.key_secret: key_file})
    assert PASSPHRASE not in " ".join(argv)
    at = argv.index(f"secret,id=vol-0123456789ab-key,file={key_file},format=raw")
    assert argv[at - 1] == "-object"
    blockdev = json.loads(argv[argv.index("-blockdev", at) + 1])
    assert blockdev["key-secret"] == "vol-0123456789ab-key"
    with pytest.raises(DriverError, match="no passphrase"):
        qp.command_line(machine, tmp_path, 3)


def test_kept_passphrases_are_owner_only_and_go_with_their_volume(tmp_path):
    qemu_secrets.keep(tmp_path, {"a-key": "aa", "b-key": "bb"})
    path = tmp_path / qemu_secrets.SECRETS
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with qemu_secrets.secret_files(tmp_path, ["a-key"]) as files:
        assert files["a-key"].read_text() == "aa"
        assert stat.S_IMODE(files["a-key"].stat().st_mode) == 0o600
    assert not files["a-key"].exists()
    qemu_secrets.forget(tmp_path, "a-key")
    assert qemu_secrets.load(tmp_path) == {"b-key": "bb"}
    qemu_secrets.forget(tmp_path, "b-key")
    assert not path.exists()
    with pytest.raises(DriverError, match="not kept on this host"):
        with qemu_secrets.secret_files(tmp_path, ["a-key"]):
            pass


class RecordingQemu(QemuDriver):
    """The driver with a running guest whose monitor records the commands it gets."""

    def __init__(self, state_dir: Path, fail: str | None = None) -> None:
        super().__init__(state_dir, "unit-host")
        self.commands: list[tuple[str, dict[str, Any] | None]] = []
        self.secret_seen: tuple[str, int] | None = None
        self.fail = fail

    def _alive(self, uuid: str) -> bool:
        return True

    async def _qmp(self, uuid: str, command: str, args: dict[str, Any] | None = None) -> Any:
        self.commands.append((command, args))
        if command == "object-add":
            key_file = Path(args["file"])
            self.secret_seen = (key_file.read_text(), stat.S_IMODE(key_file.stat().st_mode))
        if command == self.fail:
            raise DriverError(f"{command} refused")
        return [] if command == "qom-list" else {}


def recording_guest(tmp_path: Path, fail: str | None = None) -> RecordingQemu:
    driver = RecordingQemu(tmp_path, fail)
    driver._dir(GUEST).mkdir(parents=True)
    machine = {"machine_type": "pc", "drives": [], "nics": []}
    driver._save(GUEST, {"machine": machine, "volumes": {}, "suspended": False})
    return driver


async def test_hot_plug_adds_the_secret_object_then_the_node_and_detach_removes_both(tmp_path):
    driver = recording_guest(tmp_path)
    await driver.attach_volume(GUEST, encrypted())
    names = [c for c, _ in driver.commands]
    assert names == ["object-add", "blockdev-add", "device_add"]
    assert driver.commands[0][1]["qom-type"] == "secret"
    assert "data" not in driver.commands[0][1]  # the passphrase travels in a 0600 file only
    assert driver.secret_seen == (PASSPHRASE, 0o600)
    directory = driver._dir(GUEST)
    assert not list(directory.glob("*.key"))
    assert qemu_secrets.load(directory) == {"vol-0123456789ab-key": PASSPHRASE}
    assert PASSPHRASE not in (directory / "guest.json").read_text()

    driver.commands.clear()
    await driver.detach_volume(GUEST, VOLUME)
    names = [c for c, _ in driver.commands]
    assert names[-2:] == ["blockdev-del", "object-del"]
    assert driver.commands[-1][1] == {"id": "vol-0123456789ab-key"}
    assert not (directory / qemu_secrets.SECRETS).exists()


async def test_a_failed_hot_plug_leaves_no_secret_behind(tmp_path):
    driver = recording_guest(tmp_path, fail="blockdev-add")
    with pytest.raises(DriverError, match="blockdev-add refused"):
        await driver.attach_volume(GUEST, encrypted())
    assert [c for c, _ in driver.commands] == ["object-add", "blockdev-add", "object-del"]
    assert not (driver._dir(GUEST) / qemu_secrets.SECRETS).exists()
    assert driver._load(GUEST)["volumes"] == {}


async def test_a_luks2_volume_is_refused_with_nothing_half_attached(tmp_path):
    driver = recording_guest(tmp_path)
    with pytest.raises(DriverError, match="LUKS2 volumes are opened by the host's dm-crypt"):
        await driver.attach_volume(GUEST, encrypted("luks2"))
    assert driver.commands == []
    assert driver._load(GUEST)["volumes"] == {}
    assert not (driver._dir(GUEST) / qemu_secrets.SECRETS).exists()


async def test_the_fake_driver_records_the_encryption_it_was_handed():
    driver = FakeDriver("fake-host")
    guest = fake_guest()
    await driver.spawn(guest)
    await driver.attach_volume(guest.uuid, encrypted("luks2"))
    assert driver.volume_encryptions(guest.uuid) == {VOLUME: "luks2"}
    device = encrypted()
    keyless = BlockDevice("v2", "/dev/vdd", device.connection_info)
    with pytest.raises(DriverError, match="no key was given"):
        await driver.attach_volume(guest.uuid, keyless)
