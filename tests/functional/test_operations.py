"""An operator's commands: host packages, `cumulo doctor`, `cumulo down`, `cumulo purge`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cumulo.common.config import load_config, write_config
from cumulo.network.dataplane.linuxbridge import scope_of
from cumulo.operations.host_packages import host_packages
from tests.cloudrunner import (
    VENV_BIN,
    CloudRunner,
    configure_state_dir,
    free_port,
    reserve_fresh_ports,
)
from tests.conftest import skip_or_fail
from tests.functional.test_identity_lifecycle import Served, _cumulo


def test_host_packages_dry_run_names_every_package_a_bare_machine_lacks(tmp_path: Path):
    # An empty dpkg database: a machine with none of the packages installed.
    (tmp_path / "updates").mkdir()
    (tmp_path / "status").touch()
    result = _cumulo("host-packages", "--install", "--dry-run", "--admin-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = [p.name for p in host_packages()]
    assert {"qemu-utils", "qemu-system-x86", "dnsmasq-base", "nftables"} <= set(names)
    for name in names:
        assert name in result.stderr
    assert "Would run: apt-get install -y -q " + " ".join(names) in result.stderr


def test_host_packages_on_this_machine_says_all_are_installed():
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian host")
    result = _cumulo("host-packages", "--with-test")
    # .ci/run installs them through the same command before the tests run.
    if "all installed" not in result.stderr:
        skip_or_fail(f"host packages missing: {result.stderr}")


def test_doctor_names_what_is_unreachable_with_its_fix(tmp_path: Path):
    configure_state_dir(tmp_path)
    config = load_config(tmp_path)
    closed = free_port()
    config.database.url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed}/cumulo"
    config.messaging.transport_url = f"rabbit://guest:guest@127.0.0.1:{closed}/"
    write_config(tmp_path, config)
    result = _cumulo("doctor", "--state-dir", str(tmp_path), "--json", timeout=60)
    assert result.returncode == 1  # something essential fails
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert {"root", "host packages", "qemu", "qemu-img", "accelerator", "disk"} <= set(checks)
    assert checks["database"]["status"] == "fail"
    assert f"127.0.0.1:{closed}" in checks["database"]["detail"]
    assert "[database] url" in checks["database"]["fix"]
    assert checks["message bus"]["status"] == "fail"
    assert "transport_url" in checks["message bus"]["fix"]
    for check in checks.values():
        assert check["status"] in ("ok", "warn", "fail")
        assert check["status"] == "ok" or check["fix"], check


def test_doctor_on_a_sound_all_in_one_config_fails_nothing(tmp_path: Path):
    configure_state_dir(tmp_path)
    result = _cumulo("doctor", "--state-dir", str(tmp_path), "--json", timeout=60)
    checks = json.loads(result.stdout)
    failed = [c for c in checks if c["status"] == "fail"]
    if failed:
        skip_or_fail(f"this host lacks what cumulo needs: {failed}")
    assert result.returncode == 0
    by_name = {c["name"]: c for c in checks}
    assert by_name["database"]["status"] == by_name["message bus"]["status"] == "ok"


def test_down_stops_the_cloud_and_a_second_down_finds_none(tmp_path: Path):
    configure_state_dir(tmp_path)
    served = Served(tmp_path)
    result = _cumulo("down", "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"(pid {served.proc.pid}) stopped" in result.stderr
    assert served.proc.wait(timeout=30) == 0
    again = _cumulo("down", "--state-dir", str(tmp_path))
    assert "No cumulo is running" in again.stderr


def _left_behind(scope: str) -> tuple[list[str], list[int]]:
    from cumulo.operations.purge import cloud_namespaces, cloud_processes

    processes = cloud_processes(scope)
    return cloud_namespaces(scope), [pid for pids in processes.values() for pid in pids]


def test_purge_removes_what_a_cloud_left_even_when_its_state_dir_is_gone(tmp_path: Path):
    if os.geteuid() != 0 or shutil.which("ip") is None:
        skip_or_fail("purging namespaces needs root and iproute2")
    state_dir = tmp_path / "gone-cloud"
    instance = state_dir / "compute" / "host1" / "instances" / "0f6d1c32"
    instance.mkdir(parents=True)
    scope = scope_of(state_dir)
    namespaces = [f"cmlo-{scope}-host", f"cmlo-{scope}-dhcp-0123"]
    stray: list[subprocess.Popen] = []
    try:
        for ns in namespaces:
            subprocess.run(["ip", "netns", "add", ns], check=True)
        # A dnsmasq-like process inside a namespace, a "guest" and an "NBD export" whose
        # command lines name files of the state dir, as QEMU's and qemu-storage-daemon's do.
        sleeper = ["-c", "import time; time.sleep(600)"]
        stray.append(subprocess.Popen(["ip", "netns", "exec", namespaces[1], "sleep", "600"]))
        for program, arg in (
            ("qemu-system-x86_64", f"-pidfile={instance / 'qemu.pid'}"),
            ("qemu-storage-daemon", f"driver=file,filename={state_dir / 'volumes' / 'v1'}"),
        ):
            stray.append(
                subprocess.Popen(
                    ["bash", "-c", f'exec -a {program} "$@"', "-", sys.executable, *sleeper, arg]
                )
            )
        deadline = time.monotonic() + 10
        while len(_left_behind(scope)[1]) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        left_namespaces, left_processes = _left_behind(scope)
        assert left_namespaces == sorted(namespaces) and len(left_processes) == 2

        shutil.rmtree(state_dir)  # the operator deleted the state dir first
        result = _cumulo("purge", "--scope", scope)
        assert result.returncode == 0, result.stderr
        assert "1 guest(s), 1 NBD export(s), 2 namespace(s)" in result.stderr
        assert _left_behind(scope) == ([], [])
        for proc in stray:
            assert proc.wait(timeout=10) < 0  # killed by purge
    finally:
        for proc in stray:
            proc.kill()
        for ns in namespaces:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def _samples(text: str, name: str) -> dict[str, float]:
    """`{labels: value}` of one metric in Prometheus' text format."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            found[labels] = float(value)
    return found


