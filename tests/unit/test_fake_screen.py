"""The fake guests' VNC screen as a VNC client sees it (RFC 6143): keys typed on it make
lines of the guest's console log, and text a viewer puts on the guest's clipboard reaches
its other viewers."""

from __future__ import annotations

import asyncio
import struct

from cumulo.compute.virt.fake import FakeDriver
from cumulo.compute.virt.fake_console import FakeScreen, typed_character

SHIFT_L = 0xFFE1


async def _viewer(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """A VNC client through the handshake to the server's first message; the desktop name."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.readexactly(12) == b"RFB 003.008\n"
    writer.write(b"RFB 003.008\n")
    assert await reader.readexactly(2) == bytes((1, 1))  # security type None only
    writer.write(bytes((1,)))
    assert await reader.readexactly(4) == bytes(4)  # security result OK
    writer.write(bytes((1,)))  # shared
    width, height = struct.unpack(">HH", await reader.readexactly(4))
    await reader.readexactly(16)  # pixel format
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    name = (await reader.readexactly(length)).decode()
    assert (width, height) == (640, 400)
    return reader, writer, name


def _keys(*keysyms: int) -> bytes:
    """Each key pressed then released."""
    return b"".join(struct.pack(">BBxxI", 4, down, keysym) for keysym in keysyms for down in (1, 0))


def test_latin1_and_unicode_keysyms_type_their_characters():
    assert typed_character(ord("a")) == "a"
    assert typed_character(0xE9) == "é"
    assert typed_character(0x010020AC) == "€"  # a Unicode keysym
    assert typed_character(SHIFT_L) is None
    assert typed_character(0xFF0D) is None  # Return ends a line, it types nothing


async def test_typed_lines_go_to_the_guest_s_console_log():
    lines: list[str] = []
    screen = FakeScreen("cumulo fake guest on host-1", lines.append)
    port = await screen.start()
    try:
        _, writer, name = await _viewer(port)
        assert name == "cumulo fake guest on host-1"
        writer.write(
            _keys(ord("l"), ord("s"), ord("x"), 0xFF08)  # x erased by BackSpace
            + struct.pack(">BBxxI", 4, 1, SHIFT_L)
            + _keys(ord(" "), ord("-"), ord("L"))
            + struct.pack(">BBxxI", 4, 0, SHIFT_L)
            + _keys(0xFF0D)
        )
        await writer.drain()
        for _ in range(100):
            if lines:
                break
            await asyncio.sleep(0.01)
        assert lines == ["ls -L"]
        writer.close()
    finally:
        await screen.close()


async def test_a_viewer_s_clipboard_text_reaches_the_guest_s_other_viewers():
    screen = FakeScreen("guest", lambda line: None)
    port = await screen.start()
    try:
        # (Each writer kept: a StreamWriter closes its connection when collected.)
        _, first, _ = await _viewer(port)
        second_reader, second, _ = await _viewer(port)
        text = "pässword"
        data = text.encode("latin-1")
        first.write(struct.pack(">B3xI", 6, len(data)) + data)  # ClientCutText
        await first.drain()
        kind = await asyncio.wait_for(second_reader.readexactly(1), 5)
        assert kind == bytes((3,))  # ServerCutText
        (length,) = struct.unpack(">3xI", await second_reader.readexactly(7))
        assert (await second_reader.readexactly(length)).decode("latin-1") == text
        assert screen.clipboard == text
        first.close()
        second.close()
    finally:
        await screen.close()


async def test_each_guest_has_its_own_screen_closed_with_it(monkeypatch):
    driver = FakeDriver("host-1")
    screens: dict[str, FakeScreen] = {}
    for uuid in ("a", "b"):
        driver.guests[uuid] = object()  # type: ignore[assignment]
        console = await driver.get_vnc_console(uuid)
        screens[uuid] = driver.screens[uuid]
        assert console["port"] == screens[uuid].port
    assert screens["a"].port != screens["b"].port
    assert (await driver.get_vnc_console("a"))["port"] == screens["a"].port  # kept
    await driver.destroy("a")
    assert "a" not in driver.screens
    await driver.cleanup_host()
    assert driver.screens == {}
