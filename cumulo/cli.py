"""The `cumulo` command."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click
from rich.console import Console

from cumulo.common.config import database_url, load_config, resolve_state_dir
from cumulo.common.logs import setup_logging

# soft_wrap: long hints (paths, export lines) stay whole lines to copy, even in a pipe.
console = Console(stderr=True, soft_wrap=True)
# Built cloud images (`cumulo image build`, `cumulo up --with-debian-image`).
IMAGE_CACHE = Path("~/.cache/cumulo/images").expanduser()

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
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="CUMULO_LOG_FORMAT",
    help="json: one JSON object per line (request lines with their fields).",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="CUMULO_LOG_DIR",
    help="Also write rotated log files there: one per service's requests, cumulo.log for the rest.",
)
def main(verbose: bool, log_format: str, log_dir: Path | None) -> None:
    """cumulo: a private IaaS cloud speaking the OpenStack APIs."""
    from cumulo.common import tracing

    setup_logging(logging.INFO if verbose else logging.WARNING, log_format, log_dir)
    tracing.enable_from_environment()  # OTEL_EXPORTER_OTLP_ENDPOINT: spans over OTLP


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
    "--with-demo-image/--no-demo-image",
    default=None,
    help="Register the tiny bootable test guest as public images (tiny, tiny-kernel, "
    "tiny-ramdisk) unless they exist; built from two Debian packages, cached. "
    "Default: only on the first start of a state dir.",
)
@click.option(
    "--with-debian-image",
    is_flag=True,
    help="Also build the Debian cloud image (cloud-init, SSH, Puppet agent) from this "
    "machine's apt archive and register it as debian-12, in the background while the "
    "cloud serves: minutes the first time, cached after (`cumulo image build debian`).",
)
@click.option(
    "--tls/--no-tls",
    default=None,
    help="Serve the APIs and the console proxy over HTTPS (kept in the config; without "
    "[tls] files of yours, a CA and a server certificate are made in <state dir>/tls).",
)
def up(
    state_dir: Path | None,
    host: str | None,
    database: str | None,
    with_demo_image: bool | None,
    with_debian_image: bool,
    tls: bool | None,
) -> None:
    """Serve the whole cloud (runs init when needed). Ctrl-C stops it."""
    from cumulo.cloud import Cloud
    from cumulo.common.server import (
        PLAIN_HTTP,
        AlreadyRunning,
        make_servers,
        run_event_loop,
        serve,
        state_dir_lock,
    )
    from cumulo.common.tls import server_files
    from cumulo.object_store.proxy_workers import ProxyWorkers

    sd = resolve_state_dir(state_dir)
    sd.mkdir(parents=True, exist_ok=True)
    try:
        with state_dir_lock(sd):

            async def run() -> None:
                cloud = await Cloud.open(sd, host=host, database=database, tls=tls)
                try:
                    # The first start offers the demo image (a marker remembers it was
                    # offered: a user who deleted it does not get it back).
                    offered = sd / "demo-image-offered"
                    if with_demo_image or (with_demo_image is None and not offered.exists()):
                        await _demo_image(cloud)
                        offered.touch()
                    apps = cloud.apps()
                    config = cloud.config
                    proxies = config.object_store.workers - 1
                    servers = make_servers(
                        apps,
                        config.host,
                        server_files(config),
                        shared_ports={"object-store"} if proxies else False,
                    )
                    _usage_hint(sd)
                    for name, (_app, port) in apps.items():
                        scheme = "http" if name in PLAIN_HTTP else config.scheme
                        if name == "serialproxy":  # a websocket, not pages
                            scheme = scheme.replace("http", "ws")
                        console.print(f"  {name:<15} {scheme}://{config.host}:{port}")
                    console.print(
                        "  the dashboard: log in as demo (its password is OS_PASSWORD in "
                        f"{sd / 'openrc-demo'})"
                    )
                    console.print("cumulo is up. Ctrl-C stops it.")
                    if with_debian_image:
                        # Registered through the APIs, so it starts once they listen.
                        debian = asyncio.create_task(_debian_image(config))
                    workers = ProxyWorkers(sd, proxies, _logging_args())
                    if proxies:
                        workers.start()
                    try:
                        await serve(servers)
                    finally:
                        await workers.stop()
                        if with_debian_image:
                            debian.cancel()
                finally:
                    await cloud.close()
                console.print("cumulo stopped.")

            run_event_loop(run())
    except AlreadyRunning as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)


async def _demo_image(cloud) -> None:
    from cumulo.image.demo import DemoImageError, register_for_cloud

    try:
        with console.status("Registering the demo image (the first time builds the tiny guest)"):
            ids = await register_for_cloud(cloud)
    except DemoImageError as exc:
        console.print(f"[yellow]warning:[/] no demo image: {exc}. Starting without it.")
        console.print("  `cumulo doctor` says what this host lacks and how to add it.")
        return
    console.print(f"  demo image: tiny ({ids['tiny']}), with its kernel and ramdisk")
    console.print(
        "  boot it: openstack server create --image tiny --flavor m1.tiny "
        "--network private --wait vm1"
    )


async def _debian_image(config) -> None:
    """Build (or take from the cache) the Debian cloud image and register it, in a
    thread: the cloud serves meanwhile. A failure is said and the cloud goes on."""
    from cumulo.image.cloud_image import ImageBuildError, build_debian, register

    def say(line: str) -> None:
        console.print(f"  debian image: {line}")

    def build_and_register() -> tuple[str, str]:
        built = build_debian(IMAGE_CACHE, log=say)
        return built.name, register(built, config, log=say)["disk"]

    say(f"building in the background (cache {IMAGE_CACHE}; the first build takes minutes)")
    try:
        name, image_id = await asyncio.to_thread(build_and_register)
    except ImageBuildError as exc:
        console.print(f"[yellow]warning:[/] no Debian image: {exc}")
        return
    say(f"{name} ({image_id}) is ready; log in as `debian` with your key pair")


def _run_host(sd: Path, agent, lock: str = "cumulo.pid") -> None:
    """Run one host's agent (`agent(stop)`) until SIGINT/SIGTERM, holding the state dir."""
    from cumulo.common.server import AlreadyRunning, state_dir_lock

    try:
        with state_dir_lock(sd, lock):
            _run_process(agent)
    except AlreadyRunning as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)