def _boot(cloud, tmp_path: Path, name: str) -> tuple[dict, dict]:
    """A server (fake driver) booted from a fresh image: (image, server)."""
    disk = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "64M"], check=True)
    image = cloud.openstack(
        "image", "create", f"{name}-img", "--file", str(disk), "--disk-format", "qcow2",
        "--container-format", "bare", "-f", "json",
    )  # fmt: skip
    server = cloud.openstack(
        "server", "create", "--image", image["id"], "--flavor", "m1.tiny", "--network",
        "private", "--wait", name, "-f", "json",
    )  # fmt: skip
    return image, server


def _unboot(cloud, image: dict, server: dict) -> None:
    cloud.openstack("server", "delete", "--wait", server["id"])
    cloud.openstack("image", "delete", image["id"])


def test_metrics_after_a_boot_count_the_requests_and_bus_messages(cloud, tmp_path: Path):
    image, server = _boot(cloud, tmp_path, "metrics-vm")
    ports = cloud.config.ports
    for port in (ports.identity, ports.compute, ports.image, ports.network, ports.block_storage):
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
    text = httpx.get(f"http://127.0.0.1:{ports.compute}/metrics", timeout=10).text
    requests = _samples(text, "cumulo_http_requests_total")
    creates = [
        v
        for k, v in requests.items()
        if 'service="compute"' in k and 'method="POST"' in k and 'route="/v2.1/servers"' in k
    ]
    assert creates and sum(creates) >= 1, requests
    # Routes are templates: no server id appears in a label.
    assert not any("metrics-vm" in k for k in requests)
    builds = _samples(text, "cumulo_rpc_messages_total")
    assert any("build_and_run_instance" in k and 'outcome="ok"' in k for k in builds), builds
    durations = _samples(text, "cumulo_http_request_duration_seconds_count")
    assert any('route="/v2.1/servers"' in k for k in durations)
    # The boot itself: its outcome, the time of each step, the image cache, the data plane.
    assert _samples(text, "cumulo_boots_total").get('{outcome="success"}', 0) >= 1
    steps = _samples(text, "cumulo_instance_action_event_duration_seconds_count")
    for step in ("conductor_build_instances", "compute_networking", "compute_spawning"):
        assert steps.get(f'{{event="{step}",result="success"}}', 0) >= 1, steps
    assert _samples(text, "cumulo_image_cache_lookups_total").get('{result="miss"}', 0) >= 1
    scheduling = _samples(text, "cumulo_rpc_handling_duration_seconds_count")
    assert scheduling.get('{method="select_destinations"}', 0) >= 1
    round_trips = _samples(text, "cumulo_rpc_call_round_trip_seconds_count")
    assert round_trips.get('{method="select_destinations"}', 0) >= 1, round_trips
    assert _samples(text, "cumulo_dataplane_applies_total").get('{outcome="ok"}', 0) >= 1
    # Every series the Grafana dashboard queries is one the cloud exports.
    dashboard = json.loads(_cumulo("grafana-dashboard").stdout)
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"cumulo_[a-z_]+", target["expr"])
    }
    assert queried and all(_samples(text, name) for name in queried), queried
    _unboot(cloud, image, server)


