"""The data plane over the bus: the agent converges its driver on the desired state,
coalesces bursts of changes, and rebuilds everything after a restart (resync)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cumulo.common.rpc import Endpoint, get_transport
from cumulo.network.dataplane.agent import SERVER_TOPIC, NetworkAgent, agent_topic
from cumulo.network.dataplane.noop import NoopDriver


class FakeServer(Endpoint):
    def __init__(self) -> None:
        self.state: dict[str, Any] = {"networks": [], "ports": [], "routers": []}
        self.asked = 0

    async def desired_state(self, context: dict[str, Any], host: str) -> dict[str, Any]:
        self.asked += 1
        return {**self.state, "host": host}

    async def report_state(self, context: dict[str, Any], host: str, **report: Any) -> None:
        self.reports = [*getattr(self, "reports", []), (host, report)]

    async def ports_up(self, context: dict[str, Any], host: str, port_ids: list[str]) -> None:
        self.up = (host, port_ids)  # the agent reports what it wired after each apply


def test_agent_applies_state_coalesces_changes_and_resyncs_after_restart():
    async def scenario() -> None:
        transport = get_transport("memory://")
        server = FakeServer()
        await transport.serve(SERVER_TOPIC, server)
        driver = NoopDriver()
        agent = NetworkAgent(transport, "host-a", driver, min_interval=0.05)
        await agent.start()
        await agent.wait_idle()
        assert driver.state["host"] == "host-a" and driver.applied == 1
        # It registered (a started agent) before it asked for its state.
        assert server.reports == [
            (
                "host-a",
                {"configurations": {"driver": "noop", "agent_mode": "dvr_snat"}, "start": True},
            )
        ]

        server.state = {"networks": [{"id": "n1"}], "ports": [], "routers": []}
        for _ in range(50):
            await transport.cast(agent_topic("host-a"), "sync", {})
        await asyncio.sleep(0.3)
        await agent.wait_idle()
        assert driver.state["networks"] == [{"id": "n1"}]
        assert driver.applied < 10  # fifty casts, a handful of syncs
        await agent.stop()

        # A new agent (a restart) starts from nothing and converges on the database.
        fresh = NoopDriver()
        restarted = NetworkAgent(transport, "host-a", fresh, min_interval=0.05)
        await restarted.start()
        await restarted.wait_idle()
        assert fresh.state["networks"] == [{"id": "n1"}]
        await restarted.stop()
        await transport.close()

    asyncio.run(scenario())


def test_agent_leaves_ports_whose_binding_failed_unwired_and_applies_under_the_request_ids():
    from cumulo.common.request_ids import global_request_id_var, request_id_var, working_for

    class Recording(NoopDriver):
        async def apply(self, state: dict[str, Any], wired=None, generation=None) -> None:
            self.ids = (request_id_var.get(), global_request_id_var.get())
            await super().apply(state, wired, generation)

    async def scenario() -> None:
        transport = get_transport("memory://")
        server = FakeServer()
        await transport.serve(SERVER_TOPIC, server)
        driver = Recording()
        agent = NetworkAgent(transport, "host-a", driver, min_interval=0.05)
        await agent.start()
        await agent.wait_idle()
        server.state = {
            "networks": [{"id": "n1"}],
            "ports": [
                {"id": "wired", "network_id": "n1", "vif_type": "bridge"},
                {"id": "failed", "network_id": "n1", "vif_type": "binding_failed"},
            ],
            "routers": [],
        }
        global_id = "req-8c2ea1e4-7a5b-4c43-9d0e-3f1b5a6c7d8e"
        with working_for("req-port-update", global_id):
            await transport.cast(agent_topic("host-a"), "sync", {})
        await asyncio.sleep(0.2)
        await agent.wait_idle()
        assert [p["id"] for p in driver.state["ports"]] == ["wired"]
        assert server.up == ("host-a", ["wired"])  # never reported up: it stays DOWN
        assert driver.ids == ("req-port-update", global_id)
        await agent.stop()
        await transport.close()

    asyncio.run(scenario())


def test_a_port_is_reported_up_while_an_apply_of_other_networks_is_still_running():
    class SlowServices(NoopDriver):
        """Wires ports at once; its whole apply waits on `held` (a slow DHCP server)."""

        def __init__(self) -> None:
            super().__init__()
            self.held: asyncio.Event | None = None
            self.applying = asyncio.Event()
            self.wired: list[int] = []

        async def wire(self, state: dict[str, Any], generation: int) -> bool:
            self.wired.append(generation)
            return True

        async def apply(self, state: dict[str, Any], wired=None, generation=None) -> None:
            if self.held is not None:
                self.applying.set()
                await self.held.wait()
            await super().apply(state, wired, generation)

    def port(port_id: str, network_id: str) -> dict[str, Any]:
        return {"id": port_id, "network_id": network_id, "vif_type": "bridge"}

    async def scenario() -> None:
        transport = get_transport("memory://")
        server = FakeServer()
        server.state = {"networks": [{"id": "n1"}], "ports": [port("p1", "n1")], "routers": []}
        await transport.serve(SERVER_TOPIC, server)
        driver = SlowServices()
        agent = NetworkAgent(transport, "host-a", driver, min_interval=0.05)
        await agent.start()
        await agent.wait_idle()
        assert server.up == ("host-a", ["p1"])

        # Another tenant's network: its apply is slow (held).
        driver.held = asyncio.Event()
        server.state = {**server.state, "networks": [{"id": "n1"}, {"id": "n2"}]}
        await transport.cast(agent_topic("host-a"), "sync", {})
        await asyncio.wait_for(driver.applying.wait(), 5)
        # A guest's port on n1 meanwhile: up without waiting for that apply.
        server.state = {**server.state, "ports": [port("p1", "n1"), port("p2", "n1")]}
        await transport.cast(agent_topic("host-a"), "sync", {})
        for _ in range(100):
            if server.up == ("host-a", ["p1", "p2"]):
                break
            await asyncio.sleep(0.02)
        assert server.up == ("host-a", ["p1", "p2"])
        assert driver.applied == 1  # the held apply has not ended
        with pytest.raises(TimeoutError):  # not idle while an apply is held
            await agent.wait_idle(0.2)

        # Released, the held apply ends and the newest state read is applied whole.
        driver.held.set()
        await agent.wait_idle()
        assert [p["id"] for p in driver.state["ports"]] == ["p1", "p2"]
        assert driver.wired == sorted(driver.wired)  # states wired in the order read
        await agent.stop()
        await transport.close()

    asyncio.run(scenario())


def test_a_quiet_agent_reads_a_ports_creation_and_its_binding_at_once():
    """A boot's port is created, then bound to the host a moment later: the binding is
    read at once, not a min_interval after the creation; a stream of changes is still
    read once per min_interval."""

    async def read_after(transport, server: FakeServer, timeout: float) -> bool:
        asked = server.asked
        await transport.cast(agent_topic("host-a"), "sync", {})
        for _ in range(int(timeout / 0.01)):
            if server.asked > asked:
                return True
            await asyncio.sleep(0.01)
        return False

    async def scenario() -> None:
        transport = get_transport("memory://")
        server = FakeServer()
        await transport.serve(SERVER_TOPIC, server)
        agent = NetworkAgent(transport, "host-a", NoopDriver(), min_interval=0.5)
        await agent.start()
        await agent.wait_idle(10)
        await asyncio.sleep(3.5)  # quiet (the registered agent's own re-read included)
        # The port's creation, then its binding: each read within a tenth of a second.
        assert await read_after(transport, server, 0.1)
        assert await read_after(transport, server, 0.1)

        # A stream of changes: one read per min_interval once the burst is spent.
        loop = asyncio.get_running_loop()
        asked, started = server.asked, loop.time()
        while loop.time() - started < 2.0:
            await transport.cast(agent_topic("host-a"), "sync", {})
            await asyncio.sleep(0.02)
        assert server.asked - asked <= 1 + 4  # the burst's last read, then one per 0.5 s
        await agent.stop()
        await transport.close()

    asyncio.run(scenario())
