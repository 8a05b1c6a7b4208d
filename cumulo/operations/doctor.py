"""`cumulo doctor`: what this host can do for a cloud, and for each thing it cannot, the fix.

Every check is read-only on the host (the network namespace probe makes one namespace and
removes it at once) and answers in a few seconds; none needs the cloud to be running.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cumulo.common.config import CumuloConfig, database_url
from cumulo.common.db import service_database_url
from cumulo.operations.host_packages import host_packages, missing_packages, package_manager

OK, WARN, FAIL = "ok", "warn", "fail"
LOW_DISK_BYTES = 5 * 1024**3


@dataclass
class Check:
    name: str
    status: str  # ok / warn / fail
    detail: str
    fix: str = ""


def _version(argv: list[str]) -> str | None:
    """The first line a `--version` prints, or None when the program is missing."""
    if shutil.which(argv[0]) is None:
        return None
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else None


def check_root() -> Check:
    if os.geteuid() == 0:
        return Check("root", OK, "running as root: the linuxbridge data plane and taps can be made")
    return Check(
        "root",
        WARN,
        "not root: networks have no data plane (noop) and QEMU guests get no NIC",
        "run `sudo cumulo up` (or as root) for real networks",
    )


def check_host_packages() -> Check:
    if package_manager() is None:
        names = " ".join(p.name for p in host_packages())
        return Check(
            "host packages", WARN, "not a Debian/Ubuntu host: cannot check", f"install {names}"
        )
    missing = missing_packages(host_packages())
    if not missing:
        return Check("host packages", OK, "every package cumulo uses is installed")
    return Check(
        "host packages",
        FAIL,
        "missing: " + ", ".join(f"{p.name} ({p.why})" for p in missing),
        "sudo cumulo host-packages --install",
    )


def check_qemu() -> list[Check]:
    checks = []
    for name, argv, package in (
        ("qemu", ["qemu-system-x86_64", "--version"], "qemu-system-x86"),
        ("qemu-img", ["qemu-img", "--version"], "qemu-utils"),
    ):
        version = _version(argv)
        if version is None:
            checks.append(
                Check(name, FAIL, f"{argv[0]} not found", f"sudo apt-get install {package}")
            )
        else:
            checks.append(Check(name, OK, version))
    return checks


def check_accelerator(config: CumuloConfig) -> Check:
    """KVM only counts when a guest kernel makes progress under it (the driver's own probe)."""
    from cumulo.compute.virt import qemu_process as qp
    from cumulo.testing.guest import default_cache_dir

    if config.compute.qemu_accel in ("kvm", "tcg"):
        return Check(
            "accelerator", OK, f"forced by [compute] qemu_accel: {config.compute.qemu_accel}"
        )
    if not os.path.exists("/dev/kvm"):
        return Check(
            "accelerator",
            WARN,
            "no /dev/kvm: guests run under TCG (emulation, several times slower)",
            "enable virtualization (VT-x/AMD-V, or nested virtualization for a VM)",
        )
    if not qp.kvm_usable():
        return Check("accelerator", WARN, "/dev/kvm is not usable by this user: TCG", "run as root")
    kernels = sorted(default_cache_dir().glob("*/vmlinuz"))
    if shutil.which(qp.QEMU) is None or not kernels:
        return Check(
            "accelerator",
            WARN,
            "/dev/kvm opens; not probed (needs QEMU and the demo guest's kernel)",
            "cumulo up --with-demo-image builds the kernel the probe boots",
        )
    if asyncio.run(qp.probe_kvm(kernels[-1])):
        return Check("accelerator", OK, "KVM: a guest kernel boots under it")
    return Check(
        "accelerator",
        WARN,
        "/dev/kvm opens but a guest kernel does not boot under KVM: guests run under TCG",
        "nothing to do: the driver falls back to TCG by itself",
    )


def check_data_plane() -> list[Check]:
    from cumulo.network.dataplane.driver import has_net_admin
    from cumulo.network.dataplane.linuxbridge import TOOLS

    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    checks = [
        Check(
            "data plane tools",
            FAIL if missing else OK,
            f"missing: {', '.join(missing)}" if missing else "ip, nft, dnsmasq, sysctl found",
            "sudo cumulo host-packages --install" if missing else "",
        )
    ]
    if shutil.which("dhcp_release") is None:
        checks.append(
            Check(
                "dhcp_release",
                WARN,
                "not found: a deleted port's lease is freed by restarting dnsmasq",
                "sudo apt-get install dnsmasq-utils",
            )
        )
    if has_net_admin() and not missing:
        name = f"cmlo-doctor-{uuid.uuid4().hex[:8]}"
        made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if made.returncode == 0:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
            checks.append(Check("network namespaces", OK, "a namespace can be made and removed"))
        else:
            checks.append(
                Check(
                    "network namespaces",
                    FAIL,
                    f"ip netns add failed: {made.stderr.strip()}",
                    "run on a host (or container) that allows network namespaces",
                )
            )
    return checks


def check_disk(state_dir: Path) -> Check:
    where = state_dir if state_dir.exists() else state_dir.parent
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    detail = f"{free / 1024**3:.1f} GiB free in {where}"
    if free < LOW_DISK_BYTES:
        return Check("disk", WARN, detail, "free space or use --state-dir on a larger disk")
    return Check("disk", OK, detail)


async def _database_answers(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def check_database(config: CumuloConfig, state_dir: Path) -> Check:
    url = database_url(config, state_dir, "identity")
    if url.startswith("sqlite"):
        where = state_dir if state_dir.exists() else state_dir.parent
        if os.access(where, os.W_OK):
            return Check("database", OK, f"SQLite files in {state_dir}")
        return Check("database", FAIL, f"{where} is not writable", "use another --state-dir")
    # Each service has its own database on the server; Identity's is made first.
    url = service_database_url(url, "identity").render_as_string(hide_password=False)
    shown = url.split("@")[-1]  # never the password
    return _reachable(
        "database",
        _database_answers(url),
        f"{shown} answers",
        shown,
        "start the database server, or fix [database] url in cumulo.toml",
    )


def check_broker(config: CumuloConfig) -> Check:
    url = config.messaging.transport_url
    if url.startswith("memory"):
        return Check("message bus", OK, "in-process (all-in-one)")
    shown = url.split("@")[-1]  # never the password

    async def connect() -> None:
        import aio_pika

        connection = await aio_pika.connect(url.replace("rabbit://", "amqp://", 1), timeout=10)
        await connection.close()

    return _reachable(
        "message bus",
        connect(),
        f"RabbitMQ at {shown} answers",
        shown,
        "start RabbitMQ, or fix [messaging] transport_url in cumulo.toml",
    )


def _reachable(name: str, probe: Coroutine[Any, Any, None], ok: str, shown: str, fix: str) -> Check:
    try:
        asyncio.run(asyncio.wait_for(probe, 15))
    except Exception as exc:  # noqa: BLE001 - any driver error means "not reachable"
        return Check(name, FAIL, f"{shown}: {type(exc).__name__}: {exc}".splitlines()[0], fix)
    return Check(name, OK, ok)


def run_checks(config: CumuloConfig, state_dir: Path) -> list[Check]:
    return [
        check_root(),
        check_host_packages(),
        *check_qemu(),
        check_accelerator(config),
        *check_data_plane(),
        check_disk(state_dir),
        check_database(config, state_dir),
        check_broker(config),
    ]


def as_dicts(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(check) for check in checks]
