"""The compute side of networking: ports for an instance, through the Network API.

Requested networks follow Nova: "none", "auto" (the one network the project can use,
or, when it can use none, the one Neutron's auto-allocated topology gives it), nothing
(before 2.37: the one network the project can use, or no network), or a list of
{"uuid": network, "fixed_ip": ip} / {"port": port}, each with an optional device role
"tag" kept in the port's network info. Ports made here are deleted with the instance;
ports the user brought are only unbound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from cumulo.common import metrics
from cumulo.common.service_client import ServiceClient, ServiceError, url_path
from cumulo.compute.virt.driver import Vif

LOG = logging.getLogger(__name__)


class NetworkAllocationError(Exception):
    pass


class PortsNotWired(NetworkAllocationError):
    """The host's network agent did not report the ports wired in time."""


class PortBindingFailed(NetworkAllocationError):
    """The Network service could not bind a port to this host (Nova's PortBindingFailed:
    the build fails here and is rescheduled to another host)."""

    def __init__(self, port_id: str) -> None:
        super().__init__(
            f"Binding failed for port {port_id}, please check neutron logs for more information."
        )
        self.port_id = port_id


class PortBindingActivationFailed(NetworkAllocationError):
    """The Network service could not activate a port's binding to the destination."""

    def __init__(self, port_id: str, host: str) -> None:
        super().__init__(f"Binding for port {port_id} and host {host} could not be activated.")
        self.port_id = port_id


BINDING_FAILED = "binding_failed"
# Neutron's multiple port bindings (an inactive binding on a live migration's
# destination, activated when the guest arrives); how long the answer is kept.
PORT_BINDING_EXTENDED = "binding-extended"
EXTENSION_CACHE_SECONDS = 600.0


# How often a build waiting for its ports' network-vif-plugged events looks at the ports
# itself, in case an event was lost.
WIRING_RECHECK = 2.0


NETWORK_AMBIGUOUS = "Multiple possible networks found, use a Network ID to be more specific."


def unable_to_auto_allocate(project_id: str) -> str:
    return f"Unable to automatically allocate a network for project {project_id}"


async def available_networks(
    network: ServiceClient, token: str, project_id: str, auto: bool
) -> list[dict[str, Any]]:
    """What Nova's _get_available_networks finds: the project's own networks that are
    not shared (up ones only with "auto": a topology being built is down), then the
    shared ones. External networks are not the project's to boot on."""
    own: dict[str, Any] = {"project_id": project_id, "shared": "False"}
    if auto:
        own["admin_state_up"] = "True"
    nets = (await network.json("GET", "/v2.0/networks", token, params=own))["networks"]
    nets = [n for n in nets if not n.get("router:external")]
    shared = await network.json("GET", "/v2.0/networks", token, params={"shared": "True"})
    return nets + shared["networks"]


async def can_auto_allocate(network: ServiceClient, token: str, project_id: str) -> bool:
    """Nova's _can_auto_allocate_network: the extension is there and its dry run passes."""
    try:
        await network.json("GET", "/v2.0/extensions/auto-allocated-topology", token)
        await network.json(
            "GET",
            f"/v2.0/auto-allocated-topology/{project_id}",
            token,
            params={"fields": "dry-run"},
        )
    except ServiceError as exc:
        if exc.status in (404, 409):
            return False
        raise
    return True


