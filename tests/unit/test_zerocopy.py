"""Response bodies sent from files with sendfile(2) (the ASGI zero-copy send extension)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import httpx
import pytest

from cumulo.common.server import make_servers, serve
from cumulo.common.zerocopy import EXTENSION

MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BIG_BEFORE = b"b" * (8 * MIB)


def file_app(path: Path, offered: list[bool]):
    """Answers `before` + the file's bytes [1 MiB, end) + `after`; sent as a file where
    the server offers the extension. /big: 8 MiB before the file (the transport still
    holds some of them when the file is sent)."""

    async def app(scope, receive, send):
        offered.append(EXTENSION in scope.get("extensions", {}))
        size = path.stat().st_size
        before = BIG_BEFORE if scope["path"] == "/big" else b"head-bytes|"
        after = b"|tail-bytes"
        length = len(before) + size - MIB + len(after)
        headers = [(b"content-length", str(length).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": before, "more_body": True})
        with path.open("rb") as f:
            if offered[-1]:
                await send({"type": EXTENSION, "file": f, "offset": MIB, "count": size - MIB,
                            "more_body": True})  # fmt: skip
            else:
                await send({"type": "http.response.body", "body": f.read()[MIB:],
                            "more_body": True})  # fmt: skip
        await send({"type": "http.response.body", "body": after})

    return app


async def serving(app, port: int):
    stop = asyncio.Event()
    servers = make_servers({"files": (app, port)}, "127.0.0.1")
    task = asyncio.create_task(serve(servers, stop))
    while not all(s.started for s in servers):
        await asyncio.sleep(0.01)
    return stop, task


@pytest.mark.asyncio
async def test_a_file_body_goes_out_whole_between_the_bytes_around_it(tmp_path: Path) -> None:
    path = tmp_path / "replica"
    data = os.urandom(12 * MIB)
    path.write_bytes(data)
    offered: list[bool] = []
    port = free_port()
    stop, task = await serving(file_app(path, offered), port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            # Keep-alive: the second answer on the same connection is whole too.
            for _ in range(2):
                r = await client.get("/")
                assert r.status_code == 200
                assert r.content == b"head-bytes|" + data[MIB:] + b"|tail-bytes"
            r = await client.get("/big")
            assert r.content == BIG_BEFORE + data[MIB:] + b"|tail-bytes"
    finally:
        stop.set()
        await task
    assert offered == [True, True, True]


@pytest.mark.asyncio
async def test_a_client_that_leaves_mid_file_leaves_the_server_serving(tmp_path: Path) -> None:
    path = tmp_path / "replica"
    path.write_bytes(os.urandom(32 * MIB))
    offered: list[bool] = []
    port = free_port()
    stop, task = await serving(file_app(path, offered), port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readexactly(MIB)
        writer.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.get("/")
            assert r.status_code == 200 and len(r.content) == 31 * MIB + 22
    finally:
        stop.set()
        await task
