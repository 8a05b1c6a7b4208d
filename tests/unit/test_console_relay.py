"""A compute host's console relays (for console proxies on other hosts): a fake guest's
VNC screen reached at a TCP port on the host's console address; the port stops
listening when the token's life is over and closes with its connections when the guest
is destroyed."""

from __future__ import annotations

import asyncio

import pytest

from cumulo.compute.virt.driver import FlavorSpec, GuestSpec, ImageSpec
from cumulo.compute.virt.fake import FakeDriver


def _spec(uuid: str) -> GuestSpec:
    flavor = FlavorSpec("m1.nano", 1, 64, 1)
    return GuestSpec(uuid, "relayed", "relayed", flavor, ImageSpec("img", "qcow2"))


async def _until_closed(reader: asyncio.StreamReader) -> None:
    while await reader.read(4096):
        pass


async def test_a_relay_reaches_the_guests_screen_until_its_ttl_and_closes_with_the_guest():
    driver = FakeDriver("relay-host", console_listen="127.0.0.2")
    await driver.spawn(_spec("g1"))
    try:
        console = await driver.relay_console("g1", "vnc", ttl=0.5)
        assert (console["host"], console["internal_access_path"]) == ("127.0.0.2", None)
        reader, viewer = await asyncio.open_connection("127.0.0.2", console["port"])
        assert await asyncio.wait_for(reader.readexactly(12), 5) == b"RFB 003.008\n"
        # Asked again while it listens: the same port, for longer.
        again = await driver.relay_console("g1", "vnc", ttl=0.5)
        assert again["port"] == console["port"]
        await asyncio.sleep(0.8)
        with pytest.raises(OSError):  # the token's life is over: no new connection...
            await asyncio.open_connection("127.0.0.2", console["port"])
        viewer.write(b"RFB 003.008\n")  # ...but the one open goes on
        assert await asyncio.wait_for(reader.readexactly(2), 5) == bytes((1, 1))
        # Destroyed, the guest's relays close their connections too.
        await driver.destroy("g1")
        await asyncio.wait_for(_until_closed(reader), 5)
    finally:
        await driver.cleanup_host()