def _run_process(agent) -> None:
    """Run a process of the cloud (`agent(stop)`) until SIGINT/SIGTERM."""
    import signal

    from cumulo.common.server import run_event_loop

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await agent(stop)

    try:
        run_event_loop(run())
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)


_join_option = click.option(
    "--join",
    "join_url",
    default=None,
    help="Enrol this host first: the controller's Identity URL (http://controller:5000); "
    "with --token, the controller's config is written into this state dir.",
)
_token_option = click.option(
    "--token", default=None, help="The enrolment token (`cumulo host token create`)."
)


def _host_config(sd: Path, join_url: str | None, token: str | None):
    """This host's config: fetched from the controller with an enrolment token when
    --join is given, else the state dir's."""
    if join_url is None:
        return load_config(sd)
    if not token:
        raise click.UsageError("--join needs --token (cumulo host token create)")
    from cumulo.operations.enrolment import join

    try:
        config = join(sd, join_url, token)
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    console.print(f"enrolled with {join_url}: config written to {sd / 'cumulo.toml'}")
    return config


@main.command()
@state_dir_option
@click.option(
    "--host",
    "compute_host",
    default=None,
    help="This compute host's name (default: [compute] host, else the hostname).",
)
@_join_option
@_token_option
def compute(
    state_dir: Path | None, compute_host: str | None, join_url: str | None, token: str | None
) -> None:
    """Run a compute host on its own, joining the cloud of the controller in the config.

    The state dir holds a copy of the controller's cumulo.toml: [messaging] transport_url
    must name the shared broker (rabbit://...) and public_host the controller.
    """
    from cumulo.compute.agent import run_compute_agent

    sd = resolve_state_dir(state_dir)
    config = _host_config(sd, join_url, token)
    if compute_host:
        config.compute.host = compute_host
    _run_host(sd, lambda stop: run_compute_agent(config, sd, stop))


def _logging_args() -> list[str]:
    """The top-level logging options, to hand on to worker processes."""
    params = click.get_current_context().find_root().params
    args = ["-v"] if params.get("verbose") else []
    args += ["--log-format", params.get("log_format") or "text"]
    if params.get("log_dir"):
        args += ["--log-dir", str(params["log_dir"])]
    return args


