"""The QEMU driver's emulated TPM, as command lines: QEMU's emulator backend on the
guest's swtpm socket with the TIS or CRB front end, swtpm's and swtpm_setup's options
(the state encrypted with a key derived from the passphrase they read from a pipe: the
passphrase itself is never an argument), and the state files a cold migration carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt import qemu_tpm
from cumulo.compute.virt.driver import DriverError


def _machine(**fields) -> qp.MachineConfig:
    return qp.MachineConfig(uuid="u" * 36, name="g", vcpus=1, memory_mb=256, accel="tcg", **fields)


def _after(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == option]


def test_a_guest_without_tpm_has_no_tpm_device(tmp_path: Path):
    argv = qp.command_line(_machine(), tmp_path, 3)
    assert "-tpmdev" not in argv


@pytest.mark.parametrize("model", ["tpm-tis", "tpm-crb"])
def test_the_tpm_is_the_emulator_on_the_swtpm_socket(tmp_path: Path, model: str):
    argv = qp.command_line(_machine(tpm_version="2.0", tpm_model=model), tmp_path, 3)
    assert "socket,id=chrtpm,path=tpm.sock" in _after(argv, "-chardev")
    assert _after(argv, "-tpmdev") == ["emulator,id=tpm0,chardev=chrtpm"]
    assert f"{model},tpmdev=tpm0" in _after(argv, "-device")


def test_swtpm_reads_its_passphrase_from_a_pipe_and_encrypts_the_state(tmp_path: Path):
    argv = qemu_tpm.swtpm_command_line(tmp_path, "1.2", 7)
    assert argv[:2] == ["swtpm", "socket"]
    assert _after(argv, "--key") == ["pwdfd=7,mode=aes-256-cbc,kdf=pbkdf2"]
    assert _after(argv, "--tpmstate") == [f"dir={tmp_path.resolve() / 'tpm'},mode=0600"]
    assert _after(argv, "--ctrl") == ["type=unixio,path=tpm.sock,mode=0600"]
    assert "--terminate" in argv and "--tpm2" not in argv
    assert "--tpm2" in qemu_tpm.swtpm_command_line(tmp_path, "2.0", 7)


def test_swtpm_setup_manufactures_with_the_same_key(tmp_path: Path):
    argv = qemu_tpm.setup_command_line(tmp_path, "2.0", 9)
    assert argv[0] == "swtpm_setup" and "--createek" in argv and "--tpm2" in argv
    assert _after(argv, "--pwdfile-fd") == ["9"] and _after(argv, "--cipher") == ["aes-256-cbc"]
    assert "--not-overwrite" in argv


def test_the_state_files_travel_and_nothing_else(tmp_path: Path):
    source, target = tmp_path / "a", tmp_path / "b"
    (source / "tpm").mkdir(parents=True)
    (source / "tpm" / "tpm2-00.permall").write_bytes(b"\x00encrypted\xff")
    (source / "tpm" / ".lock").write_bytes(b"")
    exported = qemu_tpm.export_state(source)
    assert set(exported) == {"tpm2-00.permall"}
    target.mkdir()
    qemu_tpm.import_state(target, exported)
    moved = target / "tpm" / "tpm2-00.permall"
    assert moved.read_bytes() == b"\x00encrypted\xff"
    assert moved.stat().st_mode & 0o777 == 0o600
    assert qemu_tpm.manufactured(target)
    with pytest.raises(DriverError):
        qemu_tpm.import_state(target, {"../escape": ""})
