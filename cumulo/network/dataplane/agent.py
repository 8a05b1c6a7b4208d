"""The network agent (one per host, topic `network.<host>`) and the server endpoint it asks.

`sync` casts are coalesced: however many changes arrive, the agent fetches the
desired state at most once per `min_interval` and hands it to its driver, under the
request ids of the changes it applies (its log lines name the requests, as Neutron's
agents' do). Ports whose binding failed on this host (`binding:vif_type`
`binding_failed`) are not wired: they stay DOWN, as with ML2's agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from cumulo.common import metrics
from cumulo.common.request_ids import global_request_id_var, request_id_var, working_for
from cumulo.common.rpc import Endpoint, Transport
from cumulo.network.agents import REPORT_INTERVAL, report_ha_states, report_state
from cumulo.network.binding import BINDING_FAILED
from cumulo.network.core import NetworkService
from cumulo.network.dataplane.driver import NetworkDriver
from cumulo.network.dataplane.state import desired_state

LOG = logging.getLogger(__name__)

SERVER_TOPIC = "network"
HA_WATCH_INTERVAL = 1.0  # how often the HA routers' roles are looked at (failover speed)
LOGGED_REQUESTS = 10  # request ids named in the line of an apply serving several


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

    async def ha_states(self, context: dict[str, Any], host: str, states: dict[str, str]) -> None:
        """The host's keepalived instances changed roles (Neutron's update_ha_routers_states):
        the API shows each agent's ha_state, the other hosts send to the active one."""
        if await report_ha_states(self.service, host, states):
            await self.service.changed()

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
        self._ha_watch: asyncio.Task | None = None
        self._ha_reported: dict[str, str] = {}
        self._registered = False
        # The (request id, global request id) of each change announced since the last
        # apply, oldest first.
        self._requests: list[tuple[str, str | None]] = []
        self._unbound: set[str] = set()  # ports left unwired: their binding failed

    async def start(self) -> None:
        """Serve the host's topic, and converge on the database's state (resync)."""
        await self.transport.serve(agent_topic(self.host), self)
        self._dirty.set()
        self._task = asyncio.create_task(self._run())
        self._heartbeat = asyncio.create_task(self._report())
        self._watch = asyncio.create_task(self.driver.watch(lambda: self.sync({})))
        self._ha_watch = asyncio.create_task(self._watch_ha())

    async def stop(self) -> None:
        for task in (self._ha_watch, self._watch, self._heartbeat, self._task):
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

    async def _watch_ha(self) -> None:
        """Report the HA routers whose role here changed (Neutron's keepalived-state-change
        and update_ha_routers_states): the server shows it and sends traffic here."""
        while True:
            await asyncio.sleep(HA_WATCH_INTERVAL)
            if not self._registered:
                continue
            try:
                states = await self.driver.ha_states()
                changed = {r: s for r, s in states.items() if self._ha_reported.get(r) != s}
                if changed:
                    LOG.info("network agent %s: HA routers now %s", self.host, changed)
                    await self.transport.call(
                        SERVER_TOPIC, "ha_states", {}, host=self.host, states=changed, timeout=60
                    )
                self._ha_reported = states
            except Exception:  # noqa: BLE001 - the next round tries again
                LOG.warning("network agent %s: HA states not reported", self.host, exc_info=True)

    def _configurations(self) -> dict[str, Any]:
        return self.driver.configurations()

    async def sync(self, context: dict[str, Any]) -> None:
        """RPC cast: something changed; converge soon."""
        request = (request_id_var.get(), global_request_id_var.get())
        if request[0] != "-" and request not in self._requests:
            self._requests.append(request)
        self._idle.clear()
        self._dirty.set()

    def _working_for(
        self, requests: list[tuple[str, str | None]]
    ) -> contextlib.AbstractContextManager[None]:
        """The ids an apply runs under: the last change's; the others are logged."""
        if not requests:
            return contextlib.nullcontext()
        if len(requests) > 1:
            named = ", ".join(rid for rid, _ in requests[-LOGGED_REQUESTS:])
            more = len(requests) - LOGGED_REQUESTS
            LOG.info(
                "network agent %s: applying the changes of %s%s",
                self.host,
                named,
                f" and {more} more" if more > 0 else "",
            )
        return working_for(*requests[-1])

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until every change announced so far has been applied (for tests and tools)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def _converge(self, state: dict[str, Any]) -> None:
        """Apply `state`; its ports are reported up as soon as the driver has wired them
        (before other networks' DHCP servers and routers), else once it is all done."""
        reported = False
        state = {**state, "ports": self._wired_ports(state.get("ports", []))}

        async def ports_up() -> None:
            nonlocal reported
            await self.transport.call(
                SERVER_TOPIC, "ports_up", {}, host=self.host,
                port_ids=[p["id"] for p in state["ports"]], timeout=60,
            )  # fmt: skip
            reported = True

        await self.driver.apply(state, ports_up)
        if not reported:  # a driver that does not say when its ports are wired
            await ports_up()
        LOG.debug(
            "network agent %s: applied %d networks, %d ports, %d routers",
            self.host, *(len(state.get(key) or ()) for key in ("networks", "ports", "routers")),
        )  # fmt: skip

    def _wired_ports(self, ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The ports to wire here: not those whose binding to this host failed."""
        failed = {p["id"] for p in ports if p.get("vif_type") == BINDING_FAILED}
        for port_id in sorted(failed - self._unbound):
            LOG.warning(
                "network agent %s: port %s is not wired: its binding to this host failed",
                self.host,
                port_id,
            )
        self._unbound = failed
        return [p for p in ports if p["id"] not in failed]

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            requests, self._requests = self._requests, []
            with self._working_for(requests):
                await self._sync_once()
            if not self._dirty.is_set():
                self._idle.set()
            await asyncio.sleep(self.min_interval)

    async def _sync_once(self) -> None:
        """Register if not yet, then fetch the desired state and apply it."""
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
