"""`cumulo down` and `cumulo purge`: stopping a cloud, and removing everything it left.

A stopped cloud leaves its guests and data plane running on purpose (as Nova's and
Neutron's agents do: guests keep their network while the services restart). `purge`
removes them: the QEMU guests, the NBD exports (qemu-storage-daemon), the network
namespaces (with the bridges, taps, veths, nftables rulesets and dnsmasq inside them) and,
when asked, the state dir. Everything is found by the state dir's scope (the hash the
linuxbridge driver prefixes its names with), so a cloud whose state dir was already
deleted can still be purged by its scope.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cumulo.network.dataplane.linuxbridge import PREFIX, REGISTRY, scope_of

# The processes a cloud starts that outlive it; others (dnsmasq, the metadata proxy's
# threads) live in its namespaces and end with them.
OUTLIVING_PROGRAMS = ("qemu-system-x86_64", "qemu-storage-daemon")


@dataclass
class PurgeReport:
    scope: str
    guests: list[int] = field(default_factory=list)
    exports: list[int] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    state_dir_removed: bool = False


def running_pid(state_dir: Path) -> int | None:
    """The pid of the `cumulo up`/agent holding the state dir's lock, or None."""
    path = state_dir / "cumulo.pid"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text.isdecimal() else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def stop_cloud(state_dir: Path, timeout: float = 60.0) -> int | None:
    """SIGTERM the process serving the state dir and wait for it to let go of the lock."""
    pid = running_pid(state_dir)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(state_dir) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"cumulo (pid {pid}) did not stop within {timeout:.0f} s")
        time.sleep(0.2)
    return pid


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _belongs_to(argv: list[str], scope: str) -> bool:
    """Whether an argument names a path inside a state dir of this scope (the dir may be
    gone: the scope is a hash of its path, so every ancestor of the path is tried)."""
    for arg in argv:
        for word in arg.replace(",", "=").split("="):
            if not word.startswith("/"):
                continue
            for parent in Path(word).parents:
                if parent != Path("/") and scope_of(parent) == scope:
                    return True
    return False


def cloud_processes(scope: str) -> dict[str, list[int]]:
    """The guests and NBD exports of the scope's cloud, by program."""
    found: dict[str, list[int]] = {name: [] for name in OUTLIVING_PROGRAMS}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdecimal():
            continue
        argv = _argv(int(entry.name))
        if argv and os.path.basename(argv[0]) in found and _belongs_to(argv, scope):
            found[os.path.basename(argv[0])].append(int(entry.name))
    return found


def cloud_namespaces(scope: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(f"{PREFIX}{scope}-"))


def _kill(pids: list[int], timeout: float = 10.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _delete_namespace(ns: str) -> None:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    _kill([int(p) for p in out.split() if p.isdecimal()], timeout=5.0)
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def purge(
    state_dir: Path | None = None, scope: str | None = None, remove_state_dir: bool = False
) -> PurgeReport:
    """Remove what the cloud of `state_dir` (or of `scope`) left on this host. The cloud
    itself must be stopped first (see stop_cloud)."""
    if scope is None:
        if state_dir is None:
            raise ValueError("a state dir or a scope is needed")
        scope = scope_of(state_dir)
    report = PurgeReport(scope)
    processes = cloud_processes(scope)
    report.guests = processes["qemu-system-x86_64"]
    report.exports = processes["qemu-storage-daemon"]
    _kill(report.guests + report.exports)
    report.namespaces = cloud_namespaces(scope)
    for ns in report.namespaces:
        _delete_namespace(ns)
    (REGISTRY / scope).unlink(missing_ok=True)
    if remove_state_dir and state_dir is not None and state_dir.exists():
        shutil.rmtree(state_dir)
        report.state_dir_removed = True
    return report
