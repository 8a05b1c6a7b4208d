"""The QEMU driver's serial console: the guest's serial port logs to console.log and
listens on serial.sock, where the serial proxy connects; the tiny test guest runs a
shell on it (ttyS0), so what is typed there is echoed and run; after a live migration
the destination's QEMU listens on its own serial.sock (Tempest's
LiveMigrationRemoteConsolesV26Test on real guests, without the API). The guest's SPICE
server answers a SPICE client's link on its unix socket (the spice-html5 proxy's way)
and on the TCP port the driver opens for spice-direct.

Skipped with the reason when QEMU or the guest's packages are unavailable (failed
under CI).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from cumulo.compute.virt import qemu_process
from cumulo.compute.virt.qemu import QemuDriver
from cumulo.testing.guest import MARK, TinyGuest
from tests.conftest import skip_or_fail
from tests.e2e.test_qemu_driver import guest_spec, tiny_guest_with, wait_console
from tests.e2e.test_qemu_moves import console_has, spec

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny_guest() -> TinyGuest:
    return tiny_guest_with()


@pytest.fixture(scope="module")
async def driver(tiny_guest: TinyGuest, tmp_path_factory: pytest.TempPathFactory):
    driver = QemuDriver(
        tmp_path_factory.mktemp("qemu-serial"), "e2e-serial", probe_kernel=tiny_guest.kernel
    )
    await driver.init_host("e2e-serial")
    yield driver
    for guest in await driver.list_guests():
        await driver.destroy(guest)


async def type_on_serial(driver: QemuDriver, guest: str, word: str) -> None:
    """Type `echo <word> $((6 * 7))` on the guest's serial console: the echo of what was
    typed (Tempest's check) and the shell's answer come back."""
    console = await driver.get_serial_console(guest)
    assert console["host"] == driver.host and console["port"] == 0
    socket_path = Path(console["internal_access_path"])
    assert socket_path.name == qemu_process.SERIAL_SOCKET
    path, directory = qemu_process.short_unix_path(socket_path.parent, socket_path.name)
    try:
        reader, writer = await asyncio.open_unix_connection(path)
    finally:
        os.close(directory)
    try:
        writer.write(f"echo {word} $((6 * 7))\r".encode())
        await writer.drain()
        seen = b""
        deadline = time.monotonic() + 30
        while f"{word} 42".encode() not in seen:
            assert time.monotonic() < deadline, seen
            seen += await asyncio.wait_for(reader.read(4096), timeout=30)
        assert f"echo {word} $((6 * 7))".encode() in seen  # the tty's echo
    finally:
        writer.close()
        await writer.wait_closed()


# A SPICE client's SpiceLinkMess for the main channel, and the reply's head.
SPICE_LINK = struct.pack("<4sIIIIBBIIIII", b"REDQ", 2, 2, 42 - 16, 0, 1, 0, 1, 1, 18, 11, 9)


async def spice_link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple:
    try:
        writer.write(SPICE_LINK)
        await writer.drain()
        head = await asyncio.wait_for(reader.readexactly(20), timeout=10)
        magic, major, minor, _size, error = struct.unpack("<4sIIII", head)
        return magic, major, minor, error
    finally:
        writer.close()


async def test_typing_on_the_serial_console_runs_in_the_guest_and_is_logged(driver, tiny_guest):
    guest = guest_spec(tiny_guest, "vm-serial")
    await driver.spawn(guest)
    # The boot was logged with no client on the socket.
    await wait_console(driver, guest.uuid, f"{MARK} ready")
    await type_on_serial(driver, guest.uuid, "typed-on-serial")
    # The console log keeps everything the guest wrote, the session included; a second
    # session gets the port once the first has left.
    await wait_console(driver, guest.uuid, "typed-on-serial 42", timeout=10)
    await type_on_serial(driver, guest.uuid, "again")

    # SPICE: the unix socket (spice-html5's proxy) and the TCP port (spice-direct).
    spice = await driver.get_spice_console(guest.uuid)
    assert spice["host"] == "127.0.0.1" and spice["tls_port"] is None
    socket_path = Path(spice["internal_access_path"])
    assert socket_path.name == qemu_process.SPICE_SOCKET
    ok = (b"REDQ", 2, 2, 0)
    assert await spice_link(*await qemu_process.open_unix(socket_path)) == ok
    assert await spice_link(*await asyncio.open_connection("127.0.0.1", spice["port"])) == ok
    assert (await driver.get_spice_console(guest.uuid))["port"] == spice["port"]
    await driver.destroy(guest.uuid)
    # The guest's port went with it.
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", spice["port"])


@pytest.fixture(scope="module")
async def hosts(tiny_guest: TinyGuest, tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("qemu-serial-moves")
    pair = []
    for name in ("serial-src", "serial-dst"):
        driver = QemuDriver(state, name, accel="tcg", vnc=False, migration_address="127.0.0.1")
        await driver.init_host(name)
        pair.append(driver)
    yield pair
    for driver in pair:
        for guest in await driver.list_guests():
            await driver.destroy(guest)


async def test_the_serial_console_is_on_the_destination_after_a_live_migration(
    hosts, tiny_guest, tmp_path
):
    if shutil.which("qemu-nbd") is None:
        skip_or_fail("qemu-nbd is not installed")
    src, dst = hosts
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(base), "64M"], check=True)
    guest = spec(tiny_guest, base)
    await src.spawn(guest)
    await console_has(src, guest.uuid, r"tick 2\b")
    await type_on_serial(src, guest.uuid, "on-source")
    data = await dst.pre_live_migration(guest, block_migration=True)
    result = await src.live_migrate(guest.uuid, data, True, _no_progress)
    await dst.post_live_migration_at_destination(guest.uuid, result)
    await src.post_live_migration_at_source(guest.uuid)
    await type_on_serial(dst, guest.uuid, "on-destination")
    await console_has(dst, guest.uuid, "on-destination 42")
    await dst.destroy(guest.uuid)


async def _no_progress(stats) -> None:
    return None
