"""What a request may bring ([limits]): JSON bodies (size, nesting), URL and header sizes,
a rate per token; each refused in the API's own error dialect, and nothing else changes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from cumulo.common import limits
from cumulo.common.config import LimitsConfig, load_config, write_config
from tests.cloudrunner import CloudRunner, configure_state_dir


def _deep(levels: int) -> bytes:
    return b'{"server": ' + b"[" * levels + b"]" * levels + b"}"


def test_a_deeply_nested_body_is_a_400_in_each_dialect_not_a_crash(cloud, admin_token):
    ports = cloud.config.ports
    cases = {
        ports.compute: ("/v2.1/servers", "badRequest"),
        ports.network: ("/v2.0/networks", "NeutronError"),
        ports.identity: ("/v3/projects", "error"),
        ports.block_storage: ("/v3/volumes", "badRequest"),
    }
    for levels in (100, 100_000):  # over the limit; and past Python's own recursion
        for port, (path, key) in cases.items():
            answer = httpx.post(
                f"http://127.0.0.1:{port}{path}",
                content=_deep(levels),
                headers={"X-Auth-Token": admin_token, "Content-Type": "application/json"},
                timeout=30,
            )
            assert answer.status_code == 400, (port, answer.text)
            assert key in answer.json(), answer.text
            assert "nests deeper" in answer.text


def test_bodies_urls_and_headers_over_the_limits(cloud, admin_token):
    compute = f"http://127.0.0.1:{cloud.config.ports.compute}"
    token = {"X-Auth-Token": admin_token}
    before = httpx.get(f"{compute}/v2.1/servers?all_tenants=1", headers=token).json()["servers"]
    big = b'{"server": {"name": "' + b"x" * (2 * 1024 * 1024) + b'"}}'
    answer = httpx.post(f"{compute}/v2.1/servers", content=big, headers=token, timeout=30)
    assert answer.status_code == 413 and "overLimit" in answer.json()
    answer = httpx.get(f"{compute}/v2.1/servers?name=" + "a" * 9000, headers=token)
    assert answer.status_code == 414 and answer.headers["x-openstack-request-id"]
    answer = httpx.get(f"{compute}/v2.1/servers", headers={**token, "X-Padding": "p" * 20000})
    assert answer.status_code == 431
    # Nothing was created by the refused requests, and normal ones still work.
    after = httpx.get(f"{compute}/v2.1/servers?all_tenants=1", headers=token).json()["servers"]
    assert {s["id"] for s in after} <= {s["id"] for s in before}


def test_rate_limiting_answers_429_with_retry_after_per_token(tmp_path: Path):
    configure_state_dir(tmp_path)
    config = load_config(tmp_path)
    config.limits.rate_limit_per_second = 0.2
    config.limits.rate_limit_burst = 5
    write_config(tmp_path, config)
    runner = CloudRunner(tmp_path).start()
    try:
        url = f"http://127.0.0.1:{runner.config.ports.compute}/v2.1/flavors"
        admin = {"X-Auth-Token": runner.token("admin")}
        codes = [httpx.get(url, headers=admin).status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and 429 in codes, codes
        refused = httpx.get(url, headers=admin)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["overLimit"]["code"] == 429
        # Another caller has its own allowance; and waiting gives the first one back.
        demo = {"X-Auth-Token": runner.token("demo", project="demo")}
        assert httpx.get(url, headers=demo).status_code == 200
        time.sleep(int(refused.headers["Retry-After"]))
        assert httpx.get(url, headers=admin).status_code == 200
    finally:
        runner.stop()
        limits.configure(LimitsConfig())


@pytest.mark.asyncio
async def test_conversions_wait_for_a_slot_beyond_the_limit():
    limits.configure(LimitsConfig(conversions=2))
    running, most = 0, 0

    async def convert() -> None:
        nonlocal running, most
        async with limits.conversion_slot():
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.05)
            running -= 1

    try:
        await asyncio.gather(*(convert() for _ in range(6)))
    finally:
        limits.configure(LimitsConfig())
    assert most == 2
