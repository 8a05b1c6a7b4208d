"""The `cumulo` command."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click
from rich.console import Console

from cumulo.common.app import setup_logging
from cumulo.common.config import load_config, resolve_state_dir

# soft_wrap: long hints (paths, export lines) stay whole lines to copy, even in a pipe.
console = Console(stderr=True, soft_wrap=True)

state_dir_option = click.option(
    "--state-dir",
    envvar="CUMULO_STATE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where cumulo keeps its config, databases and keys "
    "(default ~/.local/share/cumulo; env CUMULO_STATE_DIR).",
)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log every request.")
def main(verbose: bool) -> None:
    """cumulo: a private IaaS cloud speaking the OpenStack APIs."""
    setup_logging(logging.INFO if verbose else logging.WARNING)


def _usage_hint(state_dir: Path) -> None:
    console.print(f"[bold]State dir:[/] {state_dir}")
    console.print(f"  clouds.yaml: {state_dir / 'clouds.yaml'} (clouds: cumulo, cumulo-demo)")
    console.print(f"  openrc:      {state_dir / 'openrc'}  {state_dir / 'openrc-demo'}")
    console.print("[bold]Use it:[/]")
    console.print(
        f"  export OS_CLIENT_CONFIG_FILE={state_dir / 'clouds.yaml'} OS_CLOUD=cumulo"
        "   # then: openstack token issue"
    )


@main.command()
@state_dir_option
@click.option("--host", default=None, help="Address the APIs bind to (default 127.0.0.1).")
@click.option("--database", default=None, help="SQLAlchemy URL (default: SQLite files).")
def init(state_dir: Path | None, host: str | None, database: str | None) -> None:
    """Create the state dir: config, databases, keys, bootstrap users and catalog."""
    from cumulo.cloud import Cloud

    sd = resolve_state_dir(state_dir)

    async def run() -> None:
        # Databases, users, catalog, networks: no guest, storage or data plane starts.
        cloud = await Cloud.open(sd, host=host, database=database, agents=False)
        await cloud.close()

    asyncio.run(run())
    _usage_hint(sd)


@main.command()
@state_dir_option
@click.option("--host", default=None, help="Address the APIs bind to (default 127.0.0.1).")
@click.option("--database", default=None, help="SQLAlchemy URL (default: SQLite files).")
@click.option(
    "--with-demo-image",
    is_flag=True,
    help="Register the tiny bootable test guest as public images (tiny, tiny-kernel, "
    "tiny-ramdisk) unless they exist; built from two Debian packages, cached.",
)
def up(
    state_dir: Path | None, host: str | None, database: str | None, with_demo_image: bool
) -> None:
    """Serve the whole cloud (runs init when needed). Ctrl-C stops it."""
    from cumulo.cloud import Cloud
    from cumulo.common.server import (
        AlreadyRunning,
        make_servers,
        run_event_loop,
        serve,
        state_dir_lock,
    )

    sd = resolve_state_dir(state_dir)
    sd.mkdir(parents=True, exist_ok=True)
    try:
        with state_dir_lock(sd):

            async def run() -> None:
                cloud = await Cloud.open(sd, host=host, database=database)
                try:
                    if with_demo_image:
                        await _demo_image(cloud)
                    apps = cloud.apps()
                    servers = make_servers(apps, cloud.config.host)
                    _usage_hint(sd)
                    for name, (_app, port) in apps.items():
                        console.print(f"  {name:<15} http://{cloud.config.host}:{port}")
                    console.print("cumulo is up. Ctrl-C stops it.")
                    await serve(servers)
                finally:
                    await cloud.close()
                console.print("cumulo stopped.")

            run_event_loop(run())
    except AlreadyRunning as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)


async def _demo_image(cloud) -> None:
    from cumulo.image.demo import DemoImageError, register_for_cloud

    console.print("Registering the demo image (the first time builds the tiny guest)...")
    try:
        ids = await register_for_cloud(cloud)
    except DemoImageError as exc:
        console.print(f"[yellow]warning:[/] no demo image: {exc}. Starting without it.")
        return
    console.print(f"  demo image: tiny ({ids['tiny']}), with its kernel and ramdisk")


def _run_host(sd: Path, agent) -> None:
    """Run one host's agent (`agent(stop)`) until SIGINT/SIGTERM, holding the state dir."""
    import signal

    from cumulo.common.server import AlreadyRunning, state_dir_lock

    try:
        with state_dir_lock(sd):

            async def run() -> None:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await agent(stop)

            asyncio.run(run())
    except (AlreadyRunning, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)


@main.command()
@state_dir_option
@click.option(
    "--host",
    "compute_host",
    default=None,
    help="This compute host's name (default: [compute] host, else the hostname).",
)
def compute(state_dir: Path | None, compute_host: str | None) -> None:
    """Run a compute host on its own, joining the cloud of the controller in the config.

    The state dir holds a copy of the controller's cumulo.toml: [messaging] transport_url
    must name the shared broker (rabbit://...) and public_host the controller.
    """
    from cumulo.compute.agent import run_compute_agent

    sd = resolve_state_dir(state_dir)
    config = load_config(sd)
    if compute_host:
        config.compute.host = compute_host
    _run_host(sd, lambda stop: run_compute_agent(config, sd, stop))


@main.command()
@state_dir_option
@click.option(
    "--host",
    "volume_host",
    default=None,
    help="This storage host's name (default: [volume] host, else the hostname).",
)
def volume(state_dir: Path | None, volume_host: str | None) -> None:
    """Run a storage host on its own: the volume managers of its [[volume.backends]].

    The state dir holds a copy of the controller's cumulo.toml: [messaging] transport_url
    must name the shared broker (rabbit://...), [database] url the controller's database
    and public_host the controller (volumes from images are fetched from its Image API).
    """
    from cumulo.volume.agent import run_volume_host

    sd = resolve_state_dir(state_dir)
    config = load_config(sd)
    if volume_host:
        config.volume.host = volume_host
    _run_host(sd, lambda stop: run_volume_host(config, sd, stop))


@main.group()
def identity() -> None:
    """Identity service administration."""


@identity.command("rotate-keys")
@state_dir_option
def rotate_keys(state_dir: Path | None) -> None:
    """Rotate the Fernet token keys; tokens issued under the previous keys stay valid.

    A running `cumulo up` picks the new keys up on its next key check (or restart).
    """
    from cumulo.identity.tokens import KeyRepository

    sd = resolve_state_dir(state_dir)
    config = load_config(sd)
    repo = KeyRepository(sd / "fernet-keys", config.identity.max_active_keys)
    primary = repo.rotate()
    console.print(f"rotated: key {primary} is now primary")
