"""An httpx transport that calls an ASGI app in-process and streams its response.

httpx's own ASGITransport runs the app to the end and keeps every body chunk before it
returns the response: fine for API answers, not for image data (a guest's disk of
gigabytes held in memory while the compute host or the volume service downloads it in
the all-in-one cloud). Here the app runs in a task and hands its body over through a
small queue, so the caller reads it as it comes and the app waits when the caller is
slower (bounded memory, as over HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.types import ASGIApp

_END = object()


class _Handoff:
    """The body between the app and the reader: at most `ahead` chunks waiting (the app
    waits for room), while the end and an error are always delivered at once: they never
    wait for room, so a cancelled or finished app cannot lose them."""

    def __init__(self, ahead: int) -> None:
        self.items: asyncio.Queue = asyncio.Queue()  # unbounded: `room` bounds the chunks
        self.room = asyncio.Semaphore(ahead)
        self.reader_gone = asyncio.Event()  # the reader read to the end, or closed

    async def put_chunk(self, chunk: bytes) -> None:
        await self.room.acquire()
        self.items.put_nowait(chunk)

    def finish(self, error: BaseException | None = None) -> None:
        self.items.put_nowait(_END if error is None else error)


class _HandoffStream(httpx.AsyncByteStream):
    def __init__(self, handoff: _Handoff, task: asyncio.Task, head: bool) -> None:
        self.handoff, self.task, self.head = handoff, task, head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                item = await self.handoff.items.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                self.handoff.room.release()
                if not self.head:
                    yield item
        finally:
            self.handoff.reader_gone.set()

    async def aclose(self) -> None:
        self.handoff.reader_gone.set()  # the app's receive() now reports a disconnect
        if not self.task.done():  # the caller stopped reading: the app stops sending
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


class StreamingASGITransport(httpx.AsyncBaseTransport):
    def __init__(self, app: ASGIApp, chunks_ahead: int = 4) -> None:
        self.app = app
        self.chunks_ahead = chunks_ahead

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port),
            "client": ("127.0.0.1", 0),
            "root_path": "",
        }
        body = request.stream.__aiter__()
        request_done = False
        started = asyncio.get_running_loop().create_future()
        handoff = _Handoff(self.chunks_ahead)
        ended = False

        async def receive() -> dict[str, Any]:
            nonlocal request_done
            if request_done:
                # As a server would: a disconnect only once the client is gone. (Starlette's
                # StreamingResponse cancels its sending when it hears one.)
                await handoff.reader_gone.wait()
                return {"type": "http.disconnect"}
            try:
                chunk = await body.__anext__()
            except StopAsyncIteration:
                request_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            nonlocal ended
            if message["type"] == "http.response.start":
                started.set_result((message["status"], message.get("headers", [])))
            elif message["type"] == "http.response.body" and not ended:
                if message.get("body"):
                    await handoff.put_chunk(message["body"])
                if not message.get("more_body", False):
                    ended = True
                    handoff.finish()

        async def run() -> None:
            nonlocal ended
            try:
                await self.app(scope, receive, send)
            except asyncio.CancelledError:
                raise  # the reader is gone (aclose): nobody to tell
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)
                elif not ended:
                    ended = True
                    handoff.finish(exc)  # the reader sees it in the body
                raise
            finally:
                if started.done() and not ended:
                    ended = True
                    handoff.finish(RuntimeError("the app ended without finishing its body"))

        task = asyncio.create_task(run())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen by the reader
        try:
            status, headers = await started
        except BaseException:
            with contextlib.suppress(BaseException):
                await task
            raise
        stream = _HandoffStream(handoff, task, request.method == "HEAD")
        return httpx.Response(status, headers=headers, stream=stream)
