"""Quiesced snapshots as Nova's libvirt driver takes them: the guest's filesystems frozen
through qemu-guest-agent around the disk copy and always thawed after, with a fake agent
on the guest's channel socket (what QEMU's qga chardev is to the driver)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cumulo.compute.virt import qemu_process as qp
from cumulo.compute.virt.driver import DriverError

FREEZE, THAW = "guest-fsfreeze-freeze", "guest-fsfreeze-thaw"


class FakeAgent:
    """qemu-guest-agent's wire protocol: JSON lines, guest-sync echoed, and for the other
    commands what `answers` says (a value, an error, or None: never answer)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.events: list[str] = []  # the commands received, and the test's own marks

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            request = json.loads(line)
            command = request["execute"]
            if command == "guest-sync":
                reply: Any = {"return": request["arguments"]["id"]}
            else:
                self.events.append(command)
                answer = self.answers[command]
                if answer is None:
                    continue  # a guest that never answers
                if isinstance(answer, list):  # one answer per call
                    answer = answer.pop(0)
                if isinstance(answer, Exception):
                    reply = {"error": {"class": "GenericError", "desc": str(answer)}}
                else:
                    reply = {"return": answer}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        writer.close()


@pytest.fixture
async def agent_dir(tmp_path: Path) -> AsyncIterator[tuple[Path, FakeAgent]]:
    agent = FakeAgent({FREEZE: 2, THAW: 2})
    path, fd = qp.short_unix_path(tmp_path, qp.QGA_SOCKET)
    try:
        server = await asyncio.start_unix_server(agent.serve, path)
    finally:
        os.close(fd)
    async with server:
        yield tmp_path, agent
        server.close()


def machine(guest_agent: bool = True, require: bool = False) -> qp.MachineConfig:
    return qp.MachineConfig(
        uuid="quiesce-test",
        name="q",
        vcpus=1,
        memory_mb=128,
        accel="tcg",
        guest_agent=guest_agent,
        require_quiesce=require,
    )


async def test_the_copy_happens_between_freeze_and_thaw(agent_dir):
    directory, agent = agent_dir
    async with qp.quiesced(directory, machine()) as frozen:
        agent.events.append("disk copied")
    assert frozen == 2
    assert agent.events == [FREEZE, "disk copied", THAW]


async def test_a_failed_copy_still_thaws_the_guest(agent_dir):
    directory, agent = agent_dir
    with pytest.raises(DriverError, match="qemu-img"):
        async with qp.quiesced(directory, machine()):
            raise DriverError("qemu-img convert failed")
    assert agent.events == [FREEZE, THAW]


async def test_a_failed_freeze_without_os_require_quiesce_snapshots_unfrozen(agent_dir):
    directory, agent = agent_dir
    agent.answers[FREEZE] = RuntimeError("failed to freeze /: Device or resource busy")
    async with qp.quiesced(directory, machine()) as frozen:
        agent.events.append("disk copied")
    assert frozen is None
    # A thaw first, in case the guest froze part of it; none after the copy.
    assert agent.events == [FREEZE, THAW, "disk copied"]


async def test_a_failed_freeze_with_os_require_quiesce_fails_the_snapshot(agent_dir):
    directory, agent = agent_dir
    agent.answers[FREEZE] = RuntimeError("Command guest-fsfreeze-freeze has been disabled")
    with pytest.raises(DriverError, match="could not be frozen: .*disabled"):
        async with qp.quiesced(directory, machine(require=True)):
            agent.events.append("disk copied")
    assert "disk copied" not in agent.events


async def test_a_silent_agent_with_os_require_quiesce_fails_in_time(agent_dir):
    directory, agent = agent_dir
    agent.answers[FREEZE] = None
    with pytest.raises(DriverError, match="could not be frozen"):
        async with qp.quiesced(directory, machine(require=True), timeout=0.5):
            agent.events.append("disk copied")
    assert agent.events[0] == FREEZE and "disk copied" not in agent.events


async def test_without_a_guest_agent_only_a_required_quiesce_fails(tmp_path):
    async with qp.quiesced(tmp_path, machine(guest_agent=False)) as frozen:
        assert frozen is None  # nothing to talk to: not even a connection attempt
    with pytest.raises(DriverError, match="requires quiescing"):
        async with qp.quiesced(tmp_path, machine(guest_agent=False, require=True)):
            pass


async def test_a_thaw_is_retried_then_reported(agent_dir):
    directory, agent = agent_dir
    agent.answers[THAW] = [RuntimeError("busy"), 2]
    async with qp.quiesced(directory, machine()):
        agent.events.append("disk copied")
    assert agent.events == [FREEZE, "disk copied", THAW, THAW]
    agent.answers[THAW] = RuntimeError("the agent is wedged")
    with pytest.raises(DriverError, match="could not be thawed: the agent is wedged"):
        async with qp.quiesced(directory, machine()):
            pass
    assert agent.events[-3:] == [THAW, THAW, THAW]
