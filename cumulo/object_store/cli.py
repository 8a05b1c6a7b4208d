"""`cumulo object-store ...`: rings (as swift-ring-builder) and the storage daemons once."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from cumulo.common.config import load_config, resolve_state_dir
from cumulo.object_store.ring.builder import RingBuilder, RingError
from cumulo.object_store.ring.setup import rings_dir

console = Console(soft_wrap=True)

state_dir_option = click.option(
    "--state-dir",
    envvar="CUMULO_STATE_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The cloud's state dir (default ~/.local/share/cumulo; env CUMULO_STATE_DIR).",
)


@click.group("object-store")
def object_store() -> None:
    """Object Storage administration: rings and storage daemons."""


@object_store.group()
def ring() -> None:
    """Manage a ring (account, container, object, object-<policy index>)."""


def _paths(state_dir: Path | None, name: str) -> tuple[Path, Path]:
    sd = resolve_state_dir(state_dir)
    base = rings_dir(load_config(sd), sd)
    return base / f"{name}.builder.json", base / f"{name}.ring.json"


def _edit(state_dir: Path | None, name: str, change) -> None:
    builder_file, _ = _paths(state_dir, name)
    try:
        builder = RingBuilder.load(builder_file)
        change(builder)
    except RingError as exc:
        raise click.ClickException(str(exc)) from None
    builder.save(builder_file)


@ring.command("create")
@state_dir_option
@click.argument("name")
@click.option("--part-power", type=int, required=True, help="2**part_power partitions.")
@click.option("--replicas", type=int, required=True)
@click.option("--min-part-hours", type=int, default=1, show_default=True)
def ring_create(state_dir, name, part_power, replicas, min_part_hours) -> None:
    """Create an empty ring builder NAME (add devices, then rebalance)."""
    builder_file, _ = _paths(state_dir, name)
    if builder_file.exists():
        raise click.ClickException(f"{builder_file} already exists")
    try:
        builder = RingBuilder(part_power, replicas, min_part_hours)
    except RingError as exc:
        raise click.ClickException(str(exc)) from None
    builder.save(builder_file)
    console.print(f"created {builder_file}")


@ring.command("add-device")
@state_dir_option
@click.argument("name")
@click.option("--region", type=int, default=1, show_default=True)
@click.option("--zone", type=int, required=True)
@click.option("--ip", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--device", required=True, help="The device directory's name.")
@click.option("--weight", type=float, required=True)
def ring_add_device(state_dir, name, region, zone, ip, port, device, weight) -> None:
    """Add a device to ring NAME (takes partitions at the next rebalance)."""

    def add(b: RingBuilder) -> None:
        dev = b.add_device(region=region, zone=zone, ip=ip, port=port, device=device, weight=weight)
        console.print(f"device d{dev.id} r{region}z{zone}-{ip}:{port}/{device} weight {weight}")

    _edit(state_dir, name, add)


@ring.command("remove-device")
@state_dir_option
@click.argument("name")
@click.argument("device_id", type=int)
def ring_remove_device(state_dir, name, device_id) -> None:
    """Remove a device: its partitions move away at the next rebalance."""
    _edit(state_dir, name, lambda b: b.remove_device(device_id))


@ring.command("set-weight")
@state_dir_option
@click.argument("name")
@click.argument("device_id", type=int)
@click.argument("weight", type=float)
def ring_set_weight(state_dir, name, device_id, weight) -> None:
    """Change a device's weight (its share of partitions at the next rebalance)."""
    _edit(state_dir, name, lambda b: b.set_weight(device_id, weight))


@ring.command("pretend-min-part-hours-passed")
@state_dir_option
@click.argument("name")
def ring_pretend(state_dir, name) -> None:
    """Let every partition move at the next rebalance."""
    _edit(state_dir, name, lambda b: b.pretend_min_part_hours_passed())


@ring.command("rebalance")
@state_dir_option
@click.argument("name")
@click.option("--seed", type=int, default=None)
def ring_rebalance(state_dir, name, seed) -> None:
    """Assign partitions, then write the ring file the servers reload."""
    builder_file, ring_file = _paths(state_dir, name)
    try:
        builder = RingBuilder.load(builder_file)
        moved = builder.rebalance(seed)
        builder.save(builder_file)
        builder.write_ring(ring_file)
    except RingError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(
        f"reassigned {moved} partition replicas; balance {builder.balance():.2f}, "
        f"dispersion {builder.dispersion():.2f}; wrote {ring_file}"
    )


@ring.command("show")
@state_dir_option
@click.argument("name")
def ring_show(state_dir, name) -> None:
    """Partitions, replicas, balance, dispersion and the devices of ring NAME."""
    builder_file, _ = _paths(state_dir, name)
    try:
        b = RingBuilder.load(builder_file)
    except RingError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(
        f"{name}: {b.parts} partitions, {b.replicas} replicas, {len(b.live_devs())} devices, "
        f"min_part_hours {b.min_part_hours}, balance {b.balance():.2f}, "
        f"dispersion {b.dispersion():.2f}, version {b.version}"
    )
    assigned = b.assigned_parts()
    desired = b.desired_parts() if b.live_devs() and any(d.weight for d in b.live_devs()) else {}
    table = Table("id", "region", "zone", "ip:port", "device", "weight", "partitions", "balance")
    for d in b.live_devs():
        want = desired.get(d.id)
        got = assigned.get(d.id, 0)
        bal = f"{(got / want - 1) * 100:.2f}" if want else "-"
        removing = " (removing)" if d.id in b.removed else ""
        table.add_row(
            str(d.id),
            str(d.region),
            str(d.zone),
            f"{d.ip}:{d.port}",
            d.device + removing,
            f"{d.weight:g}",
            str(got),
            bal,
        )
    console.print(table)


