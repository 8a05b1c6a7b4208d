"""Neutron's multiple port bindings (`binding-extended`) and Nova's live migration on
them, on a cloud with three fake compute hosts:

- the compute service (role service; admins only read them, as Neutron's policy) lists
  a compute port's bindings, gives it an INACTIVE binding on another host
  (openstacksdk), activates it (the port's `binding:host_id` follows, the old one
  becomes INACTIVE) and deletes the old one; duplicates, unknown hosts, hosts that
  cannot bind the port, other ports and other users get Neutron's errors;
- a host's agent does not wire a port whose binding to it is inactive, until the
  binding is activated;
- a live migration binds the server's ports inactive on the destination while the
  guest is copied (the source keeps the active binding), activates them once the guest
  is there and deletes the source's; an aborted one deletes the destination's;
- a live migration without a host tries the scheduler's next host when the chosen one
  cannot bind the port, up to `[compute] migrate_max_retries`.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import httpx
import pytest

from cumulo.compute import rpcapi
from cumulo.compute.conductor import ConductorManager
from cumulo.network.dataplane.agent import NetworkAgent
from tests.cloudrunner import CloudRunner, running_cloud
from tests.functional.test_network_binding import LB_REPORT, MappedNoop, _faults, _name, report

MAIN = "pb-main"
LB_HOST = f"{MAIN}-fake1"  # its agent maps physnet2 only
SOURCE = f"{MAIN}-fake2"  # no agent: binds every network
DEST = f"{MAIN}-fake3"  # no agent either
COMPUTE_API = {"OpenStack-API-Version": "compute 2.25"}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory):
    def configure(config) -> None:
        config.compute.host = MAIN
        config.compute.fake_hosts = 3

    with running_cloud(tmp_path_factory.mktemp("bindings"), configure) as runner:
        yield runner


@pytest.fixture(scope="module")
def admin(cloud: CloudRunner):
    with cloud.api("network") as client:
        yield client


@pytest.fixture(scope="module")
def service(cloud: CloudRunner):
    """The compute service's identity (role service): only it changes port bindings."""
    cfg = cloud.config.identity
    token = cloud.token("cumulo", cfg.service_password, project="service")
    with cloud.api("network", token) as client:
        yield client


def _service_sdk(cloud: CloudRunner):
    from openstack.connection import Connection

    return Connection(
        auth_url=cloud.auth_url,
        username="cumulo",
        password=cloud.config.identity.service_password,
        project_name="service",
        user_domain_id="default",
        project_domain_id="default",
    )


@pytest.fixture(scope="module")
def compute(cloud: CloudRunner):
    with cloud.api("compute", path="/v2.1", headers=COMPUTE_API) as client:
        yield client


def _network(admin: httpx.Client, cidr: str, **attrs: Any) -> str:
    net = admin.post("/v2.0/networks", json={"network": {"name": _name("net"), **attrs}})
    assert net.status_code == 201, net.text
    net_id = net.json()["network"]["id"]
    subnet = {"network_id": net_id, "cidr": cidr, "ip_version": 4}
    assert admin.post("/v2.0/subnets", json={"subnet": subnet}).status_code == 201
    return net_id


@pytest.fixture(scope="module")
def tenant(admin: httpx.Client) -> str:
    return _network(admin, "10.91.0.0/24")


@pytest.fixture(scope="module")
def physnet1(admin: httpx.Client) -> str:
    return _network(
        admin,
        "10.92.0.0/24",
        **{"provider:network_type": "flat", "provider:physical_network": "physnet1"},
    )


