"""Clouds of several hosts on this one machine (the e2e tests', the Tempest harness's):
the shared broker's queues of a cloud, each host's state dir, and the underlay that
joins the hosts' data planes (a bridge their tunnel interfaces hang on)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cumulo.common.config import load_config, write_config

RABBIT = "rabbit://guest:guest@127.0.0.1:5672/"


async def delete_queues(namespace: str) -> None:
    """A cloud's durable queues outlive it on the broker: remove them."""
    import aio_pika
    import httpx

    async with httpx.AsyncClient(auth=("guest", "guest")) as client:
        try:
            queues = (await client.get("http://127.0.0.1:15672/api/queues")).json()
            names = [q["name"] for q in queues if q["name"].startswith(namespace + ".")]
        except (httpx.HTTPError, ValueError):
            names = []
    if not names:
        out = subprocess.run(
            ["rabbitmqctl", "list_queues", "-q", "name"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        names = [n for n in out.split() if n.startswith(namespace + ".")]
    connection = await aio_pika.connect(RABBIT.replace("rabbit", "amqp", 1))
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


def add_underlay(bridge: str, devices: list[str], netns: str | None = None) -> None:
    """The hosts' underlay: each host's interface (a veth, its peer `<device>p`) on a
    bridge of the caller's, MTU 1550 (the overlay keeps 1500). The bridge and the peers
    in `netns` when given (a namespace of the caller's: the machine's own addresses,
    which the root namespace answers ARP for on any interface, stay off the wire)."""
    on = ("-n", netns) if netns else ()
    _ip(*on, "link", "add", bridge, "type", "bridge")
    _ip(*on, "link", "set", bridge, "mtu", "1550", "up")
    for device in devices:
        _ip("link", "add", device, "type", "veth", "peer", "name", f"{device}p",
            *(("netns", netns) if netns else ()))  # fmt: skip
        _ip(*on, "link", "set", f"{device}p", "master", bridge, "mtu", "1550", "up")
        _ip("link", "set", device, "mtu", "1550")


def remove_underlay(bridge: str, devices: list[str]) -> None:
    for name in [f"{device}p" for device in devices] + [bridge]:
        subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=60)


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {proc.stderr}")


def host_state_dir(controller: Path, directory: Path, **sections: dict) -> Path:
    """Another host's state dir: a copy of the controller's config with its own settings
    (`compute={"host": ...}`, `network={...}`)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cumulo.toml").write_bytes((controller / "cumulo.toml").read_bytes())
    config = load_config(directory)
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(config, section), key, value)
    write_config(directory, config)
    return directory