class PluggedPorts:
    """The network-vif-plugged events (the Network service's word that a port is wired,
    sent when it goes ACTIVE) of the ports builds are waiting for, as Nova's
    InstanceEvents: a waiter is registered before the port is looked at, so an event
    is never missed between the look and the wait."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future]] = {}

    @contextlib.contextmanager
    def expect(self, port_ids: Iterable[str]) -> Iterator[dict[str, asyncio.Future]]:
        loop = asyncio.get_running_loop()
        futures = {port_id: loop.create_future() for port_id in port_ids}
        for port_id, future in futures.items():
            self._waiters.setdefault(port_id, set()).add(future)
        try:
            yield futures
        finally:
            for port_id, future in futures.items():
                waiters = self._waiters.get(port_id, set())
                waiters.discard(future)
                if not waiters:
                    self._waiters.pop(port_id, None)
                future.cancel()

    def plugged(self, port_id: str) -> None:
        """A network-vif-plugged event for this port."""
        for future in self._waiters.get(port_id, ()):
            if not future.done():
                future.set_result(None)


class NetworkClient:
    def __init__(self, network: ServiceClient, service_token: Callable[[], Awaitable[str]]) -> None:
        self.network = network
        # Binding a port to a host is the compute service's right, not the user's.
        self.service_token = service_token
        self._extended: tuple[float, bool] | None = None
        self.plugged = PluggedPorts()

    async def _requested_network(
        self, token: str, project_id: str, auto: bool
    ) -> list[dict[str, Any]]:
        """Nova's choice when no network is named: the one the project can use; with
        "auto" and none, its auto-allocated topology's network."""
        nets = await available_networks(self.network, token, project_id, auto)
        if not nets and auto:
            try:
                topology = (
                    await self.network.json(
                        "GET", f"/v2.0/auto-allocated-topology/{project_id}", token
                    )
                )["auto_allocated_topology"]
            except ServiceError as exc:
                if exc.status != 409:
                    raise
                raise NetworkAllocationError(unable_to_auto_allocate(project_id)) from None
            nets = [{"id": topology["id"]}]
        if len(nets) > 1:
            raise NetworkAllocationError(NETWORK_AMBIGUOUS)
        return [{"uuid": net["id"]} for net in nets]

    async def _security_group_ids(self, token: str, names: list[str]) -> list[str]:
        ids = []
        for name in names:
            groups = (
                await self.network.json(
                    "GET", "/v2.0/security-groups", token, params={"name": name}
                )
            )["security_groups"]
            if not groups:
                raise NetworkAllocationError(f"Security group {name} not found.")
            ids.append(groups[0]["id"])
        return ids

    async def allocate_for_instance(
        self, token: str, instance: dict[str, Any], host: str
    ) -> list[dict[str, Any]]:
        """Create or bind the instance's ports; returns its network info (one entry a port)."""
        requested = instance.get("requested_networks") or []
        if requested == "none" or requested == [{"id": "none"}]:
            return []
        if requested in ("auto", [], [{"id": "auto"}]):
            requested = await self._requested_network(
                token, instance["project_id"], auto=requested != []
            )
            if not requested:
                return []
        sg_ids = await self._security_group_ids(token, instance.get("security_groups") or [])
        owner = {
            "device_id": instance["uuid"],
            "device_owner": f"compute:{instance.get('availability_zone') or 'nova'}",
        }
        info: list[dict[str, Any]] = []
        try:
            for req in requested:
                if req.get("port"):
                    port = (
                        await self.network.json(
                            "PUT", f"/v2.0/ports/{req['port']}", token, json={"port": owner}
                        )
                    )["port"]
                    preexisting = True
                else:
                    body: dict[str, Any] = {"network_id": req["uuid"], **owner}
                    if req.get("fixed_ip"):
                        body["fixed_ips"] = [{"ip_address": req["fixed_ip"]}]
                    if sg_ids:
                        body["security_groups"] = sg_ids
                    port = (
                        await self.network.json("POST", "/v2.0/ports", token, json={"port": body})
                    )["port"]
                    preexisting = False
                # Recorded before binding, so a failure below still releases it.
                info.append(_port_info(port, {}, preexisting))
                # Then bind it to this host, as the compute service.
                port = (
                    await self.network.json(
                        "PUT",
                        f"/v2.0/ports/{port['id']}",
                        await self.service_token(),
                        json={"port": {"binding:host_id": host}},
                    )
                )["port"]
                if port.get("binding:vif_type") == BINDING_FAILED:
                    raise PortBindingFailed(port["id"])
                network = (
                    await self.network.json("GET", f"/v2.0/networks/{port['network_id']}", token)
                )["network"]
                subnets = {}
                for ip in port.get("fixed_ips", []):
                    if ip.get("subnet_id") and ip["subnet_id"] not in subnets:
                        subnets[ip["subnet_id"]] = (
                            await self.network.json(
                                "GET", f"/v2.0/subnets/{ip['subnet_id']}", token
                            )
                        )["subnet"]
                # The device role tag the user gave the NIC (2.32-2.36, 2.42+; attach 2.49+).
                info[-1] = {
                    **_port_info(port, network, preexisting, subnets),
                    "tag": req.get("tag"),
                }
        except ServiceError as exc:
            await self.deallocate_for_instance(token, info)
            raise NetworkAllocationError(f"port allocation failed: {exc}") from exc
        except PortBindingFailed:
            await self.deallocate_for_instance(token, info)
            raise
        return info

    async def wait_for_wiring(self, token: str, info: list[dict[str, Any]], timeout: float) -> None:
        """Until the data plane has wired every port (status ACTIVE): before that the
        network's bridge may not exist on this host yet, and dnsmasq does not know the
        guest (Nova waits for network-vif-plugged the same way, and with its default
        vif_plugging_is_fatal fails the build when it does not come). Ports of a data
        plane without bridges (noop) are not waited for.

        Each port is looked at once, then its network-vif-plugged event is awaited
        (`plugged`), looking again every WIRING_RECHECK seconds in case one was lost."""
        waiting = {e["port_id"] for e in info if e.get("bridge")}
        if not waiting:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout
        with self.plugged.expect(waiting) as events:
            while True:
                for port_id in sorted(waiting):
                    port = (await self.network.json("GET", f"/v2.0/ports/{port_id}", token))["port"]
                    if port.get("status") == "ACTIVE":
                        waiting.discard(port_id)
                if not waiting:
                    break
                if loop.time() > deadline:
                    raise PortsNotWired(
                        "Virtual Interface creation failed: the network agent did not wire "
                        f"port(s) {', '.join(sorted(waiting))} within {timeout:g} s"
                    )
                await asyncio.wait(
                    [events[p] for p in waiting],
                    timeout=min(WIRING_RECHECK, max(0.0, deadline - loop.time())),
                    return_when=asyncio.ALL_COMPLETED,
                )
                waiting = {p for p in waiting if not events[p].done()}
                if not waiting:
                    break
        metrics.PORT_WIRING_WAIT_SECONDS.observe(loop.time() - started)

    async def bind_to_host(
        self, info: list[dict[str, Any]], host: str | None
    ) -> list[dict[str, Any]]:
        """Bind the instance's ports to `host` (None: to no host, while it is offloaded);
        the network info with where the data plane wired them there. PortBindingFailed
        when `host` cannot bind one (a move there fails, as Nova's; the caller binds
        the ports back to where the server stays)."""
        bound = []
        for entry in info:
            port = (
                await self.network.json(
                    "PUT",
                    f"/v2.0/ports/{entry['port_id']}",
                    await self.service_token(),
                    json={"port": {"binding:host_id": host or ""}},
                )
            )["port"]
            if host and port.get("binding:vif_type") == BINDING_FAILED:
                raise PortBindingFailed(port["id"])
            details = port.get("binding:vif_details") or {}
            bound.append(
                {
                    **entry,
                    "bridge": details.get("bridge_name"),
                    "netns": details.get("netns"),
                    "ovsdb": details.get("ovsdb"),
                }  # fmt: skip
            )
        return bound

    async def has_port_binding_extension(self) -> bool:
        """Whether the Network service lists `binding-extended` (Nova's
        has_port_binding_extension), asked again every EXTENSION_CACHE_SECONDS."""
        now = time.monotonic()
        if self._extended is not None and now - self._extended[0] < EXTENSION_CACHE_SECONDS:
            return self._extended[1]
        try:
            await self.network.json(
                "GET", f"/v2.0/extensions/{PORT_BINDING_EXTENDED}", await self.service_token()
            )
            found = True
        except ServiceError as exc:
            if exc.status != 404:
                raise
            found = False
        self._extended = (now, found)
        return found

    async def bind_ports_to_host(
        self, info: list[dict[str, Any]], host: str
    ) -> dict[str, dict[str, Any]]:
        """An INACTIVE binding of each of the instance's ports on `host`, with the
        port's vnic_type and profile (Nova's bind_ports_to_host); the bindings by port.
        PortBindingFailed when one cannot be made there: those made are deleted."""
        token = await self.service_token()
        made: dict[str, dict[str, Any]] = {}
        for entry in info:
            port_id = entry["port_id"]
            try:
                port = (await self.network.json("GET", url_path("/v2.0/ports/{}", port_id), token))[
                    "port"
                ]
                body = {
                    "binding": {
                        "host": host,
                        "vnic_type": port.get("binding:vnic_type") or "normal",
                        "profile": port.get("binding:profile") or {},
                    }
                }
                path = url_path("/v2.0/ports/{}/bindings", port_id)
                try:
                    binding = (await self.network.json("POST", path, token, json=body))["binding"]
                except ServiceError as exc:
                    if exc.status != 409:
                        raise
                    # Left by a move that ended without cleaning up: made again.
                    await self._delete_binding(token, port_id, host)
                    binding = (await self.network.json("POST", path, token, json=body))["binding"]
            except ServiceError as exc:
                LOG.warning("binding port %s to host %s failed: %s", port_id, host, exc)
                for done in made:
                    try:
                        await self._delete_binding(token, done, host)
                    except ServiceError:
                        LOG.warning("could not delete port %s's binding to %s", done, host)
                raise PortBindingFailed(port_id) from exc
            made[port_id] = binding
        return made

    async def activate_port_bindings(self, info: list[dict[str, Any]], host: str) -> None:
        """Make each port's binding on `host` its active one (Nova's
        migrate_instance_start); one already active is left as it is."""
        token = await self.service_token()
        for entry in info:
            path = url_path("/v2.0/ports/{}/bindings/{}/activate", entry["port_id"], host)
            try:
                await self.network.json("PUT", path, token)
            except ServiceError as exc:
                if exc.status == 409:  # already active
                    continue
                raise PortBindingActivationFailed(entry["port_id"], host) from exc

    async def delete_port_bindings(self, info: list[dict[str, Any]], host: str) -> None:
        """Delete each port's binding on `host`; one not there is fine."""
        token = await self.service_token()
        for entry in info:
            await self._delete_binding(token, entry["port_id"], host)

    async def _delete_binding(self, token: str, port_id: str, host: str) -> None:
        await self.network.request(
            "DELETE", url_path("/v2.0/ports/{}/bindings/{}", port_id, host), token, ok=(204, 404)
        )

    async def deallocate_for_instance(
        self, token: str, info: list[dict[str, Any]], instance_uuid: str | None = None
    ) -> None:
        """Delete the ports made for the instance, unbind the ones the user brought.
        With `instance_uuid`, also the ports bound to it that `info` does not know (a
        build interrupted before it recorded them): deleted, as Nova does."""
        if instance_uuid is not None:
            known = {e["port_id"] for e in info}
            try:
                bound = (
                    await self.network.json(
                        "GET", "/v2.0/ports", token, params={"device_id": instance_uuid}
                    )
                )["ports"]
            except ServiceError:
                bound = []
            info = [*info, *(_port_info(p, {}, False) for p in bound if p["id"] not in known)]
        for entry in info:
            try:
                if entry.get("preexisting"):
                    await self.network.json(
                        "PUT",
                        f"/v2.0/ports/{entry['port_id']}",
                        await self.service_token(),
                        json={"port": {"device_id": "", "device_owner": "", "binding:host_id": ""}},
                    )
                else:
                    await self.network.request(
                        "DELETE", f"/v2.0/ports/{entry['port_id']}", token, ok=(204, 404)
                    )
            except ServiceError:
                continue