def test_systemd_units_are_accepted_by_systemd_analyze_verify(tmp_path: Path):
    if shutil.which("systemd-analyze") is None:
        skip_or_fail("systemd-analyze (Debian's systemd) is not installed")
    unit_dir = tmp_path / "units"
    state_dir = tmp_path / "state"
    result = _cumulo(
        "systemd", "install", "--state-dir", str(state_dir), "--unit-dir", str(unit_dir)
    )
    assert result.returncode == 0, result.stderr
    units = sorted(unit_dir.glob("*.service"))
    assert [u.name for u in units] == [
        "cumulo-api.service",
        "cumulo-compute.service",
        "cumulo-conductor.service",
        "cumulo-network-agent.service",
        "cumulo-scheduler.service",
        "cumulo-volume.service",
        "cumulo.service",
    ]
    for unit in units:
        text = unit.read_text()
        # Guests and the data plane outlive a stop or restart of the service.
        assert "KillMode=process" in text
        assert f"--state-dir {state_dir}" in text
    verified = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stderr


def test_backup_of_a_running_cloud_restores_into_a_cloud_with_the_same_resources(
    tmp_path: Path,
):
    source = tmp_path / "source"
    configure_state_dir(source)
    runner = CloudRunner(source).start()
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "64M"], check=True)
    try:
        image = runner.openstack(
            "image", "create", "kept-img", "--file", str(disk), "--disk-format", "qcow2",
            "--container-format", "bare", "-f", "json",
        )  # fmt: skip
        server = runner.openstack(
            "server", "create", "--image", image["id"], "--flavor", "m1.tiny", "--network",
            "private", "--wait", "kept-vm", "-f", "json",
        )  # fmt: skip
        volume = runner.openstack("volume", "create", "--size", "1", "kept-vol", "-f", "json")
        deadline = time.monotonic() + 60
        while runner.openstack("volume", "show", volume["id"], "-f", "json")["status"] != (
            "available"
        ):
            assert time.monotonic() < deadline, "volume never became available"
            time.sleep(0.5)
        # Taken while the cloud runs.
        result = _cumulo("backup", "--state-dir", str(source), str(tmp_path / "backup"))
        assert result.returncode == 0, result.stderr
        assert "compute, dashboard, ec2, identity, image, key_manager, network, volume" in (
            result.stderr
        )
    finally:
        runner.stop()
    manifest = json.loads((tmp_path / "backup" / "cumulo-backup.json").read_text())
    assert manifest["state_dir"] == str(source.resolve())

    restored = tmp_path / "restored"
    result = _cumulo("restore", "--state-dir", str(restored), str(tmp_path / "backup"))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((restored / "fernet-keys" / "0").stat().st_mode) == 0o600
    reserve_fresh_ports(restored)  # the restored cloud beside the source
    runner = CloudRunner(restored).start()
    try:
        servers = runner.openstack("server", "list", "--all-projects", "-f", "json")
        assert [(s["ID"], s["Name"]) for s in servers] == [(server["id"], "kept-vm")]
        shown = runner.openstack("image", "show", image["id"], "-f", "json")
        assert shown["checksum"] == image["checksum"] and shown["status"] == "active"
        saved = tmp_path / "saved.qcow2"
        runner.openstack("image", "save", "--file", str(saved), image["id"])
        assert saved.read_bytes() == disk.read_bytes()
        kept = runner.openstack("volume", "show", volume["id"], "-f", "json")
        assert kept["name"] == "kept-vol" and kept["status"] == "available"
        # The restored cloud still works, not only reads.
        runner.openstack("volume", "delete", volume["id"])
    finally:
        runner.stop()


