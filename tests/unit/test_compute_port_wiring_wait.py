"""A build's wait for its ports' wiring: it looks once, then takes the Network service's
network-vif-plugged event (no polling), and looks again only when no event comes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cumulo.compute import network as compute_network
from cumulo.compute.network import NetworkClient, PortsNotWired


class Ports:
    """The Network API as the wait sees it: each port's status, and the GETs made."""

    def __init__(self, statuses: dict[str, str]) -> None:
        self.statuses = statuses
        self.gets: list[str] = []

    async def json(self, method: str, path: str, token: str, **kwargs: Any) -> dict[str, Any]:
        port_id = path.rsplit("/", 1)[1]
        self.gets.append(port_id)
        return {"port": {"id": port_id, "status": self.statuses[port_id]}}


async def _no_token() -> str:
    return ""


def _client(ports: Ports) -> NetworkClient:
    return NetworkClient(ports, _no_token)  # type: ignore[arg-type]


INFO = [{"port_id": "p1", "bridge": "cmlo-b1"}, {"port_id": "p2", "bridge": "cmlo-b1"}]


def test_a_build_takes_its_ports_plugged_events_without_polling():
    async def scenario() -> None:
        ports = Ports({"p1": "DOWN", "p2": "DOWN"})
        client = _client(ports)
        wait = asyncio.create_task(client.wait_for_wiring("t", INFO, timeout=30))
        await asyncio.sleep(0.05)
        assert sorted(ports.gets) == ["p1", "p2"]  # each port looked at once
        client.plugged.plugged("p1")
        await asyncio.sleep(0.05)
        assert not wait.done()
        client.plugged.plugged("p2")
        await asyncio.wait_for(wait, 1)
        assert sorted(ports.gets) == ["p1", "p2"]  # and never again
        assert client.plugged._waiters == {}  # nothing left registered

    asyncio.run(scenario())


def test_a_port_active_before_the_wait_needs_no_event_and_a_noop_port_no_wait():
    async def scenario() -> None:
        ports = Ports({"p1": "ACTIVE", "p2": "ACTIVE"})
        client = _client(ports)
        await asyncio.wait_for(client.wait_for_wiring("t", INFO, timeout=30), 1)
        # A data plane without bridges (noop): nothing to wait for, nothing asked.
        await client.wait_for_wiring("t", [{"port_id": "p3", "bridge": None}], timeout=30)
        assert sorted(ports.gets) == ["p1", "p2"]

    asyncio.run(scenario())


def test_a_lost_event_is_made_up_for_by_looking_again(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(compute_network, "WIRING_RECHECK", 0.05)

    async def scenario() -> None:
        ports = Ports({"p1": "DOWN", "p2": "ACTIVE"})
        client = _client(ports)
        wait = asyncio.create_task(client.wait_for_wiring("t", INFO, timeout=30))
        await asyncio.sleep(0.02)
        ports.statuses["p1"] = "ACTIVE"  # wired, but its event never comes
        await asyncio.wait_for(wait, 1)
        assert ports.gets.count("p1") == 2 and ports.gets.count("p2") == 1

    asyncio.run(scenario())


def test_ports_never_wired_fail_the_wait_at_its_timeout(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(compute_network, "WIRING_RECHECK", 0.05)

    async def scenario() -> None:
        client = _client(Ports({"p1": "DOWN", "p2": "ACTIVE"}))
        with pytest.raises(PortsNotWired, match="port\\(s\\) p1 within 0.2 s"):
            await client.wait_for_wiring("t", INFO, timeout=0.2)
        assert client.plugged._waiters == {}

    asyncio.run(scenario())
