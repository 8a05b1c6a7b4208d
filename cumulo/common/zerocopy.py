"""ASGI's zero-copy send extension (`http.response.zerocopysend`) on uvicorn's httptools
protocol: a response body sent from a file with sendfile(2), from the page cache to the
socket, not read into Python and written again (one copy of every byte instead of two,
and no bytes objects). Offered on plain HTTP only (TLS encrypts in user space).

The app sends {"type": "http.response.zerocopysend", "file": fd or file object,
"offset": int, "count": int, "more_body": bool} after its `http.response.start`, with
a Content-Length (the ASGI extension's message; `count` is required here). The head
and whatever the transport still holds are written first; then a thread of SENDERS
sends the file's bytes straight to the socket (the event loop goes on serving; the
thread waits for the socket with poll(2), and gives up after STALL seconds without
progress: the connection is then closed, as for a client gone).
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

EXTENSION = "http.response.zerocopysend"
# A sendfile waits in a thread while the client reads: as many at once as large GETs.
SENDERS = ThreadPoolExecutor(64, thread_name_prefix="zerocopy-send")
STALL = 60.0


class ZeroCopyHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the zero-copy send extension on plain HTTP."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.transport.get_extra_info("sslcontext") is None:
            self.scope["extensions"] = {EXTENSION: {}}

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.scope is self.scope
            and EXTENSION in self.scope.get("extensions", {})
        ):
            cycle.send = _sending_files(cycle, cycle.send)  # type: ignore[method-assign]


def _sending_files(
    cycle: RequestResponseCycle, send: Callable[[Any], Awaitable[None]]
) -> Callable[[Any], Awaitable[None]]:
    async def send_with_files(message: Any) -> None:
        if message["type"] != EXTENSION:
            await send(message)
            return
        if not cycle.response_started or cycle.response_complete or cycle.chunked_encoding:
            raise RuntimeError(f"{EXTENSION} needs a started response with a Content-Length")
        count, offset = message["count"], message.get("offset", 0)
        if count > cycle.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        if count and not cycle.disconnected and cycle.scope["method"] != "HEAD":
            await _flushed(cycle)
            source = message["file"]
            fd = source if isinstance(source, int) else source.fileno()
            sock = cycle.transport.get_extra_info("socket").fileno()
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(SENDERS, _sendfile, sock, fd, offset, count)
            except OSError:  # the client went away or stopped reading
                cycle.disconnected = True
                cycle.transport.close()
                return
        cycle.expected_content_length -= count
        await send({"type": "http.response.body", "body": b"",
                    "more_body": message.get("more_body", False)})  # fmt: skip

    return send_with_files


async def _flushed(cycle: RequestResponseCycle) -> None:
    """Until the transport has written everything it holds (the head, earlier pieces):
    the file's bytes go to the socket behind them."""
    transport = cycle.transport
    if transport.get_write_buffer_size() == 0:
        return
    # Paused until the buffer is empty: uvicorn's flow control says when.
    transport.set_write_buffer_limits(high=0, low=0)
    try:
        while transport.get_write_buffer_size() and not cycle.disconnected:
            await cycle.flow.drain()
    finally:
        transport.set_write_buffer_limits()


def _sendfile(sock: int, fd: int, offset: int, count: int) -> None:
    """count bytes of fd from offset to the (non-blocking) socket."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    while count:
        try:
            sent = os.sendfile(sock, fd, offset, count)
        except BlockingIOError:
            if not poller.poll(STALL * 1000):
                raise TimeoutError(errno.ETIMEDOUT, "the client stopped reading") from None
            continue
        if sent == 0:
            raise OSError(errno.EIO, "file shorter than the response")
        offset += sent
        count -= sent