def _port_info(
    port: dict[str, Any],
    network: dict[str, Any],
    preexisting: bool,
    subnets: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "port_id": port["id"],
        "mac": port["mac_address"],
        "network_id": port["network_id"],
        "network_name": network.get("name", ""),
        "mtu": network.get("mtu") or 1500,
        "fixed_ips": [
            ip_info(ip, (subnets or {}).get(ip.get("subnet_id") or ""))
            for ip in port.get("fixed_ips", [])
        ],
        "bridge": (port.get("binding:vif_details") or {}).get("bridge_name"),
        "netns": (port.get("binding:vif_details") or {}).get("netns"),
        "ovsdb": (port.get("binding:vif_details") or {}).get("ovsdb"),
        "datapath_type": (port.get("binding:vif_details") or {}).get("datapath_type"),
        "preexisting": preexisting,
    }


def ip_info(ip: dict[str, Any], subnet: dict[str, Any] | None) -> dict[str, Any]:
    """An address with what a guest needs to configure it (network_data.json)."""
    info: dict[str, Any] = {
        "ip_address": ip["ip_address"],
        "subnet_id": ip.get("subnet_id"),
        "version": 6 if ":" in ip["ip_address"] else 4,
    }
    if subnet:
        info.update(
            cidr=subnet.get("cidr"),
            gateway=subnet.get("gateway_ip"),
            dns_nameservers=list(subnet.get("dns_nameservers") or []),
            host_routes=list(subnet.get("host_routes") or []),
            enable_dhcp=bool(subnet.get("enable_dhcp")),
        )
    return info


def with_bindings(
    info: list[dict[str, Any]], bindings: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The network info as the ports are bound by these bindings (by port): where the
    destination's data plane wires them."""
    bound = []
    for entry in info:
        details = (bindings.get(entry["port_id"]) or {}).get("vif_details") or {}
        bound.append(
            {
                **entry,
                "bridge": details.get("bridge_name"),
                "netns": details.get("netns"),
                "ovsdb": details.get("ovsdb"),
                "datapath_type": details.get("datapath_type"),
            }  # fmt: skip
        )
    return bound


def vifs_from_info(info: list[dict[str, Any]]) -> tuple[Vif, ...]:
    return tuple(
        Vif(
            port_id=e["port_id"],
            mac=e["mac"],
            network_id=e["network_id"],
            fixed_ips=tuple(ip["ip_address"] for ip in e["fixed_ips"]),
            mtu=e["mtu"],
            bridge=e.get("bridge"),
            netns=e.get("netns"),
            ovsdb=e.get("ovsdb"),
            datapath_type=e.get("datapath_type"),
        )
        for e in info
    )
