"""The database goes away (restart, failover, network cut) and comes back: API calls in
between get 503 with a clear message and `Retry-After`, a change attempted meanwhile
leaves nothing half-written, and the cloud answers again once the database is back,
with no restart.

The cloud reaches PostgreSQL through a TCP proxy of the test, which cuts every
connection and refuses new ones (what clients of a restarting server see) and then
lets them through again: the machine's PostgreSQL itself is shared with other tests.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.cluster import CuttableProxy
from tests.conftest import skip_or_fail
from tests.databases import ServerUnavailable, fresh_database

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cloud_via_proxy(tmp_path_factory):
    try:
        with fresh_database("postgresql") as url:
            proxy = CuttableProxy(5432).start()
            state = tmp_path_factory.mktemp("outage")
            configure_state_dir(state, database=url.replace(":5432/", f":{proxy.port}/"))
            runner = CloudRunner(state).start(timeout=60)
            try:
                yield runner, proxy
            finally:
                runner.stop()
                proxy.close()
    except ServerUnavailable as exc:
        skip_or_fail(f"PostgreSQL is not reachable: {exc}")


def test_api_calls_during_a_database_outage_get_503_then_succeed(cloud_via_proxy):
    runner, proxy = cloud_via_proxy
    config = runner.config
    token = runner.token()
    compute = httpx.Client(
        base_url=f"http://127.0.0.1:{config.ports.compute}/v2.1",
        headers={"X-Auth-Token": token}, timeout=30,
    )  # fmt: skip
    network = httpx.Client(
        base_url=f"http://127.0.0.1:{config.ports.network}/v2.0",
        headers={"X-Auth-Token": token}, timeout=30,
    )  # fmt: skip
    # The token is validated (and cached) before the outage.
    assert compute.get("/servers").status_code == 200
    assert network.get("/networks").status_code == 200
    name = f"outage-{uuid.uuid4().hex[:6]}"

    proxy.cut()
    servers = compute.get("/servers")
    assert servers.status_code == 503, servers.text
    assert servers.headers["Retry-After"] == "5"
    assert "database" in servers.json()["serviceUnavailable"]["message"]
    made = network.post("/networks", json={"network": {"name": name}})
    assert made.status_code == 503, made.text
    assert made.json()["NeutronError"]["type"] == "ServiceUnavailable"
    assert made.headers["Retry-After"] == "5"

    proxy.restore()
    deadline = time.monotonic() + 30
    while compute.get("/servers").status_code != 200:
        assert time.monotonic() < deadline, "the API never answered again"
        time.sleep(0.5)
    # Nothing of the refused change was written; the cloud works as before.
    assert network.get("/networks", params={"name": name}).json()["networks"] == []
    assert runner.openstack("network", "create", name, "-f", "json")["name"] == name
    runner.openstack("network", "delete", name)