@main.command()
@state_dir_option
@click.option(
    "--service",
    "services",
    default="all",
    help="The APIs to serve, comma-separated (identity,image,network,compute,"
    "block-storage,object-store,metadata,ec2,novncproxy,spicehtml5proxy,serialproxy,dashboard,"
    "key-manager); "
    "default all.",
)
@click.option("--workers", type=click.IntRange(1, 64), default=1, help="Worker processes.")
def api(state_dir: Path | None, services: str, workers: int) -> None:
    """Serve the REST APIs only, in --workers processes behind each port.

    Needs a shared message bus ([messaging] transport_url = rabbit://...) and a database
    server ([database] url): the conductor, scheduler, compute hosts, storage hosts and
    network agents run as `cumulo conductor|scheduler|compute|volume|network-agent`.
    """
    from cumulo import api_server

    known = api_server.service_names()
    chosen = known if services == "all" else [s.strip() for s in services.split(",")]
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise click.BadParameter(
            f"unknown services {unknown}; known: {known}", param_hint="--service"
        )
    sd = resolve_state_dir(state_dir)
    try:
        api_server.run(sd, chosen, workers, _logging_args())
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)


@main.command()
@state_dir_option
@click.option(
    "--identity-url",
    default=None,
    help="The Identity API (e.g. https://cloud.example:5000/v3); default the config's "
    "public Identity URL. The other APIs are found in the service catalog.",
)
@click.option(
    "--host", "bind_host", default=None, help="The address to listen on (default: [host])."
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Default: [ports] dashboard."
)
def dashboard(
    state_dir: Path | None, identity_url: str | None, bind_host: str | None, port: int | None
) -> None:
    """Serve the web dashboard alone, calling the cloud's APIs over HTTP.

    Identity at --identity-url, the other APIs at the public endpoints of the catalog;
    HTTPS and its CA as [tls] of the config says. Sessions are kept in the dashboard's
    database ([database] of the config): they outlive a restart, and every dashboard
    process with that database and the same [dashboard] session_secret shares them.
    """
    from cumulo.common.db import Database
    from cumulo.common.server import run_event_loop
    from cumulo.common.tls import server_files, verify_option
    from cumulo.dashboard.catalog import CatalogApis
    from cumulo.dashboard.renewal import Trustee
    from cumulo.dashboard.standalone import serve_dashboard

    state = resolve_state_dir(state_dir)
    config = load_config(state)
    if not config.dashboard.session_secret:
        raise click.ClickException(
            "[dashboard] session_secret is not set: copy cumulo.toml from the host where "
            "`cumulo init` or `cumulo up` made it"
        )
    url = identity_url or config.public_url(config.ports.identity)
    apis = CatalogApis(url, verify=verify_option(config))
    db = Database(database_url(config, state, "dashboard"), "dashboard")
    host, listen = bind_host or config.host, port or config.ports.dashboard
    console.print(f"cumulo dashboard on {config.scheme}://{host}:{listen}, Identity at {url}")
    run_event_loop(
        serve_dashboard(
            apis,
            db,
            config.dashboard.session_secret,
            host,
            listen,
            server_files(config),
            Trustee.from_config(config),
        )
    )


def _control_command(role: str):
    @main.command(role)
    @state_dir_option
    @click.option(
        "--host",
        "service_host",
        default=None,
        help="This service's host name in `openstack compute service list` "
        "(default: [compute] host, else the hostname).",
    )
    def command(state_dir: Path | None, service_host: str | None) -> None:
        from cumulo.compute.control import run_control_service

        sd = resolve_state_dir(state_dir)
        config = load_config(sd)
        if service_host:
            config.compute.host = service_host
        _run_process(lambda stop: run_control_service(config, sd, stop, role))

    command.__doc__ = (
        f"Run a compute {role} on its own (as many as you like, on the shared bus and "
        "database of the config)."
    )
    return command


conductor = _control_command("conductor")
scheduler = _control_command("scheduler")