@pytest.fixture(scope="module")
def image(cloud: CloudRunner, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("img") / "disk.raw"
    path.write_bytes(b"\0" * 1024 * 1024)
    created = cloud.openstack(
        "image", "create", _name("img"), "--file", str(path), "--disk-format", "raw",
        "--container-format", "bare", "--public", "-f", "json",
    )  # fmt: skip
    return created["id"]


def _port(admin: httpx.Client, network_id: str, host: str, owner: str = "compute:nova") -> dict:
    body = {"network_id": network_id, "device_owner": owner, "binding:host_id": host}
    r = admin.post("/v2.0/ports", json={"port": body})
    assert r.status_code == 201, r.text
    return r.json()["port"]


def _bindings(admin: httpx.Client, port_id: str, **query: str) -> list[dict]:
    r = admin.get(f"/v2.0/ports/{port_id}/bindings", params=query)
    assert r.status_code == 200, r.text
    return r.json()["bindings"]


def _where(bindings: list[dict]) -> dict[str, str]:
    return {b["host"]: b["status"] for b in bindings}


def _error(r: httpx.Response, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    error = r.json()["NeutronError"]
    assert error["type"] == kind, error
    return error["message"]


def test_the_compute_service_binds_a_compute_port_to_a_second_host_and_activates_it(
    cloud: CloudRunner, admin: httpx.Client, service: httpx.Client, tenant: str, physnet1: str
):
    report(cloud, LB_HOST, LB_REPORT)
    assert admin.get("/v2.0/extensions/binding-extended").status_code == 200
    aliases = {e["alias"] for e in admin.get("/v2.0/extensions").json()["extensions"]}
    assert "binding-extended" in aliases

    port = _port(admin, tenant, SOURCE)
    conn = _service_sdk(cloud)
    [active] = [b.to_dict(computed=False) for b in conn.network.port_bindings(port["id"])]
    assert {k: active[k] for k in ("host", "status", "vif_type", "vnic_type", "profile")} == {
        "host": SOURCE, "status": "ACTIVE", "vif_type": "bridge", "vnic_type": "normal",
        "profile": {},
    }  # fmt: skip

    # An inactive binding on the destination: the port stays bound where it was.
    made = conn.network.create_port_binding(port["id"], host=DEST, profile={"k": "v"})
    assert (made.host, made.status, made.vif_type) == (DEST, "INACTIVE", "bridge")
    assert made.vif_details and made.profile == {"k": "v"}
    assert _where(_bindings(admin, port["id"])) == {SOURCE: "ACTIVE", DEST: "INACTIVE"}
    assert [b["host"] for b in _bindings(admin, port["id"], status="INACTIVE")] == [DEST]
    assert [b["host"] for b in _bindings(admin, port["id"], host=SOURCE)] == [SOURCE]
    shown = admin.get(f"/v2.0/ports/{port['id']}").json()["port"]
    assert shown["binding:host_id"] == SOURCE
    one = admin.get(f"/v2.0/ports/{port['id']}/bindings/{DEST}")
    assert one.json()["binding"]["status"] == "INACTIVE"

    # One binding a host; unknown hosts; hosts that cannot bind the port.
    for host in (SOURCE, DEST):
        again = service.post(f"/v2.0/ports/{port['id']}/bindings", json={"binding": {"host": host}})
        message = _error(again, 409, "PortBindingAlreadyExists")
        assert message == f"Binding for port {port['id']} on host {host} already exists."
    _error(admin.get(f"/v2.0/ports/{port['id']}/bindings/nowhere"), 404, "PortBindingNotFound")
    no_host = service.post(f"/v2.0/ports/{port['id']}/bindings", json={"binding": {}})
    assert no_host.status_code == 400
    flat = _port(admin, physnet1, SOURCE)
    failed = service.post(f"/v2.0/ports/{flat['id']}/bindings", json={"binding": {"host": LB_HOST}})
    _error(failed, 500, "PortBindingError")
    assert _where(_bindings(admin, flat["id"])) == {SOURCE: "ACTIVE"}
    # Only compute ports have several bindings.
    plain = _port(admin, tenant, SOURCE, owner="")
    message = _error(admin.get(f"/v2.0/ports/{plain['id']}/bindings"), 400, "BadRequest")
    assert "Operation only valid on compute and shared filesystem ports" in message

    # Admins see bindings but do not change them (Neutron: the service's alone).
    refused = admin.post(f"/v2.0/ports/{port['id']}/bindings", json={"binding": {"host": "x"}})
    assert refused.status_code == 403, refused.text
    assert admin.delete(f"/v2.0/ports/{port['id']}/bindings/{DEST}").status_code == 403
    # Members: another project's port is not there; their own port's bindings are not theirs.
    with httpx.Client(
        base_url=str(admin.base_url),
        headers={"X-Auth-Token": cloud.token("demo", project="demo")},
        timeout=30,
    ) as demo:
        hidden = demo.post(f"/v2.0/ports/{port['id']}/bindings", json={"binding": {"host": "x"}})
        _error(hidden, 404, "PortNotFound")
        own = demo.post(
            "/v2.0/ports", json={"port": {"network_id": _demo_network(demo), "name": "own"}}
        ).json()["port"]
        refused = demo.post(f"/v2.0/ports/{own['id']}/bindings", json={"binding": {"host": "x"}})
        assert refused.status_code == 403, refused.text
        assert demo.get(f"/v2.0/ports/{own['id']}/bindings").json() == {"bindings": []}
        assert demo.delete(f"/v2.0/ports/{own['id']}").status_code == 204

    # Activated: the destination's binding is the port's, the source's is inactive.
    conn.network.activate_port_binding(port["id"], DEST)
    assert _where(_bindings(admin, port["id"])) == {DEST: "ACTIVE", SOURCE: "INACTIVE"}
    shown = admin.get(f"/v2.0/ports/{port['id']}").json()["port"]
    assert (shown["binding:host_id"], shown["binding:profile"]) == (DEST, {"k": "v"})
    assert shown["status"] == "DOWN"  # until the destination's agent has wired it
    assert shown["revision_number"] > port["revision_number"]
    twice = service.put(f"/v2.0/ports/{port['id']}/bindings/{DEST}/activate")
    assert _error(twice, 409, "PortBindingAlreadyActive") == (
        f"Binding for port {port['id']} on host {DEST} is already active."
    )
    missing = service.put(f"/v2.0/ports/{port['id']}/bindings/nowhere/activate")
    _error(missing, 404, "PortBindingNotFound")

    # The source's binding deleted: the port has one binding left.
    conn.network.delete_port_binding(port["id"], SOURCE)
    assert _where(_bindings(admin, port["id"])) == {DEST: "ACTIVE"}
    gone = service.delete(f"/v2.0/ports/{port['id']}/bindings/{SOURCE}")
    _error(gone, 404, "PortBindingNotFound")
    # Rebinding the port (binding:host_id) to a host with an inactive binding takes it.
    conn.network.create_port_binding(port["id"], host=SOURCE)
    admin.put(f"/v2.0/ports/{port['id']}", json={"port": {"binding:host_id": SOURCE}})
    assert _where(_bindings(admin, port["id"])) == {SOURCE: "ACTIVE"}
    for p in (port, flat, plain):
        assert admin.delete(f"/v2.0/ports/{p['id']}").status_code == 204


def _demo_network(demo: httpx.Client) -> str:
    [private] = demo.get("/v2.0/networks", params={"name": "private"}).json()["networks"]
    return private["id"]


def _wait_port_status(admin: httpx.Client, port_id: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (port := admin.get(f"/v2.0/ports/{port_id}").json()["port"])["status"] != status:
        assert time.monotonic() < deadline, f"port {port_id} is {port['status']}, not {status}"
        time.sleep(0.2)


def test_an_inactive_binding_is_not_wired_by_its_hosts_agent_until_activated(
    cloud: CloudRunner, admin: httpx.Client, service: httpx.Client, tenant: str
):
    host = f"{MAIN}-agent"
    agent = NetworkAgent(cloud.cloud.network.agent.transport, host, MappedNoop(), 0.2)
    cloud.run_async(agent.start())
    try:
        port = _port(admin, tenant, SOURCE)
        binding = {"binding": {"host": host}}
        assert service.post(f"/v2.0/ports/{port['id']}/bindings", json=binding).status_code == 201
        # Another port bound to the agent's host is wired: the agent has synced since.
        canary = _port(admin, tenant, host)
        _wait_port_status(admin, canary["id"], "ACTIVE")
        wired = {p["id"] for p in agent.driver.state["ports"]}
        assert canary["id"] in wired and port["id"] not in wired
        # Activated, it is the host's to wire.
        activated = service.put(f"/v2.0/ports/{port['id']}/bindings/{host}/activate")
        assert activated.status_code == 200, activated.text
        assert activated.json()["binding"]["status"] == "ACTIVE"
        _wait_port_status(admin, port["id"], "ACTIVE")
        assert port["id"] in {p["id"] for p in agent.driver.state["ports"]}
        for p in (port, canary):
            assert admin.delete(f"/v2.0/ports/{p['id']}").status_code == 204
    finally:
        cloud.run_async(agent.stop())


def _boot(cloud: CloudRunner, image: str, host: str, network_id: str) -> dict:
    server = cloud.openstack(
        "server", "create", "--image", image, "--flavor", "m1.nano", "--nic",
        f"net-id={network_id}", "--availability-zone", f"nova:{host}", _name("vm"),
        "--wait", "-f", "json",
    )  # fmt: skip
    assert server["status"] == "ACTIVE", server.get("fault")
    return server


def _server(compute: httpx.Client, server_id: str) -> dict:
    return compute.get(f"/servers/{server_id}").json()["server"]


def _settled(compute: httpx.Client, server_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (server := _server(compute, server_id))["OS-EXT-STS:task_state"] is not None:
        assert time.monotonic() < deadline, server["OS-EXT-STS:task_state"]
        time.sleep(0.2)
    return server


def _live_migrate(compute: httpx.Client, server_id: str, host: str | None) -> None:
    body = {"os-migrateLive": {"host": host, "block_migration": "auto"}}
    r = compute.post(f"/servers/{server_id}/action", json=body)
    assert r.status_code == 202, r.text


def _running_migration(compute: httpx.Client, server_id: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    headers = {"OpenStack-API-Version": "compute 2.24"}
    while True:
        found = compute.get(f"/servers/{server_id}/migrations", headers=headers).json()
        if found["migrations"] and found["migrations"][0]["status"] == "running":
            return found["migrations"][0]
        assert time.monotonic() < deadline, found
        time.sleep(0.1)


def _migrations(compute: httpx.Client, server_id: str) -> list[dict]:
    headers = {"OpenStack-API-Version": "compute 2.59"}
    found = compute.get("/os-migrations", params={"instance_uuid": server_id}, headers=headers)
    return found.json()["migrations"]


def _port_of(admin: httpx.Client, server_id: str) -> dict:
    [port] = admin.get("/v2.0/ports", params={"device_id": server_id}).json()["ports"]
    return port


def _host_driver(cloud: CloudRunner, host: str):
    [manager] = [m for m in cloud.cloud.compute.managers if m.host == host]
    return manager.driver


def test_a_live_migration_binds_the_port_inactive_on_the_destination_until_the_guest_is_there(
    cloud: CloudRunner, admin: httpx.Client, compute: httpx.Client, tenant: str, image: str
):
    server = _boot(cloud, image, SOURCE, tenant)
    port = _port_of(admin, server["id"])
    driver = _host_driver(cloud, SOURCE)
    driver.live_migration_delay = 30
    try:
        _live_migrate(compute, server["id"], DEST)
        migration = _running_migration(compute, server["id"])
        # While memory is copied the source's agent keeps the port: its binding is the
        # active one, the destination's is inactive.
        assert _where(_bindings(admin, port["id"])) == {SOURCE: "ACTIVE", DEST: "INACTIVE"}
        assert admin.get(f"/v2.0/ports/{port['id']}").json()["port"]["binding:host_id"] == SOURCE
        forced = compute.post(
            f"/servers/{server['id']}/migrations/{migration['id']}/action",
            json={"force_complete": None},
            headers={"OpenStack-API-Version": "compute 2.22"},
        )
        assert forced.status_code == 202, forced.text
        moved = _settled(compute, server["id"])
    finally:
        driver.live_migration_delay = 0.0
    assert (moved["status"], moved["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", DEST)
    # The guest is there: its binding is the port's only one.
    [binding] = _bindings(admin, port["id"])
    assert (binding["host"], binding["status"], binding["vif_type"]) == (DEST, "ACTIVE", "bridge")
    assert admin.get(f"/v2.0/ports/{port['id']}").json()["port"]["binding:host_id"] == DEST
    assert _migrations(compute, server["id"])[0]["status"] == "completed"

    # Aborted on its way back: the destination's binding goes, the port stays here.
    driver = _host_driver(cloud, DEST)
    driver.live_migration_delay = 30
    try:
        _live_migrate(compute, server["id"], SOURCE)
        migration = _running_migration(compute, server["id"])
        assert _where(_bindings(admin, port["id"])) == {DEST: "ACTIVE", SOURCE: "INACTIVE"}
        aborted = compute.delete(
            f"/servers/{server['id']}/migrations/{migration['id']}",
            headers={"OpenStack-API-Version": "compute 2.24"},
        )
        assert aborted.status_code == 202, aborted.text
        back = _settled(compute, server["id"])
    finally:
        driver.live_migration_delay = 0.0
    assert (back["status"], back["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", DEST)
    assert _where(_bindings(admin, port["id"])) == {DEST: "ACTIVE"}
    cloud.openstack("server", "delete", "--wait", server["id"])


def _conductor(cloud: CloudRunner) -> ConductorManager:
    """This cloud's conductor: the one on its compute hosts' bus (the worker may still
    hold other clouds' in memory)."""
    bus = cloud.cloud.compute.managers[0].bus
    [conductor] = [
        o for o in gc.get_objects() if isinstance(o, ConductorManager) and o.scheduler.bus is bus
    ]
    return conductor


def test_a_live_migration_tries_the_next_host_when_its_destination_cannot_bind_the_port(
    cloud: CloudRunner,
    admin: httpx.Client,
    compute: httpx.Client,
    physnet1: str,
    image: str,
    monkeypatch: pytest.MonkeyPatch,
):
    report(cloud, LB_HOST, LB_REPORT)  # physnet1 does not bind there
    server = _boot(cloud, image, SOURCE, physnet1)
    port = _port_of(admin, server["id"])
    chosen: list[tuple[str, list[str]]] = []
    select = rpcapi.SchedulerAPI.select_destinations

    async def scheduler_prefers_lb_host(self, ctx, spec, keys):
        # The scheduler ranks the host that cannot bind the port first.
        if not spec["force_hosts"] and LB_HOST not in spec["ignore_hosts"]:
            spec = {**spec, "force_hosts": [LB_HOST]}
        found = await select(self, ctx, spec, keys)
        chosen.append((found[0]["host"], list(spec["ignore_hosts"])))
        return found

    monkeypatch.setattr(rpcapi.SchedulerAPI, "select_destinations", scheduler_prefers_lb_host)
    _live_migrate(compute, server["id"], None)
    moved = _settled(compute, server["id"])
    assert moved["status"] == "ACTIVE"
    assert chosen[0] == (LB_HOST, [SOURCE])
    assert chosen[1][0] not in (LB_HOST, SOURCE) and LB_HOST in chosen[1][1]
    assert moved["OS-EXT-SRV-ATTR:host"] == chosen[1][0]
    assert _migrations(compute, server["id"])[0]["status"] == "completed"
    assert _where(_bindings(admin, port["id"])) == {chosen[1][0]: "ACTIVE"}

    # No retry allowed ([compute] migrate_max_retries = 0): the move fails, nothing moved.
    conductor = _conductor(cloud)
    monkeypatch.setattr(conductor.options, "migrate_max_retries", 0)
    here = moved["OS-EXT-SRV-ATTR:host"]
    chosen.clear()
    _live_migrate(compute, server["id"], None)
    stayed = _settled(compute, server["id"])
    assert (stayed["status"], stayed["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", here)
    assert [host for host, _ in chosen] == [LB_HOST]
    assert _migrations(compute, server["id"])[0]["status"] == "error"
    faults = cloud.run_async(_faults(cloud, server["id"]))
    assert faults[-1] == (
        f"Exceeded max scheduling retries 1 for instance {server['id']} during live migration"
    )
    assert _where(_bindings(admin, port["id"])) == {here: "ACTIVE"}
    cloud.openstack("server", "delete", "--wait", server["id"])
