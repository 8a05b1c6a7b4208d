"""The database goes away (restart, failover, network cut) and comes back: API calls in
between get 503 with a clear message and `Retry-After`, a change attempted meanwhile
leaves nothing half-written, and the cloud answers again once the database is back,
with no restart.

The cloud reaches PostgreSQL through a TCP proxy of the test, which cuts every
connection and refuses new ones (what clients of a restarting server see) and then
lets them through again: the machine's PostgreSQL itself is shared with other tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import pytest

from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.conftest import skip_or_fail
from tests.databases import ServerUnavailable, fresh_database

pytestmark = pytest.mark.e2e


class CuttableProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<target>, with cut() and restore()."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    def start(self) -> CuttableProxy:
        self._run(self._listen())
        return self

    def cut(self) -> None:
        self._run(self._cut())

    def restore(self) -> None:
        self._run(self._listen())

    def close(self) -> None:
        self._run(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)


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