@main.command("network-agent")
@state_dir_option
@click.option(
    "--host",
    "agent_host",
    default=None,
    help="This host's name (default: [network] agent_host, else [compute] host, else the "
    "hostname): the compute host whose guests it wires.",
)
@_join_option
@_token_option
def network_agent(
    state_dir: Path | None, agent_host: str | None, join_url: str | None, token: str | None
) -> None:
    """Run this host's network data plane (L2, DHCP, L3, metadata proxy) on its own.

    The state dir holds a copy of the controller's cumulo.toml: [messaging] transport_url
    must name the shared broker; the agent never opens the database.
    """
    from cumulo.network.host import run_network_agent

    sd = resolve_state_dir(state_dir)
    config = _host_config(sd, join_url, token)
    if agent_host:
        config.network.agent_host = agent_host
    _run_host(sd, lambda stop: run_network_agent(config, sd, stop), "network-agent.pid")


@main.command()
@state_dir_option
@click.option(
    "--host",
    "volume_host",
    default=None,
    help="This storage host's name (default: [volume] host, else the hostname).",
)
@_join_option
@_token_option
def volume(
    state_dir: Path | None, volume_host: str | None, join_url: str | None, token: str | None
) -> None:
    """Run a storage host on its own: the volume managers of its [[volume.backends]].

    The state dir holds a copy of the controller's cumulo.toml: [messaging] transport_url
    must name the shared broker (rabbit://...), [database] url the controller's database
    and public_host the controller (volumes from images are fetched from its Image API).
    """
    from cumulo.volume.agent import run_volume_host

    sd = resolve_state_dir(state_dir)
    config = _host_config(sd, join_url, token)
    if volume_host:
        config.volume.host = volume_host
    _run_host(sd, lambda stop: run_volume_host(config, sd, stop))


@main.group()
def host() -> None:
    """Hosts joining the cloud."""


@host.group("token")
def host_token() -> None:
    """Enrolment tokens for new hosts."""


@host_token.command("create")
@state_dir_option
@click.option("--ttl", type=click.FloatRange(min=1), default=3600.0, show_default=True,
              help="Seconds the token stays valid.")  # fmt: skip
@click.option("--uses", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many hosts may enrol with it.")  # fmt: skip
def host_token_create(state_dir: Path | None, ttl: float, uses: int) -> None:
    """Print a token a new host enrols with: `cumulo compute --join <identity URL>
    --token <token>` (or network-agent, volume) fetches this controller's config."""
    from cumulo.operations.enrolment import create_token

    sd = resolve_state_dir(state_dir)
    if not (sd / "cumulo.toml").exists():
        raise click.UsageError(f"{sd} holds no cloud (run cumulo init or cumulo up first)")
    click.echo(create_token(sd, ttl, uses))
    config = load_config(sd)
    console.print(
        f"on the new host: cumulo compute --join {config.public_url(config.ports.identity)} "
        "--token <the token above> (valid "
        f"{ttl:g} s, {uses} host{'s' if uses > 1 else ''})"
    )


def _object_store_commands() -> list[click.Command]:
    from cumulo.object_store.cli import object_server, object_store

    return [object_store, object_server]


for _command in _object_store_commands():
    main.add_command(_command)


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


@main.group()
def image() -> None:
    """Images: build cloud images on this machine."""


@image.command("build")
@click.argument("distribution", type=click.Choice(["debian"]))
@click.option("--release", default="bookworm", show_default=True, help="Debian release.")
@click.option("--packages", default="", help="More packages to install, comma-separated.")
@click.option("--name", default=None, help="Image name (default debian-<version>).")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=IMAGE_CACHE,
    show_default=True,
    help="Where builds are kept (a second build of the same image is quick).",
)
@click.option("--mirror", default=None, help="A Debian archive URL (default: apt's sources).")
@click.option("--no-register", is_flag=True, help="Only build; do not upload to the cloud.")
@click.option(
    "--format",
    "image_format",
    type=click.Choice(["disk", "ami"]),
    default="disk",
    show_default=True,
    help="disk: partition table and GRUB, booted by the BIOS; ami: kernel, ramdisk and "
    "root filesystem as three images.",
)
@click.option(
    "--firmware",
    type=click.Choice(["bios", "uefi"]),
    default="bios",
    show_default=True,
    help="What boots a disk image: bios (MBR, GRUB for BIOS) or uefi (GPT, an EFI System "
    "Partition with GRUB for EFI; registered with hw_firmware_type=uefi).",
)
@state_dir_option
def image_build(
    distribution: str,
    release: str,
    packages: str,
    name: str | None,
    cache_dir: Path,
    mirror: str | None,
    no_register: bool,
    image_format: str,
    firmware: str,
    state_dir: Path | None,
) -> None:
    """Build a cloud image (Debian, cloud-init, SSH, Puppet agent) from the machine's apt
    archive and register it in the running cloud: `cumulo image build debian`."""
    import time

    from cumulo.image.cloud_image import ImageBuildError, build_debian, register

    extra = [p.strip() for p in packages.split(",") if p.strip()]
    started = time.monotonic()
    try:
        built = build_debian(
            cache_dir,
            release,
            extra,
            name,
            log=console.print,
            mirror=mirror,
            image_format=image_format,
            firmware=firmware,
        )
        console.print(f"built in {time.monotonic() - started:.0f} s: {built.disk}")
        if not no_register:
            config = load_config(resolve_state_dir(state_dir))
            ids = register(built, config, log=console.print)
            console.print(
                f"boot it: openstack server create --image {built.name} --flavor m1.small "
                "--key-name <key> --network private --wait vm1"
            )
            console.print(f"  (image {ids['disk']}; log in as `debian` with the key pair)")
    except ImageBuildError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("host-packages")
