"""RunInstances through the EC2 API beside the same boots through the Compute API.

Not a test: it prints figures. The cloud runs in its own process (`cumulo up`), fake
driver on 100 fake hosts, the noop network data plane, SQLite and the in-process bus.
Each phase boots --servers instances (one per request) with 16 concurrent clients as
the demo user, on the demo project's network ("auto"), from the same tiny image:

- compute: `POST /v2.1/servers`;
- ec2: `RunInstances` (MinCount = MaxCount = 1), signed with SigV4 as boto3 signs it.

Time to running is measured the same way for both: from the first request to the
moment a poller of the Compute API (`GET /servers?status=ACTIVE`) has seen every
instance of the phase ACTIVE. Target: EC2 adds <= 15 % to the time to `running`.

    .venv/bin/python bench/ec2_run.py [--servers 200] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute_boot import COMPUTE_HOST, Setup, configure, tiny_qcow2  # noqa: E402
from identity_tokens import HOST, VENV_BIN, process_cpu  # noqa: E402

from cumulo.common.config import load_config, write_config  # noqa: E402

TARGET_OVERHEAD = 0.15
VERSION = {"OpenStack-API-Version": "compute 2.79"}


async def token_of(http: httpx.AsyncClient, port: int, user: str, password: str) -> tuple[str, str]:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"id": "default"}, "password": password}
                },
            },
            "scope": {"project": {"name": user, "domain": {"id": "default"}}},
        }
    }
    r = await http.post(f"http://{HOST}:{port}/v3/auth/tokens", json=body)
    r.raise_for_status()
    return r.headers["X-Subject-Token"], r.json()["token"]["project"]["id"]


async def wait_active(
    http: httpx.AsyncClient, compute: str, token: str, ids: set[str], first: float, timeout: float
) -> float:
    """Seconds from `first` until every id is ACTIVE (seen through the Compute API)."""
    seen: set[str] = set()
    last = first
    deadline = time.monotonic() + timeout
    while seen < ids and time.monotonic() < deadline:
        r = await http.get(
            f"{compute}/servers?status=ACTIVE&limit=1000", headers={"X-Auth-Token": token}
        )
        fresh = {s["id"] for s in r.json()["servers"]} & ids - seen
        if fresh:
            seen |= fresh
            last = time.monotonic()
        await asyncio.sleep(0.05)
    if seen < ids:
        raise RuntimeError(f"{len(ids - seen)} servers not ACTIVE after {timeout:g} s")
    return last - first


async def delete_all(http: httpx.AsyncClient, compute: str, token: str) -> None:
    headers = {"X-Auth-Token": token}
    servers = (await http.get(f"{compute}/servers?limit=1000", headers=headers)).json()["servers"]
    await asyncio.gather(
        *(http.delete(f"{compute}/servers/{s['id']}", headers=headers) for s in servers)
    )
    while (await http.get(f"{compute}/servers?limit=1", headers=headers)).json()["servers"]:
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace, state_dir: Path, pid: int) -> None:
    config = load_config(state_dir)
    ports = config.ports
    compute = f"http://{HOST}:{ports.compute}/v2.1"
    ec2_url = f"http://{HOST}:{ports.ec2}/"
    limits = httpx.Limits(
        max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4
    )
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        admin, _ = await token_of(http, ports.identity, "admin", config.identity.admin_password)
        token, project = await token_of(http, ports.identity, "demo", config.identity.demo_password)
        auth = {"X-Auth-Token": admin}
        while (
            len(
                (await http.get(f"{compute}/os-hypervisors", headers=auth))
                .json()
                .get("hypervisors", [])
            )
            < 100
        ):
            await asyncio.sleep(0.5)
        unlimited = {"quota_set": {"instances": -1, "cores": -1, "ram": -1}}
        await http.put(f"{compute}/os-quota-sets/{project}", json=unlimited, headers=auth)
        await http.put(
            f"http://{HOST}:{ports.network}/v2.0/quotas/{project}",
            json={"quota": {"port": -1}},
            headers=auth,
        )
        demo = {"X-Auth-Token": token}
        image = (
            await http.post(
                f"http://{HOST}:{ports.image}/v2/images",
                headers=demo,
                json={"name": "bench-tiny", "disk_format": "qcow2", "container_format": "bare"},
            )
        ).json()
        await http.put(
            f"http://{HOST}:{ports.image}/v2/images/{image['id']}/file",
            content=tiny_qcow2(state_dir),
            headers={**demo, "Content-Type": "application/octet-stream"},
        )
        cred = (
            await http.post(
                f"http://{HOST}:{ports.identity}/v3/credentials",
                headers=demo,
                json={
                    "credential": {
                        "type": "ec2",
                        "project_id": project,
                        "user_id": (
                            await http.get(
                                f"http://{HOST}:{ports.identity}/v3/auth/tokens",
                                headers={"X-Auth-Token": token, "X-Subject-Token": token},
                            )
                        ).json()["token"]["user"]["id"],
                        "blob": '{"access": "bench-access", "secret": "bench-secret"}',
                    }
                },
            )
        ).json()
        assert cred["credential"]["type"] == "ec2"
        signer = SigV4Auth(Credentials("bench-access", "bench-secret"), "ec2", config.region)
        images = await ec2_call(
            http,
            signer,
            ec2_url,
            {"Action": "DescribeImages", "Filter.1.Name": "name", "Filter.1.Value.1": "bench-tiny"},
        )
        ami = images.split(b"<imageId>", 1)[1].split(b"</imageId>", 1)[0].decode()

        async def compute_boot(i: int) -> str:
            body = {
                "server": {
                    "name": f"bench-{i}",
                    "imageRef": image["id"],
                    "flavorRef": "1",
                    "networks": "auto",
                }
            }
            r = await http.post(f"{compute}/servers", json=body, headers={**demo, **VERSION})
            if r.status_code != 202:
                raise RuntimeError(f"POST /servers: {r.status_code} {r.text[:300]}")
            return r.json()["server"]["id"]

        async def ec2_boot(i: int) -> str:
            body = await ec2_call(
                http,
                signer,
                ec2_url,
                {
                    "Action": "RunInstances",
                    "ImageId": ami,
                    "InstanceType": "m1.tiny",
                    "MinCount": "1",
                    "MaxCount": "1",
                },
            )
            return body.split(b"<instanceId>", 1)[1].split(b"</instanceId>", 1)[0].decode()

        results = {}
        for phase, boot in (("compute", compute_boot), ("ec2", ec2_boot)):
            counter = iter(range(args.servers))
            made: list[str] = []

            async def client(boot=boot, counter=counter, made=made) -> None:
                for i in counter:
                    made.append(await boot(i))

            cpu0 = process_cpu(pid)
            first = time.monotonic()
            await asyncio.gather(*(client() for _ in range(args.clients)))
            posted = time.monotonic() - first
            if phase == "ec2":  # instance ids to server ids, through the Compute API's names
                servers = (await http.get(f"{compute}/servers?limit=1000", headers=demo)).json()[
                    "servers"
                ]
                by_name = {s["name"]: s["id"] for s in servers}
                made = [by_name[i] for i in made]
            elapsed = await wait_active(http, compute, token, set(made), first, args.timeout)
            cpu = process_cpu(pid) - cpu0
            results[phase] = elapsed
            print(
                f"[{phase:7}] {len(made)} instances running in {elapsed:6.2f} s "
                f"({len(made) / elapsed:6.1f}/s; requests answered in {posted:.2f} s; "
                f"server CPU {cpu / len(made) * 1000:.1f} ms per instance)"
            )
            await delete_all(http, compute, token)
        overhead = results["ec2"] / results["compute"] - 1
        verdict = "met" if overhead <= TARGET_OVERHEAD else "NOT met"
        print(
            f"EC2 adds {overhead * 100:+.1f} % to the time to running "
            f"(target <= {TARGET_OVERHEAD * 100:.0f} %): {verdict}"
        )


async def ec2_call(http: httpx.AsyncClient, signer: SigV4Auth, url: str, params: dict) -> bytes:
    body = urlencode({**params, "Version": "2016-11-15"})
    request = AWSRequest(
        "POST",
        url,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    signer.add_auth(request)
    r = await http.post(url, content=body, headers=dict(request.headers.items()))
    if r.status_code != 200:
        raise RuntimeError(f"{params['Action']}: {r.status_code} {r.text[:300]}")
    return r.content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    state_dir = Path(tempfile.mkdtemp(prefix="cumulo-bench-ec2-"))
    configure(state_dir, Setup("aio"), 99)
    config = load_config(state_dir)
    config.network.private_cidr = "10.0.0.0/20"  # room for every instance's port
    write_config(state_dir, config)
    proc = subprocess.Popen(
        [str(VENV_BIN / "cumulo"), "up", "--state-dir", str(state_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://{HOST}:{config.ports.ec2}/cloud-cert.pem", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        print(
            f"cumulo up: fake driver, 100 hosts (main host {COMPUTE_HOST}), SQLite, "
            f"in-process bus; {args.servers} instances per phase, {args.clients} clients"
        )
        asyncio.run(run(args, state_dir, proc.pid))
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