def test_json_logs_give_one_line_per_request_with_who_and_which_route(tmp_path: Path):
    configure_state_dir(tmp_path)
    log_dir = tmp_path / "logs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "CUMULO_"))}
    proc = subprocess.Popen(
        [str(VENV_BIN / "cumulo"), "-v", "--log-format", "json", "--log-dir", str(log_dir),
         "up", "--state-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    runner = CloudRunner(tmp_path)  # its client helpers only
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(runner.auth_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "cumulo up did not start"
            time.sleep(0.2)
        token = runner.token("admin")
        global_id = "req-11111111-2222-3333-4444-555555555555"
        answer = httpx.get(
            f"http://127.0.0.1:{runner.config.ports.compute}/v2.1/servers/detail",
            headers={"X-Auth-Token": token, "X-OpenStack-Request-ID": global_id},
        )
        assert answer.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    lines = [json.loads(x) for x in (log_dir / "compute.log").read_text().splitlines()]
    line = next(x for x in lines if x.get("global_request_id") == global_id)
    assert line["route"] == "/v2.1/servers/detail" and line["status"] == 200
    assert line["user_id"] and line["project_id"] and line["duration_ms"] >= 0
    assert line["request_id"] == answer.headers["x-openstack-request-id"]
    assert all(x["service"] == "compute" for x in lines)
    identity = [json.loads(x) for x in (log_dir / "identity.log").read_text().splitlines()]
    assert any(x["route"] == "/v3/auth/tokens" and x["status"] == 201 for x in identity)
    # The console gets the same lines as JSON (the stream is parseable line by line).
    for text in stderr.splitlines():
        if text.startswith("{"):
            json.loads(text)
    assert token not in (log_dir / "compute.log").read_text()


def test_status_of_a_running_cloud_shows_apis_services_servers_and_queues(cloud, tmp_path: Path):
    image, server = _boot(cloud, tmp_path, "status-vm")
    result = _cumulo("status", "--state-dir", str(cloud.state_dir), "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert {name: api["state"] for name, api in status["apis"].items()} == {
        name: "up"
        for name in (
            "identity",
            "compute",
            "image",
            "network",
            "block_storage",
            "object_store",
            "ec2",
            "metadata",
            "dashboard",
            "novncproxy",
            "spicehtml5proxy",
            "serialproxy",
            "key_manager",
        )
    }
    assert status["database"]["status"] == "ok"
    binaries = {(s["binary"], s["state"]) for s in status["services"]}
    # The compute binary is named as Nova's on the wire.
    assert ("nova-compute", "up") in binaries and ("cinder-volume", "up") in binaries
    assert all(s["heartbeat_age_s"] is not None for s in status["services"])
    assert "conductor" in status["queues"] and "scheduler" in status["queues"]
    assert status["servers"].get("ACTIVE", 0) >= 1
    assert status["unknown_guests"] == [] and status["missing_guests"] == []
    _unboot(cloud, image, server)


def test_trace_of_a_boot_lists_its_steps_in_order(cloud, tmp_path: Path):
    image, server = _boot(cloud, tmp_path, "traced-vm")
    try:
        result = _cumulo("trace", "--state-dir", str(cloud.state_dir), server["id"], "--json")
        assert result.returncode == 0, result.stderr
        body = json.loads(result.stdout)
        assert body["action"]["action"] == "create"
        steps = [s["event"] for s in body["steps"]]
        assert steps[0] == "conductor_build_instances", steps
        assert "compute_build_and_run_instance" in steps
        assert steps.index("compute_networking") < steps.index("compute_spawning")
        starts = [s["start_s"] for s in body["steps"]]
        assert starts == sorted(starts) and starts[0] >= 0
        assert all(s["duration_s"] is not None and s["result"] == "Success" for s in body["steps"])
        text = _cumulo("trace", "--state-dir", str(cloud.state_dir), server["id"])
        assert "compute_spawning" in text.stderr and " ms " in text.stderr
    finally:
        _unboot(cloud, image, server)


def test_events_show_a_boot_and_a_delete_as_nova_versioned_notifications(cloud, tmp_path: Path):
    image, server = _boot(cloud, tmp_path, "notified-vm")
    _unboot(cloud, image, server)
    result = _cumulo("events", "--state-dir", str(cloud.state_dir), "--json")
    assert result.returncode == 0, result.stderr
    mine = [
        e
        for e in map(json.loads, result.stdout.splitlines())
        if e["exchange"] == "nova" and e["payload"]["nova_object.data"]["uuid"] == server["id"]
    ]
    assert [e["event_type"] for e in mine] == [
        "instance.create.start",
        "instance.create.end",
        "instance.delete.start",
        "instance.delete.end",
    ]
    end = mine[1]
    assert end["exchange"] == "nova" and end["priority"] == "INFO"
    assert end["publisher_id"].startswith("nova-compute:")
    assert end["payload"]["nova_object.name"] == "InstanceCreatePayload"
    data = end["payload"]["nova_object.data"]
    assert data["state"] == "active" and data["power_state"] == "running"
    assert data["display_name"] == "notified-vm" and data["image_uuid"] == image["id"]
    assert data["flavor"]["nova_object.data"]["name"] == "m1.tiny"
    assert data["ip_addresses"] and data["ip_addresses"][0]["address"]
    assert mine[3]["payload"]["nova_object.data"]["state"] == "deleted"
    text = _cumulo("events", "--state-dir", str(cloud.state_dir))
    assert "instance.create.end" in text.stdout


def test_a_boot_is_one_trace_from_the_api_through_the_bus_to_the_network(cloud, tmp_path: Path):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from cumulo.common import tracing

    exporter = InMemorySpanExporter()
    tracing.enable(exporter)
    try:
        image, server = _boot(cloud, tmp_path, "traced-boot")
    finally:
        tracing.disable()
    _unboot(cloud, image, server)
    spans = exporter.get_finished_spans()
    create = next(s for s in spans if s.name == "compute POST /v2.1/servers")
    trace = [s for s in spans if s.context.trace_id == create.context.trace_id]
    names = {s.name for s in trace}
    for expected in (
        "rpc build_instances",
        "rpc select_destinations",
        "rpc build_and_run_instance",
        "network POST /v2.0/ports",
    ):
        assert expected in names, sorted(names)
    by_id = {s.context.span_id: s for s in trace}
    host_build = next(s for s in trace if s.name == "rpc build_and_run_instance")
    # The host's work descends from the API request: conductor, then the host.
    chain = []
    parent = host_build
    while parent is not None:
        chain.append(parent.name)
        parent = by_id.get(parent.parent.span_id) if parent.parent else None
    assert chain[-1] == "compute POST /v2.1/servers" and "rpc build_instances" in chain
    assert create.attributes["openstack.request_id"].startswith("req-")
    assert create.attributes["http.status_code"] == 202


def _identity_events(cloud) -> list[dict]:
    result = _cumulo("events", "--state-dir", str(cloud.state_dir), "--json")
    assert result.returncode == 0, result.stderr
    return [e for e in map(json.loads, result.stdout.splitlines()) if e["exchange"] == "keystone"]


def test_identity_changes_and_sign_ins_are_cadf_audit_events(cloud):
    project = cloud.openstack("project", "create", "audited", "-f", "json")
    user = cloud.openstack(
        "user", "create", "--password", "s3cret-Passw0rd", "auditee", "-f", "json"
    )
    cloud.openstack("role", "add", "--project", project["id"], "--user", user["id"], "member")
    env = {
        "OS_CLOUD": "",
        "OS_AUTH_URL": cloud.auth_url,
        "OS_USERNAME": "auditee",
        "OS_PASSWORD": "wrong-password",
        "OS_PROJECT_NAME": "audited",
        "OS_USER_DOMAIN_ID": "default",
        "OS_PROJECT_DOMAIN_ID": "default",
        "OS_IDENTITY_API_VERSION": "3",
    }
    refused = cloud.openstack("token", "issue", check=False, env=env)
    assert refused.returncode != 0
    cloud.openstack("token", "issue", env={**env, "OS_PASSWORD": "s3cret-Passw0rd"})
    cloud.openstack("project", "delete", project["id"])
    cloud.openstack("user", "delete", user["id"])

    events = _identity_events(cloud)
    by_type: dict[str, list[dict]] = {}
    for event in events:
        by_type.setdefault(event["event_type"], []).append(event["payload"])
    created = next(
        p for p in by_type["identity.project.created"] if p["target"]["id"] == project["id"]
    )
    assert created["typeURI"] == "http://schemas.dmtf.org/cloud/audit/1.0/event"
    assert created["action"] == "created.project" and created["outcome"] == "success"
    assert created["target"]["typeURI"] == "data/security/project"
    assert created["initiator"]["id"] and created["initiator"]["typeURI"].endswith("user")
    assert any(p["target"]["id"] == user["id"] for p in by_type["identity.user.created"])
    assert any(p["target"]["id"] == project["id"] for p in by_type["identity.project.deleted"])
    assert by_type["identity.role_assignment.created"]
    sign_ins = [
        p for p in by_type["identity.authenticate"] if p["initiator"].get("name") == "auditee"
    ]
    assert {p["outcome"] for p in sign_ins} == {"success", "failure"}
    assert all(p["action"] == "authenticate" for p in sign_ins)
    ok = next(p for p in sign_ins if p["outcome"] == "success")
    assert ok["initiator"]["id"] == user["id"]
    # No secret travels in an audit event.
    assert "s3cret-Passw0rd" not in json.dumps(events)
    assert "wrong-password" not in json.dumps(events)


def test_volume_and_image_life_cycles_are_cinder_and_glance_notifications(cloud, tmp_path: Path):
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "64M"], check=True)
    image = cloud.openstack(
        "image", "create", "noticed-img", "--file", str(disk), "--disk-format", "qcow2",
        "--container-format", "bare", "-f", "json",
    )  # fmt: skip
    cloud.openstack("image", "set", "--property", "colour=blue", image["id"])
    cloud.openstack("image", "delete", image["id"])
    volume = cloud.openstack("volume", "create", "--size", "1", "noticed-vol", "-f", "json")
    deadline = time.monotonic() + 60
    while cloud.openstack("volume", "show", volume["id"], "-f", "json")["status"] != "available":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    cloud.openstack("volume", "delete", volume["id"])
    deadline = time.monotonic() + 60
    while cloud.openstack("volume", "list", "--name", "noticed-vol", "-f", "json"):
        assert time.monotonic() < deadline
        time.sleep(0.5)

    result = _cumulo("events", "--state-dir", str(cloud.state_dir), "--json")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    glance = [
        (e["event_type"], e["payload"])
        for e in events
        if e["exchange"] == "glance" and e["payload"].get("id") == image["id"]
    ]
    assert [t for t, _ in glance] == [
        "image.create",
        "image.upload",
        "image.activate",
        "image.update",
        "image.delete",
    ]
    assert glance[2][1]["status"] == "active" and glance[2][1]["checksum"]
    assert glance[3][1]["colour"] == "blue"
    assert glance[4][1]["status"] == "deleted"
    cinder = [
        (e["event_type"], e["payload"], e["publisher_id"])
        for e in events
        if e["exchange"] == "cinder" and e["payload"].get("volume_id") == volume["id"]
    ]
    assert [t for t, _, _ in cinder] == [
        "volume.create.start",
        "volume.create.end",
        "volume.delete.start",
        "volume.delete.end",
    ]
    assert cinder[1][1]["status"] == "available" and cinder[1][1]["size"] == 1
    assert cinder[1][2].startswith("volume.") and cinder[3][1]["status"] == "deleted"