@click.option("--install", is_flag=True, help="Install the missing ones (as root, apt-get).")
@click.option("--dry-run", is_flag=True, help="Only say what --install would install.")
@click.option("--with-test", is_flag=True, help="Also the packages only the tests use.")
@click.option(
    "--admin-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Read another dpkg database (dpkg --admindir).",
)
def host_packages_command(
    install: bool, dry_run: bool, with_test: bool, admin_dir: Path | None
) -> None:
    """The host packages cumulo needs for real guests and networks, and which are missing."""
    import os
    import subprocess

    from cumulo.operations import host_packages as hp

    wanted = hp.host_packages(include_test=with_test)
    if hp.package_manager() is None:
        console.print("Not a Debian/Ubuntu host; install the equivalents of:")
        for p in wanted:
            console.print(f"  {p.name:<20} {p.why}")
        return
    missing = hp.missing_packages(wanted, admin_dir)
    if not missing:
        console.print("Host packages: all installed.")
        return
    console.print("Host packages missing:")
    for p in missing:
        console.print(f"  {p.name:<20} {p.why}")
    command = " ".join(hp.install_command(missing))
    if dry_run or not install:
        console.print(f"Would run: {command}" if dry_run else f"Install them: sudo {command}")
        return
    if os.geteuid() != 0:
        console.print(
            f"[yellow]Not root:[/] run `sudo {command}`; serving what this host can meanwhile."
        )
        return
    console.print(f"Installing: {command}")
    try:
        hp.install(missing)
    except subprocess.CalledProcessError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)


@main.command()
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(state_dir: Path | None, as_json: bool) -> None:
    """What this host can do for a cloud, and the fix for what it cannot."""
    import json

    from rich.table import Table

    from cumulo.operations.doctor import FAIL, as_dicts, run_checks

    sd = resolve_state_dir(state_dir)
    checks = run_checks(load_config(sd), sd)
    if as_json:
        click.echo(json.dumps(as_dicts(checks), indent=2))
    else:
        table = Table("check", "", "detail", "fix")
        marks = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
        for c in checks:
            table.add_row(c.name, marks[c.status], c.detail, c.fix)
        Console(soft_wrap=False).print(table)
    if any(c.status == FAIL for c in checks):
        sys.exit(1)


@main.command()
@state_dir_option
def down(state_dir: Path | None) -> None:
    """Stop the cloud serving the state dir; its guests and data plane keep running."""
    from cumulo.operations.purge import cloud_namespaces, cloud_processes, scope_of, stop_cloud

    sd = resolve_state_dir(state_dir)
    try:
        pid = stop_cloud(sd)
    except TimeoutError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    console.print(f"cumulo (pid {pid}) stopped." if pid else f"No cumulo is running on {sd}.")
    scope = scope_of(sd)
    guests = cloud_processes(scope)["qemu-system-x86_64"]
    namespaces = cloud_namespaces(scope)
    if guests or namespaces:
        console.print(
            f"Kept running: {len(guests)} guest(s), {len(namespaces)} network namespace(s) "
            "(guests keep their network). `cumulo purge` removes them."
        )


