"""Create and delete N sparse 1-GiB volumes with C concurrent clients on an
in-process cloud; prints creates/s (API accept to `available`) and p99 latency.

Anchor: upstream Cinder's published mean is 2.6 s per create. Target: >= 20 creates/s.
Usage: .venv/bin/python bench/volume_create.py [N=200] [C=8]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.cloudrunner import CloudRunner, configure_state_dir  # noqa: E402


async def one(http: httpx.AsyncClient, latencies: list[float]) -> str:
    started = time.perf_counter()
    r = await http.post("/volumes", json={"volume": {"size": 1}})
    r.raise_for_status()
    vid = r.json()["volume"]["id"]
    while (await http.get(f"/volumes/{vid}")).json()["volume"]["status"] != "available":
        await asyncio.sleep(0.005)
    latencies.append(time.perf_counter() - started)
    return vid


async def run(cloud: CloudRunner, total: int, clients: int) -> None:
    base = f"http://127.0.0.1:{cloud.config.ports.block_storage}/v3"
    headers = {"X-Auth-Token": cloud.token("admin")}
    quota = {"quota_set": {"volumes": -1, "gigabytes": -1}}
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
        admin_project = cloud.sdk().current_project_id
        (await http.put(f"/os-quota-sets/{admin_project}", json=quota)).raise_for_status()
        queue = list(range(total))
        ids: list[str] = []

        async def client() -> None:
            while queue:
                queue.pop()
                ids.append(await one(http, latencies))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
        del_started = time.perf_counter()
        await asyncio.gather(*(http.delete(f"/volumes/{v}") for v in ids))
        while (await http.get("/volumes")).json()["volumes"]:
            await asyncio.sleep(0.02)
        del_elapsed = time.perf_counter() - del_started
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 2 else latencies[0]
    print(f"{total} sparse 1-GiB volumes, {clients} clients")
    print(f"create: {total / elapsed:.1f} volumes/s (to available), "
          f"mean {statistics.mean(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")  # fmt: skip
    print(f"delete: {total / del_elapsed:.1f} volumes/s")
    print("anchor: upstream Cinder mean 2.6 s per create; target >= 20 creates/s")


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        configure_state_dir(state)
        cloud = CloudRunner(state).start()
        try:
            asyncio.run(run(cloud, total, clients))
        finally:
            cloud.stop()


if __name__ == "__main__":
    main()
