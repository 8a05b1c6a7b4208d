"""Serial consoles: the URL the API answers (Nova's nova-serialproxy form), the QEMU
guest's serial port (logged and listening), which guests have one, and the fake guest's
terminal (a tty's echo)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from cumulo.common.config import CumuloConfig
from cumulo.compute import consoles
from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.driver import ConsoleTypeUnavailable
from cumulo.compute.virt.fake_console import FakeSerialPort
from cumulo.compute.virt.qemu import QemuDriver
from cumulo.testing.tempest import __main__ as harness
from cumulo.testing.tempest import conf


def test_the_url_is_the_serial_proxys_websocket_with_the_token():
    config = CumuloConfig()
    config.ports.serialproxy = 16083
    url = consoles.serial_access_url(config, "a+b/c")
    assert url == f"ws://{config.catalog_host}:16083/?token=a%2Bb%2Fc"
    config.compute.serialproxy_base_url = "wss://console.example:443/"
    assert consoles.serial_access_url(config, "t") == "wss://console.example:443/?token=t"


def test_the_serial_port_logs_to_the_console_log_and_listens_on_a_socket(tmp_path: Path):
    config = qp.MachineConfig(
        uuid="0e5b1c9e-0000-4000-8000-000000000001",
        name="vm",
        vcpus=1,
        memory_mb=256,
        accel="tcg",
    )
    argv = qp.command_line(config, tmp_path, qmp_fd=3)
    chardevs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-chardev"]
    [serial] = [c for c in chardevs if "id=serial0" in c]
    options = serial.split(",")
    assert options[0] == "socket" and f"path={qp.SERIAL_SOCKET}" in options
    assert {"server=on", "wait=off", "logappend=on"} <= set(options)
    assert f"logfile={tmp_path / 'console.log'}" in options
    assert argv[argv.index("-serial") + 1] == "chardev:serial0"


@pytest.mark.parametrize(
    ("filename", "available"),
    [
        ("disconnected:unix:serial.sock,server=on", True),
        ("unix:serial.sock,server=on", True),
        ("file", False),  # started before serial.sock: its serial port is a file
    ],
)
async def test_only_guests_with_the_socket_have_a_serial_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filename: str, available: bool
):
    driver = QemuDriver(tmp_path, "h", accel="tcg")

    async def qmp(uuid: str, command: str, args=None):
        assert command == "query-chardev"
        return [{"label": "qmp", "filename": "unix"}, {"label": "serial0", "filename": filename}]

    monkeypatch.setattr(driver, "_qmp", qmp)
    if available:
        console = await driver.get_serial_console("g1")
        assert console == {
            "host": "h",
            "port": 0,
            "internal_access_path": str(driver.instances_dir / "g1" / qp.SERIAL_SOCKET),
        }
    else:
        with pytest.raises(ConsoleTypeUnavailable, match="Unavailable console type serial"):
            await driver.get_serial_console("g1")


async def test_the_fake_terminal_echoes_as_a_tty_and_logs_the_lines():
    lines: list[str] = []
    serial = FakeSerialPort(lines.append)
    port = await serial.start()
    assert await serial.start() == port  # one listener per guest
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"lsx\x7f\r")
        await writer.drain()
        echoed = b""
        while not echoed.endswith(b"\r\n"):
            echoed += await asyncio.wait_for(reader.read(100), timeout=5)
        assert echoed == b"lsx\b \b\r\n"
        assert lines == ["ls"]
    finally:
        writer.close()
    await serial.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def test_tempest_tests_serial_consoles_but_not_with_its_broken_client():
    assert conf.FEATURES["compute-feature-enabled"]["serial_console"] is True
    test = (
        "tempest.api.compute.admin.test_live_migration.LiveMigrationRemoteConsolesV26Test."
        "test_live_migration_serial_console[id-6190af80-513e-4f0f-90f2-9714e84955d7,multinode]"
    )
    for argv in ([], ["--driver", "qemu"]):
        for p in harness.passes(harness.parse_args(argv)):
            assert p.exclude and re.search(p.exclude, test), (argv, p.name)