@main.command()
@state_dir_option
@click.option("--scope", default=None, help="Purge by scope (when the state dir is gone).")
@click.option("--remove-state-dir", is_flag=True, help="Then delete the state dir too.")
def purge(state_dir: Path | None, scope: str | None, remove_state_dir: bool) -> None:
    """Stop the cloud, its guests and NBD exports, and remove its network namespaces
    (bridges, taps, nftables, dnsmasq inside them); with --remove-state-dir, its data."""
    from cumulo.operations.purge import purge as purge_cloud
    from cumulo.operations.purge import stop_cloud

    sd = None if scope else resolve_state_dir(state_dir)
    if sd is not None and sd.exists():
        stop_cloud(sd)
    report = purge_cloud(sd, scope, remove_state_dir)
    console.print(
        f"Purged scope {report.scope}: {len(report.guests)} guest(s), "
        f"{len(report.exports)} NBD export(s), {len(report.namespaces)} namespace(s)"
        + (", state dir removed" if report.state_dir_removed else "")
    )


@main.group()
def db() -> None:
    """The services' database schemas."""


def _print_schemas(states) -> None:
    for s in states:
        where = "not created" if s.current is None else f"at {s.current}"
        verdict = "up to date" if s.up_to_date else f"{where}, newest is {s.head}"
        console.print(f"  {s.service:<9} {verdict:<32} {s.database}")


@db.command("check")
@state_dir_option
def db_check(state_dir: Path | None) -> None:
    """Say where each service's schema stands; exit 1 when one needs `cumulo db upgrade`."""
    from cumulo.operations import database

    sd = resolve_state_dir(state_dir)
    states = asyncio.run(database.check(load_config(sd), sd))
    _print_schemas(states)
    if not all(s.up_to_date for s in states):
        console.print("Run `cumulo db upgrade` (or start `cumulo up`, which upgrades).")
        sys.exit(1)


@db.command("upgrade")
@state_dir_option
def db_upgrade(state_dir: Path | None) -> None:
    """Upgrade every service's schema to the newest revision (creating databases)."""
    from cumulo.operations import database

    sd = resolve_state_dir(state_dir)
    _print_schemas(asyncio.run(database.upgrade(load_config(sd), sd)))


@main.group()
def systemd() -> None:
    """systemd units for cumulo's processes."""


@systemd.command("install")
@state_dir_option
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/systemd/system"),
    show_default=True,
)
def systemd_install(state_dir: Path | None, unit_dir: Path) -> None:
    """Write cumulo.service (all-in-one) and the units of a scale-out cloud's processes
    (cumulo-api, -conductor, -scheduler, -compute, -network-agent, -volume)."""
    from cumulo.operations.systemd import install_units

    sd = resolve_state_dir(state_dir)
    for path in install_units(unit_dir, sd):
        console.print(f"wrote {path}")
    console.print(
        "Then: systemctl daemon-reload && systemctl enable --now cumulo (all-in-one), or "
        "on a scale-out cloud: cumulo-api, cumulo-conductor, cumulo-scheduler on the "
        "controllers and cumulo-compute, cumulo-network-agent, cumulo-volume on the hosts "
        "(docs/deployment.md)."
    )


def _copy_or_exit(copy, source: Path, target: Path):
    """Run backup/restore; a refused one (not a state dir, target not empty) exits 1."""
    from cumulo.operations.backup import BackupError

    try:
        return copy(source, target)
    except BackupError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)


@main.command("backup")
@state_dir_option
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
def backup_command(state_dir: Path | None, target: Path) -> None:
    """Copy the state dir into TARGET (new or empty), consistently, while the cloud runs."""
    from cumulo.operations.backup import backup

    sd = resolve_state_dir(state_dir)
    report = _copy_or_exit(backup, sd, target)
    console.print(
        f"Backed up {sd} to {target}: {report.files} files, {report.bytes / 1024**2:.1f} MiB, "
        f"databases: {', '.join(sorted(report.databases)) or 'none (server database)'}"
    )
    if report.server_database:
        console.print(
            f"[yellow]The databases are on {report.server_database}:[/] back them up with "
            "pg_dump / mariadb-dump now (see README)."
        )


