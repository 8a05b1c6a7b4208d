"""Image data throughput: upload and download of a 512 MiB image vs `cp` on the same disk.

Not a test: it prints figures. The cloud runs in its own process
(`cumulo up --state-dir <tmp>`) as a user starts it, and curl is the client;
the image is random data (incompressible) declared raw. The anchor is `cp` of
the same file into the same directory tree: the physical limit of moving those
bytes on this disk. Upload
also hashes (md5 + sha512) and inspects the data; download streams it back.
Target: each at least 70% of cp.

    .venv/bin/python bench/image_transfer.py [--size-mib 512] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cumulo.cloud import prepare_state_dir
from cumulo.common.config import load_config, write_config

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
MIB = 1 << 20
TARGET = 0.70


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_cloud(state_dir: Path) -> subprocess.Popen:
    config = prepare_state_dir(state_dir)
    for name in type(config.ports).model_fields:
        setattr(config.ports, name, free_port())
    config.identity.bcrypt_rounds = 4
    write_config(state_dir, config)
    proc = subprocess.Popen(
        [str(VENV_BIN / "cumulo"), "up", "--state-dir", str(state_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://{HOST}:{config.ports.image}/versions", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("cumulo up did not start")


def admin_token(state_dir: Path) -> str:
    config = load_config(state_dir)
    r = httpx.post(
        f"http://{HOST}:{config.ports.identity}/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": "admin",
                            "domain": {"id": "default"},
                            "password": config.identity.admin_password,
                        }
                    },
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        },
    )
    r.raise_for_status()
    return r.headers["X-Subject-Token"]


def write_random(path: Path, size: int) -> None:
    block = os.urandom(4 * MIB)
    with open(path, "wb") as f:
        for i in range(size // len(block)):
            # Vary each block so nothing below us can deduplicate it.
            f.write(i.to_bytes(8, "little") + block[8:])


def curl(token: str, *args: object) -> None:
    """curl as the client: its own cost is small, so the figures are the server's."""
    subprocess.run(
        ["curl", "-sS", "-f", "-H", f"X-Auth-Token: {token}", "-H", "Expect:", *map(str, args)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def timed_cp(src: Path, dst: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    elapsed = time.perf_counter() - started
    dst.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--dir", default=None, help="where the state dir and data go")
    args = parser.parse_args()
    size = args.size_mib * MIB

    work = Path(tempfile.mkdtemp(prefix="cumulo-bench-image-", dir=args.dir))
    state_dir = work / "state"
    src = work / "image.raw"
    write_random(src, size)
    proc = start_cloud(state_dir)
    try:
        token = admin_token(state_dir)
        port = load_config(state_dir).ports.image
        client = httpx.Client(
            base_url=f"http://{HOST}:{port}", headers={"X-Auth-Token": token}, timeout=600
        )
        # cp into the state dir's tree: same disk, same page cache as the store.
        cp_times = [timed_cp(src, state_dir / "cp-anchor.raw") for _ in range(3)]
        up_times, down_times = [], []
        for i in range(3):
            image = client.post(
                "/v2/images",
                json={"name": f"bench-{i}", "disk_format": "raw", "container_format": "bare"},
            ).json()
            url = f"http://{HOST}:{port}/v2/images/{image['id']}/file"
            started = time.perf_counter()
            curl(token, "-X", "PUT", "-H", "Content-Type: application/octet-stream", "-T", src, url)
            up_times.append(time.perf_counter() - started)
            out = work / "download.raw"
            started = time.perf_counter()
            curl(token, "-o", out, url)
            down_times.append(time.perf_counter() - started)
            assert out.stat().st_size == size
            out.unlink()
            client.delete(f"/v2/images/{image['id']}").raise_for_status()
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    def rate(seconds: list[float]) -> float:
        return size / MIB / min(seconds)

    cp_rate = rate(cp_times)
    print(f"image transfer, {args.size_mib} MiB of random data (best of 3), on {work.parent}")
    print(f"  cp (anchor)   {cp_rate:8.0f} MiB/s")
    for label, times in (("upload", up_times), ("download", down_times)):
        ratio = rate(times) / cp_rate
        verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
        print(
            f"  {label:<13} {rate(times):8.0f} MiB/s  {ratio:5.0%} of cp"
            f"  (target {TARGET:.0%}: {verdict})"
        )


if __name__ == "__main__":
    main()
