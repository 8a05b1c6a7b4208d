"""The QMP client's capabilities negotiation with a QEMU that broadcasts an event (a
live migration's MIGRATION status) just before its `qmp_capabilities` reply: the event
is passed over and the session is established (it failed, now and then, under load)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from cumulo.compute.virt.qemu_process import GuestMonitor

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}
EVENT = {"event": "MIGRATION", "data": {"status": "completed"},
         "timestamp": {"seconds": 1, "microseconds": 0}}  # fmt: skip


async def _serve(sock: socket.socket, before_reply: list[dict], reply: dict) -> None:
    loop = asyncio.get_running_loop()
    send = lambda msg: loop.sock_sendall(sock, json.dumps(msg).encode() + b"\r\n")  # noqa: E731
    await send(GREETING)
    await loop.sock_recv(sock, 4096)  # qmp_capabilities
    for message in before_reply:
        await send(message)
    await send(reply)
    await loop.sock_recv(sock, 4096)  # the client's next command or its close


@pytest.mark.parametrize("before_reply", [[], [EVENT], [EVENT, EVENT]], ids=["0", "1", "2"])
async def test_events_before_the_capabilities_reply_are_passed_over(before_reply):
    ours, qemu = socket.socketpair()
    qemu.setblocking(False)
    server = asyncio.create_task(_serve(qemu, before_reply, {"return": {}}))
    client = GuestMonitor("test", ours)
    try:
        await asyncio.wait_for(client.connect(ours), 5)
        assert client.runstate.name == "RUNNING"
    finally:
        await client.disconnect()
        server.cancel()
        qemu.close()


async def test_an_error_reply_still_fails_the_session():
    ours, qemu = socket.socketpair()
    qemu.setblocking(False)
    refused = {"error": {"class": "CommandNotFound", "desc": "no"}}
    server = asyncio.create_task(_serve(qemu, [EVENT], refused))
    client = GuestMonitor("test", ours)
    try:
        with pytest.raises(Exception, match="Negotiation failed"):
            await asyncio.wait_for(client.connect(ours), 5)
    finally:
        server.cancel()
        qemu.close()