devices_option = click.option(
    "--devices",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A storage host's device directories (default: the cloud's, [object_store] devices).",
)
bind_option = click.option(
    "--bind",
    default=None,
    metavar="IP:PORT",
    help="The address the ring gives this storage host's devices.",
)


def _store(state_dir: Path | None, devices: Path | None, bind: str | None):
    from cumulo.object_store.core import ObjectStore
    from cumulo.object_store.storage.backend_auth import BackendKeyError

    sd = resolve_state_dir(state_dir)
    config = load_config(sd)
    try:
        if devices is None:
            return ObjectStore(config, sd, None)
        if bind is None:
            raise click.UsageError("--devices needs --bind (the address the ring names for them)")
        if not (rings_dir(config, sd) / "account.ring.json").exists():
            raise click.ClickException(
                f"no rings in {rings_dir(config, sd)}: fetch them with "
                "`cumulo object-server --rings-from IP:PORT`, or copy the cloud's"
            )
        return ObjectStore(config, sd, None, devices=devices, local_addresses={bind})
    except BackendKeyError as exc:
        raise click.ClickException(str(exc)) from None


@object_store.command("run-once")
@state_dir_option
@devices_option
@bind_option
@click.argument(
    "daemon",
    type=click.Choice(
        ["replicator", "auditor", "updater", "expirer", "reconciler", "container_sync"]
    ),
)
def run_once_command(state_dir, devices, bind, daemon) -> None:
    """One pass of a storage daemon over this host's devices (beside a running cloud too)."""
    import asyncio

    from cumulo.object_store.daemons.runner import run_once

    store = _store(state_dir, devices, bind)
    console.print(f"{daemon}: {asyncio.run(run_once(store, daemon))}")


@click.command("object-server")
@state_dir_option
@click.option(
    "--devices",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="This storage host's device directories (one per ring device name).",
)
@click.option(
    "--bind",
    required=True,
    metavar="IP:PORT",
    help="Where to serve them: the address the ring gives these devices.",
)
@click.option(
    "--no-daemons", is_flag=True, help="No replicator, auditor, updater or reconciler here."
)
@click.option(
    "--rings-from",
    metavar="IP:PORT",
    default=None,
    help="Fetch the rings from this object server (the proxy host's [object_store] "
    "storage_port) at start and every --ring-interval seconds, instead of copies by hand.",
)
@click.option(
    "--ring-interval",
    type=click.FloatRange(min=0.1),
    default=15.0,
    show_default=True,
    help="Seconds between two checks of the rings at --rings-from.",
)
def object_server(state_dir, devices, bind, no_daemons, rings_from, ring_interval) -> None:
    """Serve a storage host's devices: its account, container and object servers for the
    proxies (which find them through the ring's ip:port), and its replicator, auditor,
    updater and reconciler (which works the misplaced-objects queue where the first
    replica of its account is). The state dir holds a copy of the cloud's cumulo.toml:
    its hash path prefix and suffix, and its `[object_store] backend_secret` (every
    request between the hosts is signed with it; a state dir made before that setting
    may hold the key file `object-store/backend.key` instead); the rings come from
    --rings-from, or are copied from the proxy host after each rebalance."""
    import asyncio
    import contextlib

    import uvicorn

    from cumulo.object_store.ring.distribution import RingFetcher, RingUnavailable
    from cumulo.object_store.ring.setup import ring_names
    from cumulo.object_store.storage.backend_auth import BackendKeyError, BackendKeys
    from cumulo.object_store.storage.server import create_storage_app

    host, _, port = bind.rpartition(":")
    fetcher = None
    if rings_from:
        sd = resolve_state_dir(state_dir)
        config = load_config(sd)
        try:
            keys = BackendKeys.load(config.object_store.backend_secret, sd)
        except BackendKeyError as exc:
            raise click.ClickException(str(exc)) from None
        fetcher = RingFetcher(rings_from, rings_dir(config, sd), ring_names(config), keys)
        try:
            asyncio.run(fetcher.wait_for_rings())
        except RingUnavailable as exc:
            raise click.ClickException(str(exc)) from None
    store = _store(state_dir, devices, bind)

    async def serve() -> None:
        server = uvicorn.Server(uvicorn.Config(
            create_storage_app(store.node), host=host.strip("[]"), port=int(port),
            log_level="warning", access_log=False,
        ))  # fmt: skip
        if not no_daemons:  # the expirer runs beside the proxies, once per cloud
            store.start_daemons(("replicator", "auditor", "updater", "reconciler"))
        rings = asyncio.create_task(fetcher.keep_fetching(ring_interval)) if fetcher else None
        console.print(f"object server: devices {devices} on {bind}")
        try:
            await server.serve()
        finally:
            if rings is not None:
                rings.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await rings
            await store.close()

    asyncio.run(serve())
