"""The fake guests' screen: a small VNC server (RFB 3.8, no authentication) that shows
a blank screen named after the host, so the console proxy and a browser's noVNC have a
real VNC peer to talk to when guests are fake (the protocol as RFC 6143 gives it): keys
typed on it make lines of the guest's console log, as a text console echoes them, and
text a viewer puts on the guest's clipboard is announced to its other viewers; the
start of a SPICE server (its link handshake, for SPICE clients and the spice-html5
proxy); and their serial ports, a terminal that echoes what is typed (for the serial
proxy)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable

LOG = logging.getLogger(__name__)

WIDTH, HEIGHT = 640, 400
RRE = 2  # one background colour and no subrectangles: the whole (blank) screen
# ClientToServer message type -> bytes that follow it (before any variable part).
_FIXED = {0: 19, 3: 9, 4: 7, 5: 5}
# Keysyms (X11's keysymdef.h) that end a line or erase a character; the other function
# keys (0xFF00-0xFFFF: modifiers, arrows, Delete...) type nothing.
XK_RETURN, XK_KP_ENTER, XK_BACKSPACE = 0xFF0D, 0xFF8D, 0xFF08


def typed_character(keysym: int) -> str | None:
    """The character a key press types: Latin-1 keysyms are their code point, Unicode
    ones 0x01000000 + the code point; None for function and modifier keys."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return chr(keysym)
    if 0x01000100 <= keysym <= 0x0110FFFF:
        return chr(keysym - 0x01000000)
    return None


class _LoopbackListener:
    """A TCP listener on 127.0.0.1 (a port of its own, opened on first use) whose
    connections `_client` serves; closing it closes the clients still connected."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._lock = asyncio.Lock()
        self._clients: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> int:
        async with self._lock:
            if self._server is None:
                self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._clients):
                writer.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class FakeScreen(_LoopbackListener):
    """One fake guest's screen (a listener of its own, opened on its first console
    request). Every viewer shares it: the line being typed and the clipboard."""

    def __init__(self, name: str, on_line: Callable[[str], None]) -> None:
        super().__init__()
        self.name = name.encode()[:255]
        self.on_line = on_line
        self.line: list[str] = []
        self.clipboard = ""

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            await self._session(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    def _key(self, down: bool, keysym: int) -> None:
        if not down:
            return
        if keysym in (XK_RETURN, XK_KP_ENTER):
            self.on_line("".join(self.line))
            self.line.clear()
        elif keysym == XK_BACKSPACE:
            if self.line:
                self.line.pop()
        elif (character := typed_character(keysym)) is not None:
            self.line.append(character)

    def _cut_text(self, text: str, sender: asyncio.StreamWriter) -> None:
        """The guest's clipboard is now `text`: its other viewers are told (ServerCutText),
        as a guest's clipboard agent announces a change."""
        self.clipboard = text
        # RFB's cut text is Latin-1; what it cannot carry is replaced.
        data = text.encode("latin-1", errors="replace")
        message = struct.pack(">B3xI", 3, len(data)) + data
        for viewer in self._clients:
            if viewer is not sender:
                viewer.write(message)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        await reader.readexactly(12)  # the client's version
        writer.write(bytes((1, 1)))  # one security type: None
        await reader.readexactly(1)
        writer.write(struct.pack(">I", 0))  # security result: OK
        await reader.readexactly(1)  # ClientInit (shared flag)
        # 32 bits per pixel, depth 24, little endian, true colour, 8 bits a channel.
        pixel_format = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
        writer.write(
            struct.pack(">HH", WIDTH, HEIGHT)
            + pixel_format
            + struct.pack(">I", len(self.name))
            + self.name
        )
        bytes_per_pixel = 4
        while True:
            kind = (await reader.readexactly(1))[0]
            if kind == 2:  # SetEncodings
                _, count = struct.unpack(">BH", await reader.readexactly(3))
                await reader.readexactly(4 * count)
            elif kind == 6:  # ClientCutText
                _, length = struct.unpack(">3sI", await reader.readexactly(7))
                self._cut_text((await reader.readexactly(length)).decode("latin-1"), writer)
            elif kind in _FIXED:
                body = await reader.readexactly(_FIXED[kind])
                if kind == 4:  # KeyEvent: down flag, padding, keysym
                    down, keysym = struct.unpack(">B2xI", body)
                    self._key(bool(down), keysym)
                elif kind == 0:  # SetPixelFormat
                    bytes_per_pixel = max(body[3] // 8, 1)
                elif kind == 3 and body[0] == 0:  # a full FramebufferUpdateRequest
                    # A blank screen never changes: incremental requests get no answer.
                    writer.write(
                        struct.pack(">BxH", 0, 1)
                        + struct.pack(">HHHHi", 0, 0, WIDTH, HEIGHT, RRE)
                        + struct.pack(">I", 0)
                        + bytes(bytes_per_pixel)
                    )
            else:
                LOG.debug("fake screen: unknown RFB message %d, closing", kind)
                return
            await writer.drain()


SPICE_MAGIC = b"REDQ"
SPICE_VERSION = (2, 2)
_LINK_HEADER = struct.Struct("<4sIII")  # magic, major, minor, size of what follows
_TICKET_BYTES = 128  # the client's RSA-encrypted password (empty here: no ticketing)


class FakeSpice(_LoopbackListener):
    """The fake guests' SPICE server, as far as a client's link goes (the SPICE
    protocol's SpiceLinkMess / SpiceLinkReply and the ticket): a client sees a SPICE
    server with no password that offers no channel beyond its main one."""

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            magic, major, _minor, size = _LINK_HEADER.unpack(
                await reader.readexactly(_LINK_HEADER.size)
            )
            await reader.readexactly(size)
            if magic != SPICE_MAGIC or major != SPICE_VERSION[0]:
                error = 4 if magic != SPICE_MAGIC else 5  # INVALID_MAGIC, VERSION_MISMATCH
                writer.write(_LINK_HEADER.pack(SPICE_MAGIC, *SPICE_VERSION, 4))
                writer.write(struct.pack("<I", error))
                return
            # SpiceLinkReply: no error, a (dummy) 1024-bit public key in its 162-byte
            # X.509 form, no capabilities (their count and offset after the key).
            body = struct.pack("<I", 0) + bytes(162) + struct.pack("<III", 0, 0, 178)
            writer.write(_LINK_HEADER.pack(SPICE_MAGIC, *SPICE_VERSION, len(body)) + body)
            await writer.drain()
            await reader.readexactly(_TICKET_BYTES)
            writer.write(struct.pack("<I", 0))  # link result: OK
            await writer.drain()
            while await reader.read(4096):  # the main channel: nothing more is said
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()


class FakeSerialPort(_LoopbackListener):
    """A fake guest's serial port with a login terminal on it: what is typed is echoed
    as a tty's line discipline would (Enter as CR LF, DEL erasing a character), and each
    line typed goes to the guest's console log (`on_line`), as a real guest's echo lands
    in console.log. One TCP listener per guest, opened on the first console request."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        super().__init__()
        self.on_line = on_line

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = bytearray()
        self._clients.add(writer)
        try:
            while data := await reader.read(4096):
                echo = bytearray()
                for byte in data:
                    if byte in (0x0D, 0x0A):  # Enter: the line is done
                        echo += b"\r\n"
                        self.on_line(line.decode(errors="replace"))
                        line.clear()
                    elif byte in (0x7F, 0x08):  # erase: back, blank, back
                        if line:
                            line.pop()
                            echo += b"\b \b"
                    else:
                        line.append(byte)
                        echo.append(byte)
                writer.write(bytes(echo))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()
