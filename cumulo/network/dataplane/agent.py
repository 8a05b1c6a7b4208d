"""The network agent (one per host, topic `network.<host>`) and the server endpoint it asks.

`sync` casts are coalesced: however many changes arrive, the agent fetches the
desired state once per `min_interval` on average (a token bucket: after a quiet time a
few reads at once, READ_BURST), under the request ids of the changes it
applies (its log lines name the requests, as Neutron's agents' do). Each state read goes
two ways, as Neutron's L2 agent works apart from its DHCP and L3 agents:

- wired at once (`NetworkDriver.wire`): the networks' bridges, the guests' ports and
  their security groups; the ports are reported up (ACTIVE) then. A boot waits for
  this, not for other tenants' DHCP servers and routers.
- applied whole (`NetworkDriver.apply`) by a second task, one apply at a time, with
  the newest state read when the previous apply ends: DHCP servers, routers, and the
  removal of what is gone. It is the safety net: it converges everything, and wires
  the ports itself when their wiring failed (or the driver has no fast path).

States are numbered as they are read; a driver never lets an older state's wiring undo
a newer one's. Ports whose binding failed on this host (`binding:vif_type`
`binding_failed`) are not wired: they stay DOWN, as with ML2's agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
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
# Reads a quiet agent makes at once before min_interval paces them: a boot's port is
# created, then bound to this host a few ms later; at one read a second the binding's
# read waited out the rest of the creation's second (most of a second per boot).
READ_BURST = 3
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
        which the compute service waits for before it starts a guest: it is told so)."""
        if port_ids:
            self.service.ports_plugged(await self.service.mark_ports_active(host, port_ids))


@dataclass
class _Read:
    """A desired state read, waiting for the whole apply (the newest replaces it)."""

    generation: int
    state: dict[str, Any]
    requests: list[tuple[str, str | None]]  # the changes it applies, oldest first
    reported: bool  # its ports were wired and reported up already


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
        self._reading = False  # between a change seen and its state handed to the apply
        self._applying = False
        self._generation = 0  # of the last state read
        self._next: _Read | None = None  # the newest state read and not yet applied whole
        self._due = asyncio.Event()  # _next is set
        self._task: asyncio.Task | None = None
        self._applier: asyncio.Task | None = None
        self._heartbeat: asyncio.Task | None = None
        self._watch: asyncio.Task | None = None
        self._ha_watch: asyncio.Task | None = None
        self._ha_reported: dict[str, str] = {}
        self._registered = False
        # The (request id, global request id) of each change announced since the last
        # read, oldest first.
        self._requests: list[tuple[str, str | None]] = []
        self._unbound: set[str] = set()  # ports left unwired: their binding failed

    async def start(self) -> None:
        """Serve the host's topic, and converge on the database's state (resync)."""
        await self.transport.serve(agent_topic(self.host), self)
        self._dirty.set()
        self._task = asyncio.create_task(self._run())
        self._applier = asyncio.create_task(self._apply_loop())
        self._heartbeat = asyncio.create_task(self._report())
        self._watch = asyncio.create_task(self.driver.watch(lambda: self.sync({})))
        self._ha_watch = asyncio.create_task(self._watch_ha())

    async def stop(self) -> None:
        for task in (self._ha_watch, self._watch, self._heartbeat, self._task, self._applier):
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

    async def _ports_up(self, state: dict[str, Any]) -> None:
        """The state's ports are wired: those not ACTIVE yet go ACTIVE (one write when
        there are, none when there are not)."""
        port_ids = [p["id"] for p in state["ports"] if p.get("status") != "ACTIVE"]
        if port_ids:
            await self.transport.call(
                SERVER_TOPIC, "ports_up", {}, host=self.host, port_ids=port_ids, timeout=60
            )

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
        """Read the desired state after changes (once per min_interval under a stream of
        changes, READ_BURST reads at once after a quiet time), wire its ports, and hand
        it to the whole apply."""
        loop = asyncio.get_running_loop()
        allowance, counted_at = float(READ_BURST), loop.time()
        while True:
            await self._dirty.wait()
            now = loop.time()
            allowance = min(READ_BURST, allowance + (now - counted_at) / self.min_interval)
            counted_at = now
            if allowance < 1:
                await asyncio.sleep((1 - allowance) * self.min_interval)
                allowance, counted_at = 1.0, loop.time()
            allowance -= 1
            self._reading = True
            self._dirty.clear()
            requests, self._requests = self._requests, []
            try:
                with working_for(*requests[-1]) if requests else contextlib.nullcontext():
                    read = await self._read_and_wire(requests)
                if read is not None:
                    if self._next is not None:  # not applied yet: this one covers it
                        read.requests = self._next.requests + read.requests
                    self._next = read
                    self._due.set()
            finally:
                self._reading = False
            self._set_idle_if_done()

    async def _read_and_wire(self, requests: list[tuple[str, str | None]]) -> _Read | None:
        """Register if not yet, read the desired state, wire its ports (the fast path)."""
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
        except Exception:  # noqa: BLE001 - keep the agent alive; the next sync retries
            LOG.exception("network agent %s: reading the desired state failed", self.host)
            metrics.DATAPLANE_APPLIES.labels("error").inc()
            self._requests = requests + self._requests
            self._dirty.set()
            return None
        self._generation += 1
        state = {**state, "ports": self._wired_ports(state.get("ports", []))}
        started = time.monotonic()
        try:
            reported = await self.driver.wire(state, self._generation)
            if reported:
                await self._ports_up(state)
                metrics.DATAPLANE_WIRE_SECONDS.observe(time.monotonic() - started)
        except Exception:  # noqa: BLE001 - the whole apply wires them
            LOG.exception("network agent %s: wiring the ports failed", self.host)
            reported = False
        return _Read(self._generation, state, requests, reported)

    async def _apply_loop(self) -> None:
        """Apply the newest state read whole, one apply at a time."""
        while True:
            await self._due.wait()
            self._due.clear()
            read, self._next = self._next, None
            if read is None:
                continue
            with self._working_for(read.requests):
                await self._apply(read)
            self._set_idle_if_done()
            # The changes of the next second in one apply (the ports do not wait for it).
            await asyncio.sleep(self.min_interval)

    def _set_idle_if_done(self) -> None:
        """Idle: no change unread, no state unapplied, no apply running."""
        if not (self._dirty.is_set() or self._reading or self._next or self._applying):
            self._idle.set()

    async def _apply(self, read: _Read) -> None:
        """Apply a state whole; its ports are reported up as soon as the driver has
        wired them (unless they were already), else once it is all done."""
        started = time.monotonic()
        state, reported = read.state, read.reported
        self._applying = True

        async def ports_up() -> None:
            nonlocal reported
            await self._ports_up(state)
            reported = True

        try:
            await self.driver.apply(state, None if reported else ports_up, read.generation)
            if not reported:  # a driver that does not say when its ports are wired
                await ports_up()
            metrics.DATAPLANE_APPLIES.labels("ok").inc()
            metrics.DATAPLANE_APPLY_SECONDS.observe(time.monotonic() - started)
        except Exception:  # noqa: BLE001 - keep the agent alive; the next sync retries
            LOG.exception("network agent %s: sync failed", self.host)
            metrics.DATAPLANE_APPLIES.labels("error").inc()
            self._dirty.set()
        finally:
            self._applying = False
        LOG.debug(
            "network agent %s: applied %d networks, %d ports, %d routers",
            self.host, *(len(state.get(key) or ()) for key in ("networks", "ports", "routers")),
        )  # fmt: skip