@main.command("restore")
@state_dir_option
@click.argument("source", type=click.Path(file_okay=False, exists=True, path_type=Path))
def restore_command(state_dir: Path | None, source: Path) -> None:
    """Make a new state dir (--state-dir, new or empty) from a `cumulo backup` in SOURCE."""
    from cumulo.operations.backup import restore

    sd = resolve_state_dir(state_dir)
    report = _copy_or_exit(restore, source, sd)
    console.print(f"Restored {report.files} files into {sd}; start it with `cumulo up`.")


@main.command()
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(state_dir: Path | None, as_json: bool) -> None:
    """The running cloud: APIs, services and heartbeats, servers per state, queues, database,
    and guests this host runs that the database does not know (and the other way round)."""
    import dataclasses
    import json

    from cumulo.operations.status import read_status

    sd = resolve_state_dir(state_dir)
    report = read_status(load_config(sd), sd)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), indent=2))
        return
    console.print(f"cumulo: {'running, pid ' + str(report.pid) if report.pid else 'not running'}")
    console.print(f"database: {report.database['status']} ({report.database['detail']})")
    for name, api in report.apis.items():
        console.print(f"  {name:<14} {api['state']:<6} {api['detail']}")
    for s in report.services:
        age = "-" if s["heartbeat_age_s"] is None else f"{s['heartbeat_age_s']:.0f} s ago"
        console.print(
            f"  {s['binary']:<16} {s['host']:<24} {s['status']:<9} {s['state']:<5} heartbeat {age}"
        )
    servers = ", ".join(f"{k} {v}" for k, v in sorted(report.servers.items())) or "none"
    console.print(f"servers: {servers}")
    queues = ", ".join(f"{k} {v}" for k, v in sorted(report.queues.items())) or "all empty"
    console.print(f"queues: {queues}")
    if report.unknown_guests:
        console.print(f"[yellow]guests the database does not know:[/] {report.unknown_guests}")
    if report.missing_guests:
        console.print(f"[yellow]servers placed here with no guest:[/] {report.missing_guests}")


@main.command("grafana-dashboard")
def grafana_dashboard() -> None:
    """Print a Grafana dashboard (JSON) for the metrics at /metrics; import it in Grafana."""
    import json

    from cumulo.operations.grafana import dashboard

    click.echo(json.dumps(dashboard(), indent=2))


@main.command()
@state_dir_option
@click.argument("server")
@click.option("--request-id", default=None, help="Another action of the server than its create.")
@click.option("--json", "as_json", is_flag=True, help="Print the steps as JSON.")
def trace(state_dir: Path | None, server: str, request_id: str | None, as_json: bool) -> None:
    """SERVER's boot (or another action) as a timeline of its steps, with durations."""
    import dataclasses
    import json

    from cumulo.operations.status import CloudReader
    from cumulo.operations.trace import read_trace

    sd = resolve_state_dir(state_dir)
    reader = CloudReader(load_config(sd))
    reader.sign_in()
    action, steps = read_trace(reader, server, request_id)
    if as_json:
        body = {"action": action, "steps": [dataclasses.asdict(s) for s in steps]}
        click.echo(json.dumps(body, indent=2))
        return
    console.print(f"{action['action']} {action['request_id']} at {action['start_time']}")
    for s in steps:
        took = "running" if s.duration_s is None else f"{s.duration_s * 1000:8.1f} ms"
        console.print(
            f"  +{s.start_s * 1000:8.1f} ms  {took}  {s.event:<36} {s.host or '-':<20} "
            f"{s.result or ''}"
        )


@main.command()
@state_dir_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing them as they come.")
@click.option("--json", "as_json", is_flag=True, help="Each notification as a JSON line.")
def events(state_dir: Path | None, follow: bool, as_json: bool) -> None:
    """The cloud's notifications (instance.create.end, ...): the all-in-one cloud's file,
    or live from RabbitMQ (where --follow is implied)."""
    from cumulo.operations.events import print_events

    sd = resolve_state_dir(state_dir)
    try:
        asyncio.run(print_events(load_config(sd), sd, follow, click.echo, as_json))
    except KeyboardInterrupt:
        pass
