"""One boot, followed by its global request id through every service's log lines.

A client boots a server with its own `X-OpenStack-Request-ID: req-<uuid>`: the compute
API's lines, the conductor's, the scheduler's and the compute host's (reached over the
bus: in-process, and RabbitMQ where it runs) carry it beside the API request's own id,
and so do the Network API's lines of the compute host's port calls and the network
agent's lines wiring them (reached over HTTP, then the bus again). The server's instance
action keeps the API request's own id, as Nova's does.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from cumulo.common.logs import TEXT_FORMAT, RequestIdFilter
from tests.cloudrunner import CloudRunner, running_cloud
from tests.cluster import delete_queues, reachable
from tests.conftest import skip_or_fail

RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"


@pytest.fixture(scope="module", params=["memory", "rabbit"])
def cloud(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[CloudRunner]:
    namespace = f"cumulo-test-{uuid.uuid4().hex[:8]}"
    if request.param == "rabbit" and not reachable(5672):
        skip_or_fail("RabbitMQ is not reachable on 127.0.0.1:5672")

    def configure(config) -> None:
        if request.param == "rabbit":
            config.messaging.transport_url = RABBIT_URL
            config.messaging.namespace = namespace

    try:
        with running_cloud(tmp_path_factory.mktemp("reqids"), configure, timeout=60) as runner:
            yield runner
    finally:
        if request.param == "rabbit":
            asyncio.run(delete_queues(namespace))


@pytest.fixture(scope="module")
def network(cloud: CloudRunner) -> str:
    name = f"reqids-{uuid.uuid4().hex[:6]}"
    net = cloud.openstack("network", "create", name, "-f", "json")
    cloud.openstack("subnet", "create", "--network", net["id"], "--subnet-range",
                    "10.91.0.0/24", name)  # fmt: skip
    return net["id"]


@pytest.fixture(scope="module")
def image(cloud: CloudRunner, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True)
    return cloud.openstack(
        "image", "create", "reqids-img", "--file", str(path), "--disk-format", "qcow2",
        "--container-format", "bare", "--public", "-f", "json",
    )["id"]  # fmt: skip


def _capture(caplog: pytest.LogCaptureFixture) -> None:
    """Every cumulo log line from here on, with its request ids as the handlers see them
    (pytest gives each test phase its own capturing handler: called in the test)."""
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.DEBUG, logger="cumulo")


def _boot(cloud: CloudRunner, image: str, network: str, global_id: str) -> tuple[dict, str]:
    """POST /servers sent with the global id; the server once ACTIVE and the request's id."""
    compute = f"http://127.0.0.1:{cloud.config.ports.compute}/v2.1"
    headers = {"X-Auth-Token": cloud.token("admin")}
    flavor = cloud.openstack("flavor", "show", "m1.nano", "-f", "json")["id"]
    body = {
        "server": {
            "name": f"reqids-{uuid.uuid4().hex[:6]}",
            "imageRef": image,
            "flavorRef": flavor,
            "networks": [{"uuid": network}],
        }
    }
    with httpx.Client(base_url=compute, headers=headers, timeout=30) as http:
        answer = http.post("/servers", json=body, headers={"X-OpenStack-Request-ID": global_id})
        assert answer.status_code == 202, answer.text
        server_id = answer.json()["server"]["id"]
        deadline = time.monotonic() + 60
        while (server := http.get(f"/servers/{server_id}").json()["server"])["status"] == "BUILD":
            assert time.monotonic() < deadline, "the boot did not end"
            time.sleep(0.2)
    assert server["status"] == "ACTIVE", server.get("fault")
    return server, answer.headers["x-openstack-request-id"]


def _lines_of(records: list[logging.LogRecord], global_id: str) -> list[logging.LogRecord]:
    return [r for r in records if getattr(r, "global_request_id", None) == global_id]


def test_a_boots_log_lines_in_every_service_carry_the_callers_global_request_id(
    cloud: CloudRunner, image: str, network: str, caplog: pytest.LogCaptureFixture
):
    _capture(caplog)
    global_id = f"req-{uuid.uuid4()}"
    server, request_id = _boot(cloud, image, network, global_id)
    # The network agent applies the ports' changes a moment after the build asked.
    deadline = time.monotonic() + 10
    while not any(
        r.name == "cumulo.network.dataplane.agent" for r in _lines_of(caplog.records, global_id)
    ):
        assert time.monotonic() < deadline, "no network agent line names the boot"
        time.sleep(0.2)
    lines = _lines_of(caplog.records, global_id)
    by_logger: dict[str, set[str]] = {}
    for r in lines:
        by_logger.setdefault(r.name, set()).add(r.request_id)

    # The API request, and what the conductor, scheduler and compute host did for it
    # over the bus: under the API request's own id, and the caller's global one.
    # (The Network service's network-vif-plugged event for the boot's port, when it comes
    # in time, is a compute API request of the same global id: not the boot's own.)
    api = [
        r
        for r in lines
        if getattr(r, "fields", {}).get("service") == "compute"
        and r.fields["route"] != "/v2.1/os-server-external-events"
    ]
    assert [r.fields["route"] for r in api] == ["/v2.1/servers"]
    assert api[0].request_id == request_id
    for logger in (
        "cumulo.compute.conductor",
        "cumulo.compute.scheduler.manager",
        "cumulo.compute.manager",
    ):
        assert by_logger.get(logger) == {request_id}, (logger, sorted(by_logger))
    # The compute host's calls to the Network API (its ports) and the Image API (the
    # image): those services' lines carry the global id beside their own request ids.
    for service in ("network", "image"):
        calls = [r for r in lines if getattr(r, "fields", {}).get("service") == service]
        assert calls, f"no {service} API line carries the global request id"
        assert all(r.request_id not in (request_id, "-") for r in calls)
        assert all(r.fields["global_request_id"] == global_id for r in calls)
    assert any(
        r.fields["route"] == "/v2.0/ports/{port_id}"
        for r in lines
        if getattr(r, "fields", {}).get("service") == "network"
    )
    # ...and the network agent wiring the port, after the Network API's change.
    assert by_logger["cumulo.network.dataplane.agent"] - {request_id, "-"}

    # Printed as oslo.log's context format does.
    built = next(r for r in lines if r.name == "cumulo.compute.manager")
    assert f"[{request_id} global-{global_id}] took " in logging.Formatter(TEXT_FORMAT).format(
        built
    )

    # The instance action keeps the API request's own id (Nova's request_id).
    [action] = cloud.openstack("server", "event", "list", server["id"], "-f", "json")
    assert action["Request ID"] == request_id
    cloud.openstack("server", "delete", "--wait", server["id"])


def test_an_invalid_request_id_from_a_caller_is_ignored(
    cloud: CloudRunner, image: str, network: str, caplog: pytest.LogCaptureFixture
):
    _capture(caplog)
    # Upper-case hex is not oslo.middleware's format: not taken, not logged.
    sent = f"req-{uuid.uuid4()}".upper().replace("REQ-", "req-")
    server, request_id = _boot(cloud, image, network, sent)
    assert not [r for r in caplog.records if sent in str(getattr(r, "global_request_id", ""))]
    # The other services' lines of the boot name the compute API's request instead.
    network_lines = [
        r
        for r in caplog.records
        if getattr(r, "fields", {}).get("service") == "network"
        and r.fields["global_request_id"] == request_id
    ]
    assert network_lines
    cloud.openstack("server", "delete", "--wait", server["id"])
