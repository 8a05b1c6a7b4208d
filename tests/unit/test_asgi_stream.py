"""The in-process ASGI transport that streams responses (bounded memory)."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cumulo.common.asgi_stream import StreamingASGITransport

MIB = 1 << 20


def make_app(produced: list[int]) -> Starlette:
    async def big(_request: Request) -> Response:
        async def chunks():
            for i in range(50):
                produced.append(i)
                yield bytes([i % 256]) * MIB

        return StreamingResponse(chunks(), headers={"X-Kind": "big"})

    async def echo(request: Request) -> Response:
        return Response(await request.body(), status_code=201)

    async def broken(_request: Request) -> Response:
        raise RuntimeError("the app failed")

    return Starlette(routes=[
        Route("/big", big, methods=["GET", "HEAD"]),
        Route("/echo", echo, methods=["POST"]),
        Route("/broken", broken),
    ])  # fmt: skip


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingASGITransport(app), base_url="http://test")


def test_the_body_streams_and_the_app_waits_for_a_slow_reader():
    produced: list[int] = []

    async def main() -> None:
        async with client(make_app(produced)) as http:
            async with http.stream("GET", "/big") as response:
                assert response.status_code == 200 and response.headers["x-kind"] == "big"
                total, seen_when_first = 0, None
                async for chunk in response.aiter_raw():
                    if seen_when_first is None:
                        await asyncio.sleep(0.05)  # the app may run ahead, but not far
                        seen_when_first = len(produced)
                    total += len(chunk)
                assert total == 50 * MIB
                assert seen_when_first is not None and seen_when_first <= 8

    asyncio.run(main())


def test_a_reader_that_stops_early_stops_the_app():
    produced: list[int] = []

    async def main() -> None:
        async with client(make_app(produced)) as http:
            async with http.stream("GET", "/big") as response:
                async for _chunk in response.aiter_raw():
                    break
            await asyncio.sleep(0.05)
        assert len(produced) < 50

    asyncio.run(main())


def test_request_bodies_head_and_app_errors():
    async def main() -> None:
        async with client(make_app([])) as http:

            async def body():
                for part in (b"one ", b"two"):
                    yield part

            echoed = await http.post("/echo", content=body())
            assert echoed.status_code == 201 and echoed.content == b"one two"
            head = await http.head("/big")
            assert head.status_code == 200 and head.content == b""
            # Starlette answers 500 for the failed handler, then raises: the answer comes
            # back, the error does not hang the caller.
            failed = await http.get("/broken")
            assert failed.status_code == 500

    asyncio.run(main())


def test_a_slow_reader_gets_the_whole_body():
    """The reader is slower than the app to the last chunk: the body's end must still
    arrive. (Starlette's StreamingResponse cancels its sending when receive() reports a
    disconnect; a disconnect reported as soon as the app had sent its last chunk once
    cancelled the hand-over of the end, and the reader waited for ever.)"""

    async def main() -> None:
        async with client(make_app([])) as http:
            async with http.stream("GET", "/big") as response:
                total = 0
                async for chunk in response.aiter_raw():
                    await asyncio.sleep(0.005)
                    total += len(chunk)
            assert total == 50 * MIB

    asyncio.run(asyncio.wait_for(main(), timeout=30))
