"""A QEMU guest's emulated TPM (Nova's vTPM, as libvirt runs it): one `swtpm` per
guest, started before its QEMU and ending with it.

- state: `tpm/` in the guest's instance directory (tpm-00.permall for a TPM 1.2,
  tpm2-00.permall for a 2.0), encrypted by swtpm with a key derived (PBKDF2) from the
  secret's passphrase, which swtpm reads from a pipe: never on a command line or in a
  file;
- the control channel: `tpm.sock` in the instance directory (relative: both processes
  run there, and unix socket paths are short), QEMU's `-chardev socket` →
  `-tpmdev emulator` → `-device tpm-tis|tpm-crb`; swtpm runs `--terminate`, so a guest
  that stops takes its TPM down with it, and a start starts a new swtpm on the same
  state (a power cycle of the TPM: its permanent state kept, the volatile one reset);
- a live migration carries the state in QEMU's migration stream (the destination's
  swtpm starts on an empty directory); a cold migration copies the directory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from cumulo.compute.virt.driver import DriverError

SWTPM = "swtpm"
SWTPM_SETUP = "swtpm_setup"
# The id the guest's TPM passphrase is kept under in its secrets.json (qemu_secrets).
TPM_SECRET = "vtpm"
STATE_DIR = "tpm"
SOCKET = "tpm.sock"
PID_FILE = "swtpm.pid"
LOG_FILE = "swtpm.log"


def available() -> bool:
    """Whether this host can give guests a TPM (Debian's swtpm)."""
    return shutil.which(SWTPM) is not None


def swtpm_command_line(directory: Path, version: str, key_fd: int) -> list[str]:
    """swtpm's argv (run in the instance directory `directory`: the socket, pid and log
    are made there before it daemonizes; the state, opened later, by its absolute
    path); the passphrase is read from `key_fd`, a pipe, never given here."""
    argv = [
        SWTPM, "socket",
        "--tpmstate", f"dir={directory.resolve() / STATE_DIR},mode=0600",
        "--ctrl", f"type=unixio,path={SOCKET},mode=0600",
        "--key", f"pwdfd={key_fd},mode=aes-256-cbc,kdf=pbkdf2",
        "--log", f"file={LOG_FILE},level=1",
        "--pid", f"file={PID_FILE}",
        "--terminate",
        "--daemon",
    ]  # fmt: skip
    if version == "2.0":
        argv.append("--tpm2")
    return argv


def setup_command_line(directory: Path, version: str, key_fd: int) -> list[str]:
    """swtpm_setup's argv: a new TPM manufactured as libvirt has it made (its
    endorsement key created), its state encrypted with the passphrase read from
    `key_fd` (the same key derivation as swtpm's --key pwdfd)."""
    argv = [
        SWTPM_SETUP,
        "--tpmstate", str(directory.resolve() / STATE_DIR),
        "--createek",
        "--pwdfile-fd", str(key_fd),
        "--cipher", "aes-256-cbc",
        "--not-overwrite",
        "--logfile", str(directory.resolve() / "swtpm_setup.log"),
    ]  # fmt: skip
    if version == "2.0":
        argv.append("--tpm2")
    return argv


def manufactured(directory: Path) -> bool:
    """Whether the guest's TPM has its permanent state (made, or brought along)."""
    return any((directory / STATE_DIR).glob("*.permall"))


def qemu_arguments(model: str) -> list[str]:
    """QEMU's part: the emulator on the control socket, the TPM's front end."""
    return [
        "-chardev", f"socket,id=chrtpm,path={SOCKET}",
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
        "-device", f"{model},tpmdev=tpm0",
    ]  # fmt: skip


async def _run_with_passphrase(argv_of, directory: Path, passphrase: str, what: str) -> None:
    """Run `argv_of(fd)` in `directory` with the passphrase readable on a pipe `fd` (never
    in argv or a file); DriverError with its output when it fails. Its output goes to a
    file, not a pipe: swtpm's daemon keeps the parent's descriptors (as QEMU's, see
    qemu_process.launch)."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, passphrase.encode())
    finally:
        os.close(write_fd)
    with tempfile.TemporaryFile() as out:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv_of(read_fd),
                cwd=directory,
                pass_fds=[read_fd],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # a Ctrl-C of the agent must not reach it
            )
            returncode = await proc.wait()
        finally:
            os.close(read_fd)
        if returncode != 0:
            out.seek(0)
            err = out.read().decode(errors="replace").strip()[-500:]
            raise DriverError(f"{what} failed: {err}")


async def start(
    directory: Path,
    version: str,
    passphrase: str,
    *,
    manufacture: bool = True,
    timeout: float = 10.0,
) -> None:
    """A swtpm for the guest in `directory`, listening once this returns (one left from
    before is stopped first: its QEMU is gone). A TPM without state is manufactured
    first (swtpm_setup) unless `manufacture` is False (a live migration's destination:
    the state comes in QEMU's migration stream)."""
    await stop(directory)
    state = directory / STATE_DIR
    state.mkdir(mode=0o700, exist_ok=True)
    if manufacture and not manufactured(directory):
        await _run_with_passphrase(
            lambda fd: setup_command_line(directory, version, fd),
            directory,
            passphrase,
            "manufacturing the guest's TPM (swtpm_setup)",
        )
    (directory / SOCKET).unlink(missing_ok=True)
    await _run_with_passphrase(
        lambda fd: swtpm_command_line(directory, version, fd), directory, passphrase, "swtpm"
    )
    deadline = time.monotonic() + timeout
    while not (directory / SOCKET).exists():
        if time.monotonic() > deadline:
            raise DriverError(f"swtpm never listened on {directory / SOCKET}")
        await asyncio.sleep(0.02)


def pid(directory: Path) -> int | None:
    try:
        return int((directory / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def running(directory: Path) -> bool:
    """Whether the swtpm its pid file names still runs (not a zombie, not a reused pid)."""
    found = pid(directory)
    if found is None:
        return False
    try:
        cmdline = Path(f"/proc/{found}/cmdline").read_bytes()
        state = Path(f"/proc/{found}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in (b"Z", b"X"):
        return False
    # This guest's swtpm, not a process that got the pid since: its state dir says.
    state_option = f"dir={directory.resolve() / STATE_DIR},".encode()
    return cmdline.startswith(SWTPM.encode()) and state_option in cmdline


async def stop(directory: Path, grace: float = 2.0) -> None:
    """The guest's swtpm, if one still runs, stopped (its state stays on disk)."""
    found = pid(directory)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not running(directory):
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(found, sig)  # type: ignore[arg-type]
        deadline = time.monotonic() + wait
        while running(directory) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    if running(directory):
        raise DriverError(f"swtpm {found} of {directory.name} did not die")
    (directory / PID_FILE).unlink(missing_ok=True)


def export_state(directory: Path) -> dict[str, str]:
    """The state files (encrypted as they are), for a cold migration: name -> base64."""
    state = directory / STATE_DIR
    if not state.is_dir():
        return {}
    # Its .lock is swtpm's own, made again by the destination's.
    return {
        p.name: base64.b64encode(p.read_bytes()).decode()
        for p in state.iterdir()
        if p.is_file() and not p.name.startswith(".")
    }


def import_state(directory: Path, files: dict[str, str]) -> None:
    """State files of a guest that comes from another host (see export_state)."""
    state = directory / STATE_DIR
    state.mkdir(mode=0o700, exist_ok=True)
    for name, data in files.items():
        if "/" in name or name.startswith("."):
            raise DriverError(f"refusing a TPM state file named {name!r}")
        target = state / name
        target.write_bytes(base64.b64decode(data))
        target.chmod(0o600)


def drop_state(directory: Path) -> None:
    """A TPM of another version or model starts afresh (as Nova removes the old data)."""
    shutil.rmtree(directory / STATE_DIR, ignore_errors=True)
