"""The network agent (one per host, topic `network.<host>`) and the server endpoint it asks.

`sync` casts are coalesced: however many changes arrive, the agent fetches the
desired state at most once per `min_interval` and hands it to its driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from cumulo.common import metrics
from cumulo.common.rpc import Endpoint, Transport
from cumulo.network.agents import REPORT_INTERVAL, report_state
from cumulo.network.core import NetworkService
from cumulo.network.dataplane.driver import NetworkDriver
from cumulo.network.dataplane.state import desired_state

LOG = logging.getLogger(__name__)

SERVER_TOPIC = "network"


def agent_topic(host: str) -> str:
    return f"network.{host}"


class NetworkStateEndpoint(Endpoint):
    """Server side (topic `network`): what each host should look like."""

    def __init__(self, service: NetworkService) -> None:
        self.service = service

    async def desired_state(self, context: dict[str, Any], host: str) -> dict[str, Any]:
        return await desired_state(self.service, host)

    async def report_state(
        self, context: dict[str, Any], host: str, configurations: dict[str, Any], start: bool
    ) -> bool:
        """The agent's heartbeat (Neutron's report_state): GET /v2.0/agents shows it;
        True when the agent was given networks or routers."""
        if start and self.service.live_agents is not None:
            self.service.live_agents.forget()
        return await report_state(self.service, host, agent_topic(host), configurations, start)

    async def ports_up(self, context: dict[str, Any], host: str, port_ids: list[str]) -> None:
        """The host's agent has wired these ports: they are ACTIVE (Neutron's port status,
        which the compute service waits for before it starts a guest)."""
        if port_ids:
            await self.service.mark_ports_active(host, port_ids)


class NetworkAgent(Endpoint):
    def __init__(
        self, transport: Transport, host: str, driver: NetworkDriver, min_interval: float = 1.0
    ) -> None:
        self.transport = transport
        self.host = host
        self.driver = driver
        self.min_interval = min_interval
        self._dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._heartbeat: asyncio.Task | None = None
        self._watch: asyncio.Task | None = None
        self._registered = False

    async def start(self) -> None:
        """Serve the host's topic, and converge on the database's state (resync)."""
        await self.transport.serve(agent_topic(self.host), self)
        self._dirty.set()
        self._task = asyncio.create_task(self._run())
        self._heartbeat = asyncio.create_task(self._report())
        self._watch = asyncio.create_task(self.driver.watch(lambda: self.sync({})))

    async def stop(self) -> None:
        for task in (self._watch, self._heartbeat, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _report(self) -> None:
        """Heartbeats to the server (the agents list); the first is _run's."""
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            try:
                given = await self.transport.call(
                    SERVER_TOPIC, "report_state", {}, host=self.host,
                    configurations=self._configurations(), start=False, timeout=60,
                )  # fmt: skip
                if given:
                    await self.sync({})
            except Exception:  # noqa: BLE001 - the next heartbeat retries
                LOG.warning("network agent %s: report_state failed", self.host, exc_info=True)

    def _configurations(self) -> dict[str, Any]:
        return self.driver.configurations()

    async def sync(self, context: dict[str, Any]) -> None:
        """RPC cast: something changed; converge soon."""
        self._idle.clear()
        self._dirty.set()

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until every change announced so far has been applied (for tests and tools)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def _converge(self, state: dict[str, Any]) -> None:
        """Apply `state`; its ports are reported up as soon as the driver has wired them
        (before other networks' DHCP servers and routers), else once it is all done."""
        reported = False

        async def ports_up() -> None:
            nonlocal reported
            await self.transport.call(
                SERVER_TOPIC, "ports_up", {}, host=self.host,
                port_ids=[p["id"] for p in state.get("ports", [])], timeout=60,
            )  # fmt: skip
            reported = True

        await self.driver.apply(state, ports_up)
        if not reported:  # a driver that does not say when its ports are wired
            await ports_up()

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            started = time.monotonic()
            try:
                if not self._registered:
                    # Registered (and given its networks and routers) before it asks
                    # what to serve.
                    await self.transport.call(
                        SERVER_TOPIC, "report_state", {}, host=self.host,
                        configurations=self._configurations(), start=True, timeout=60,
                    )  # fmt: skip
                    self._registered = True
                    # API processes read the living agents at most every second: a
                    # change one of them made just now may not have been announced here.
                    asyncio.get_running_loop().call_later(2.0, self._dirty.set)
                state = await self.transport.call(
                    SERVER_TOPIC, "desired_state", {}, host=self.host, timeout=60
                )
                await self._converge(state)
                metrics.DATAPLANE_APPLIES.labels("ok").inc()
                metrics.DATAPLANE_APPLY_SECONDS.observe(time.monotonic() - started)
            except Exception:  # noqa: BLE001 - keep the agent alive; the next sync retries
                LOG.exception("network agent %s: sync failed", self.host)
                metrics.DATAPLANE_APPLIES.labels("error").inc()
                self._dirty.set()
            if not self._dirty.is_set():
                self._idle.set()
            await asyncio.sleep(self.min_interval)
