"""Run Tempest against a fresh cumulo cloud.

    python -m cumulo.testing.tempest [--worktree DIR] [--ports BASE] [--regex R ...]
        [--smoke] [--driver fake|qemu] [--[no-]validation] [--database sqlite|postgresql]
        [--report FILE]

Starts `cumulo up --with-demo-image` from the worktree's venv in a temporary state dir
(two extra fake compute hosts; with the QEMU driver a second QEMU host of its own
processes, see hosts.py), provisions Tempest's accounts, writes tempest.conf from
what the cloud offers, runs `tempest run` with two workers, prints the counts and the
wall time, and writes the results (JSON, failures per service, optionally a report).

With the QEMU driver the run validates its guests (`--validation`, the default there):
Tempest logs in to the tiny guest over SSH through a floating IP with its key pair
(`[validation] run_validation = true`), so the tests that check what the guest sees run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from cumulo.testing.guest import SSH_USER
from cumulo.testing.tempest import accounts, certified_image, conf, results
from cumulo.testing.tempest.cloud import (
    PORT_NAMES,
    Cloud,
    CloudSpec,
    free_external_cidr,
    host_networks,
)
from cumulo.testing.tempest.files import FileServer

REPO = Path(__file__).resolve().parents[3]
SERVICES_REGEX = r"^tempest\.api\.(identity|compute|image|network|volume|object_storage)\."
COMPUTE_REGEX = r"^tempest\.api\.compute\."
TEMPEST_REQUIREMENT = "tempest==47.0.0"
# Barbican's Tempest plugin, for its secrets client and [service_available] barbican:
# Tempest's LiveMigrationWithVTPMTest reads the vTPM secrets with them. Its own tests are
# never run here (PLUGIN_TESTS): the harness runs Tempest's.
BARBICAN_PLUGIN_REQUIREMENT = "barbican-tempest-plugin==4.6.0"
PLUGIN_TESTS = r"^barbican_tempest_plugin\."
# Classes that set `force_tenant_isolation = True`: Tempest 47 runs them with dynamic
# credentials whatever the configuration, so their admin is the admin role on a fresh
# project, which cumulo's default policy does not make a cloud admin. They run in a
# second pass whose cloud says any admin is (policy.yaml `cloud_admin: role:admin`, the
# upstream OpenStack default); everything else runs on the default policy.
ISOLATED = (
    r"^tempest\.api\.(identity\.admin\.|compute\.admin\.test_quotas|"
    r"compute\.admin\.test_auto_allocate_network|volume\.test_volume_absolute_limits)"
)
# Tests that give a server an interface with a fixed IP of their choosing, which only the
# network's owner may (Neutron's policy): Tempest runs them only with dynamic credentials
# and a network made for each project, so with validation (where the classes are not
# skipped) they run in the isolated pass, whose credentials are dynamic.
OWN_NETWORK_TESTS = (
    r"^tempest\.api\.compute\.servers\.test_attach_interfaces\."
    r"(AttachInterfacesTestJSON\.test_create_list_show_delete_interfaces_by_fixed_ip|"
    r"AttachInterfacesUnderV243Test\.test_add_remove_fixed_ip)\b"
)
# Tests that log in to the guest over SSH whatever `[validation] run_validation` says
# (they lack Tempest's usual skip): without validation (the fake driver has no guest to
# log in to) they are not run and the report says why. Test id -> reason.
NEEDS_GUEST_SSH = {
    r"tempest\.api\.compute\.servers\.test_server_actions\.ServerActionsV293TestJSON"
    r"\.test_rebuild_volume_backed_server": "logs in to the rebuilt guest over SSH",
}
# Tests that look in the guest for what the tiny test guest (cumulo.testing.guest) does not
# do: with validation they are not run and the report says why. Test id -> reason.
TINY_GUEST_LACKS = {
    r"tempest\.api\.compute\.servers\.test_server_personality\.ServerPersonalityTestJSON"
    r"\.test_(create_server_with_personality|"
    r"can_create_server_with_max_number_personality_files)": (
        "reads the personality files in the guest: the tiny guest does not write them "
        "(cloud-init does, from the config drive)"
    ),
}
# Tests whose own client cannot pass on Python 3, whatever the cloud does: not run, and
# the report says why. Test id -> reason.
TEMPEST_CLIENT_BROKEN = {
    r"tempest\.api\.compute\.admin\.test_live_migration\.LiveMigrationRemoteConsolesV26Test"
    r"\.test_live_migration_serial_console": (
        "sends a str to `_WebSocket.send_frame`, which masks it with `int(data[i])`: "
        "ValueError before any byte is sent, so it waits 120 s and fails; the same "
        "exchange with bytes gets the echo (tests/functional/test_compute_serial_console.py)"
    ),
}


def tempest_venv(path: Path) -> Path:
    """The venv holding Tempest and Barbican's plugin (installed with pip from PyPI when
    missing; never a dependency of cumulo itself)."""
    pip = [str(path / "bin" / "pip"), "--disable-pip-version-check"]
    if not (path / "bin" / "tempest").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([*pip, "install", "--quiet", TEMPEST_REQUIREMENT], check=True)
    plugin = BARBICAN_PLUGIN_REQUIREMENT.partition("==")[0]
    if subprocess.run([*pip, "show", "--quiet", plugin], capture_output=True).returncode:
        subprocess.run(
            [*pip, "install", "--quiet", BARBICAN_PLUGIN_REQUIREMENT, TEMPEST_REQUIREMENT],
            check=True,
        )
    return path


def free_port_block(start: int = 21000, size: int = len(PORT_NAMES) + 3) -> int:
    """The first base from `start` whose `size` ports are all free (the services', the
    metadata proxy's, the file server's, then the second image node's)."""
    base = start
    while base < 65000:
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            base += size
    raise SystemExit("no free port block")


def git_commit(worktree: Path) -> str:
    proc = subprocess.run(
        ["git", "-C", str(worktree), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() or "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cumulo.testing.tempest", description=__doc__)
    p.add_argument("--worktree", type=Path, default=REPO, help="checkout whose cloud is tested")
    p.add_argument("--ports", type=int, default=0, help="first of 9 ports (default: free)")
    p.add_argument("--regex", action="append", help="tests to run (default: the five services)")
    p.add_argument("--exclude-regex", default=None)
    p.add_argument("--smoke", action="store_true", help="only tests tagged smoke")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--driver", choices=["fake", "qemu"], default="fake")
    p.add_argument(
        "--validation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log in to the guests over SSH (Tempest's [validation]); default: with --driver qemu",
    )
    p.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    p.add_argument(
        "--tempest-venv",
        type=Path,
        default=Path(os.environ.get("CUMULO_TEMPEST_VENV", REPO / ".tempest-venv")),
    )
    p.add_argument("--run-dir", type=Path, default=None, help="default: a new temporary dir")
    p.add_argument("--report", type=Path, default=None, help="write docs/conformance.md here")
    p.add_argument("--failures-dir", type=Path, default=None, help="write <service>.txt here")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.OPTION=VALUE",
        help="override a tempest.conf value (e.g. compute-feature-enabled.shelve=true)",
    )
    p.add_argument("--keep", action="store_true", help="keep the state dir and cloud logs")
    p.add_argument("--projects", type=int, default=10, help="pre-provisioned test projects")
    args = p.parse_args(argv)
    if args.validation is None:
        args.validation = args.driver == "qemu"
    elif args.validation and args.driver == "fake":
        p.error("--validation needs real guests: --driver qemu")
    return args


@dataclass
class Pass:
    """One `tempest run` against its own fresh cloud."""

    name: str
    regex: str
    exclude: str | None
    dynamic: bool  # Tempest's dynamic credentials instead of pre-provisioned accounts
    policy: dict[str, str]


def passes(args: argparse.Namespace) -> list[Pass]:
    """The main pass (pre-provisioned accounts, cumulo's default policy) and, for the
    classes Tempest always runs with dynamic credentials, a second pass where any
    project's admin is a cloud admin (see ISOLATED)."""
    default = COMPUTE_REGEX if args.driver == "qemu" else SERVICES_REGEX
    regex = "|".join(args.regex or [default])
    if args.smoke:
        regex = rf"(?:{regex}).*\bsmoke\b"
    guest = "|".join(
        [*(TINY_GUEST_LACKS if args.validation else NEEDS_GUEST_SSH), *TEMPEST_CLIENT_BROKEN]
    )
    isolated_tests = f"{ISOLATED}|{OWN_NETWORK_TESTS}" if args.validation else ISOLATED
    exclude = "|".join(r for r in (args.exclude_regex, isolated_tests, guest, PLUGIN_TESTS) if r)
    # The user regex may match anywhere in a test id (Tempest searches), the lookahead too.
    isolated = rf"(?=.*(?:{regex}))(?:{isolated_tests})"
    isolated_exclude = "|".join(r for r in (args.exclude_regex, guest, PLUGIN_TESTS) if r)
    return [
        Pass("main", regex, exclude, False, {}),
        Pass("isolated", isolated, isolated_exclude, True, {"cloud_admin": "role:admin"}),
    ]


def run_pass(args, venv: Path, run_dir: Path, spec: CloudSpec, files: FileServer, p: Pass):
    """Start the pass's cloud, provision, configure and run Tempest; its results."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cloud = Cloud(spec, run_dir / "cloud.log").start()
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    try:
        settings = cloud.settings
        auth_url = cloud.url("identity") + "/v3"
        session = accounts.AdminSession.login(auth_url, settings["identity"]["admin_password"])
        accounts.register_image_node(session, cloud.image_node_url)
        offer = conf.discover(session, {name: cloud.url(name) for name in PORT_NAMES})
        offer["http_image"] = files.url("image.qcow2")
        offer["images_manifest"] = str(files.manifest)
        offer["multiattach_type"] = accounts.multiattach_volume_type(session)
        # Before the copy: image_alt gets the same properties.
        if args.validation:
            accounts.enable_guest_agent(session, offer["image"], SSH_USER)
        accounts.enable_virtio_scsi(session, offer["image"])
        offer["image_alt"] = accounts.alternate_image(session, offer["image"])
        accounts_file = None
        if not p.dynamic:
            accounts_file = run_dir / "accounts.yaml"
            found = accounts.provision(session, offer["public_network"]["id"], args.projects, 4)
            accounts_file.write_text(yaml.safe_dump(found))
            # Signed with certificates every account may read: ServerShowV263Test.
            readers = certified_image.tempest_users(session)
            offer["certified_image"] = certified_image.certified_image(
                session, offer["image"], readers
            )
        conf_file = run_dir / "etc" / "tempest.conf"
        conf_file.parent.mkdir(exist_ok=True)
        conf.write_conf(
            conf_file,
            run_dir=run_dir,
            auth_url=auth_url,
            admin_password=settings["identity"]["admin_password"],
            offer=offer,
            accounts_file=accounts_file,
            overrides=args.set,
            validation=args.validation,
            hosts=spec.compute_hosts,
            # Every fake host runs vTPM guests; every QEMU host here is this machine,
            # whose QEMU guests have one where swtpm is installed.
            vtpm_live_migration=args.driver == "fake" or shutil.which("swtpm") is not None,
        )
        cmd = [str(venv / "bin" / "tempest"), "run", "--config-file", str(conf_file),
               "--concurrency", str(args.workers), "--regex", p.regex]  # fmt: skip
        if p.exclude:
            cmd += ["--exclude-regex", p.exclude]
        print(f"[{p.name}] " + " ".join(cmd), flush=True)
        with (run_dir / "tempest.out").open("w") as out:
            subprocess.run(cmd, cwd=run_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
        stream = subprocess.run(
            [str(venv / "bin" / "stestr"), "last", "--subunit"],
            cwd=run_dir, env=env, capture_output=True,
        ).stdout  # fmt: skip
    finally:
        cloud.stop()
        if not args.keep:
            shutil.rmtree(spec.state_dir, ignore_errors=True)
    found = results.parse(venv / "bin" / "python", stream, run_dir / "tempest.log")
    for r in found:
        r.run = p.name
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    venv = tempest_venv(args.tempest_venv.resolve())
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="cumulo-tempest-"))
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    worktree = args.worktree.resolve()
    base = args.ports or free_port_block()
    print(f"run dir {run_dir}; clouds from {worktree} on ports {base}+", flush=True)
    found: list[results.Result] = []
    broken: list[str] = []
    hosts = 1
    with FileServer(
        run_dir / "files", CloudSpec(worktree, run_dir, base).file_server_port
    ) as files:
        for p in passes(args):
            spec = CloudSpec(
                worktree=worktree,
                state_dir=run_dir / p.name / "state",
                ports_base=base,
                driver=args.driver,
                database=args.database,
                policy=p.policy,
                # Real guests are reached on floating IPs through the host's leg.
                public_cidr=(
                    free_external_cidr(host_networks(), start=base % 200 + 16)
                    if args.driver == "qemu"
                    else ""
                ),
            )
            hosts = spec.compute_hosts
            try:
                found += run_pass(args, venv, run_dir / p.name, spec, files, p)
            except (Exception, SystemExit) as exc:  # the other pass's results still count
                print(f"[{p.name}] did not run: {exc!r}", flush=True)
                broken.append(p.name)
    wall = time.monotonic() - started
    found.sort(key=lambda r: r.id)
    results.write_json(found, run_dir / "results.json")
    failures_dir = args.failures_dir or run_dir / "failures"
    results.write_failures(found, failures_dir)
    c = results.counts(found)
    if args.report:
        meta = {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit(worktree),
            "tempest": TEMPEST_REQUIREMENT.split("==")[1],
            "mode": f"{args.driver} driver, {args.database}, {hosts} compute hosts, "
            f"{args.workers} workers"
            + (", guests validated over SSH" if args.validation else "")
            + (", smoke tests only" if args.smoke else ""),
            "wall time": f"{wall / 60:.1f} min",
        }
        if args.regex:
            meta["tests"] = " or ".join(f"`{r}`" for r in args.regex)
        if broken:
            meta["passes that did not run"] = ", ".join(broken)
        if not args.validation:
            meta["not run (no validation: no guest to log in to)"] = "; ".join(
                f"`{test.replace(chr(92), '')}` ({reason})"
                for test, reason in NEEDS_GUEST_SSH.items()
            )
        else:
            meta["not run (the tiny guest lacks it)"] = "; ".join(
                f"`{test.replace(chr(92), '')}` ({reason})"
                for test, reason in TINY_GUEST_LACKS.items()
            )
        meta["not run (Tempest's own client fails on Python 3)"] = "; ".join(
            f"`{test.replace(chr(92), '')}` ({reason})"
            for test, reason in TEMPEST_CLIENT_BROKEN.items()
        )
        args.report.write_text(results.render_markdown(found, meta))
    print(
        f"{c['success']} passed, {c['fail']} failed, {c['skip']} skipped in {wall / 60:.1f} min; "
        f"results in {run_dir} (results.json; per pass: tempest.out, tempest.log, cloud.log), "
        f"failures per service in {failures_dir}"
    )
    if broken:
        print(f"passes that did not run: {', '.join(broken)}")
    return 1 if c["fail"] or broken or not found else 0


if __name__ == "__main__":
    sys.exit(main())
