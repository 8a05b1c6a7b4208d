"""Servers with an emulated TPM (Nova's vTPM), with the real `openstack` CLI on a cloud
of three fake compute hosts (each reports the TPM traits): the secret the TPM state is
encrypted with lives in the Key Manager, owned by the user, readable by the user and
not by an admin; it stays the same across stop/start, resize (confirm and revert),
cold and live migration; live migration only for a `host` secret policy; shelve,
rescue, rebuild refused as Nova refuses them; bad flavor/image combinations refused
at create; the secret goes with the server; a `deployment` policy's secret is the
service user's."""

from __future__ import annotations

import subprocess
import time
import uuid

import httpx
import pytest

from tests.cloudrunner import CloudRunner
from tests.functional.test_compute_moves import HOSTS, wait_status
from tests.functional.test_compute_moves import cloud as cloud  # three fake hosts
from tests.functional.test_compute_moves import image as image

DEMO = "cumulo-demo"
NOT_SUPPORTED = "not supported for vTPM-enabled instance"


@pytest.fixture(scope="module")
def demo(cloud: CloudRunner) -> str:
    return cloud.token("demo", project="demo")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def flavor(cloud: CloudRunner, **specs: str) -> str:
    name = _name("tpm")
    cloud.openstack(
        "flavor", "create", "--ram", "64", "--disk", "1", "--vcpus", "1", "--public", name
    )
    props = [arg for key, value in specs.items() for arg in ("--property", f"{key}={value}")]
    if props:
        cloud.openstack("flavor", "set", *props, name)
    return name


def boot(cloud: CloudRunner, image: str, flavor_name: str, **kw) -> dict:
    return cloud.openstack(
        "server", "create", "--image", image, "--flavor", flavor_name, "--nic", "none",
        "--wait", _name("vtpm"), "-f", "json", cloud=DEMO, **kw,
    )  # fmt: skip


def secret_of(cloud: CloudRunner, token: str, server_id: str) -> dict:
    """The Key Manager's secret named for the server, as its owner lists it."""
    url = f"http://127.0.0.1:{cloud.config.ports.key_manager}/v1/secrets"
    name = f"vTPM secret for instance {server_id}"
    listed = httpx.get(url, params={"name": name}, headers={"X-Auth-Token": token}).json()
    assert listed["total"] == 1, listed
    return listed["secrets"][0]


def payload(cloud: CloudRunner, token: str, secret: dict) -> httpx.Response:
    secret_id = secret["secret_ref"].rsplit("/", 1)[-1]
    url = f"http://127.0.0.1:{cloud.config.ports.key_manager}/v1/secrets/{secret_id}/payload"
    return httpx.get(url, headers={"X-Auth-Token": token, "Accept": "text/plain"})


def console(cloud: CloudRunner, server_id: str) -> str:
    return cloud.openstack("console", "log", "show", server_id)


def refused(runner: CloudRunner, *argv: str, **kw) -> str:
    proc = runner.openstack(*argv, check=False, **kw)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


def test_the_tpm_secret_is_the_users_and_survives_power_cycles(cloud, image, demo):
    server = boot(
        cloud, image, flavor(cloud, **{"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-crb"})
    )
    secret = secret_of(cloud, demo, server["id"])
    assert secret["status"] == "ACTIVE"
    assert secret["secret_type"] == "passphrase"
    user_id = cloud.openstack("token", "issue", "-f", "json", cloud=DEMO)["user_id"]
    assert secret["creator_id"] == user_id
    readable = payload(cloud, demo, secret)
    assert readable.status_code == 200 and len(readable.text) == 512  # 384 bytes, base64
    denied = payload(cloud, cloud.token("admin"), secret)
    assert denied.status_code == 403
    assert "Secret payload retrieval attempt not allowed" in denied.text
    assert "tpm: TPM 2.0 (tpm-crb) state created" in console(cloud, server["id"])

    cloud.openstack("server", "stop", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "SHUTOFF")
    cloud.openstack("server", "start", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "ACTIVE")
    cloud.openstack("server", "reboot", "--hard", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "ACTIVE")
    assert "tpm: TPM 2.0 (tpm-crb) state opened" in console(cloud, server["id"])
    assert secret_of(cloud, demo, server["id"])["secret_ref"] == secret["secret_ref"]

    cloud.openstack("server", "delete", "--wait", server["id"], cloud=DEMO)
    assert payload(cloud, demo, secret).status_code == 404


def test_a_server_without_tpm_has_no_secret(cloud, image, demo):
    server = boot(cloud, image, flavor(cloud))
    url = f"http://127.0.0.1:{cloud.config.ports.key_manager}/v1/secrets"
    name = f"vTPM secret for instance {server['id']}"
    listed = httpx.get(url, params={"name": name}, headers={"X-Auth-Token": demo}).json()
    assert listed["total"] == 0
    cloud.openstack("server", "delete", "--wait", server["id"], cloud=DEMO)


def test_live_migration_needs_host_secret_security_and_keeps_the_secret(cloud, image, demo):
    specs = {"hw:tpm_version": "1.2", "hw:tpm_model": "tpm-tis"}
    server = boot(cloud, image, flavor(cloud, **specs))
    before = secret_of(cloud, demo, server["id"])
    # 'user' (the default): the admin who live-migrates cannot read the user's secret.
    stderr = refused(cloud, "server", "migrate", "--live-migration", server["id"])
    assert "400" in stderr and f"Operation 'live-migration' {NOT_SUPPORTED}" in stderr

    # Opting in by a resize to a 'host' flavor, as the user: the same secret.
    host_flavor = flavor(cloud, **specs, **{"hw:tpm_secret_security": "host"})
    cloud.openstack("server", "resize", "--flavor", host_flavor, "--wait", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "VERIFY_RESIZE")
    assert secret_of(cloud, demo, server["id"])["secret_ref"] == before["secret_ref"]
    cloud.openstack("server", "resize", "confirm", server["id"], cloud=DEMO)
    moved_from = wait_status(cloud, server["id"], "ACTIVE")["OS-EXT-SRV-ATTR:host"]

    cloud.openstack("server", "migrate", "--live-migration", "--wait", server["id"])
    after = wait_status(cloud, server["id"], "ACTIVE")
    assert after["OS-EXT-SRV-ATTR:host"] in HOSTS - {moved_from}
    # The destination opened the moved TPM state with the secret the source handed over.
    assert "tpm: TPM 1.2 (tpm-tis) state opened" in console(cloud, server["id"])
    assert secret_of(cloud, demo, server["id"])["secret_ref"] == before["secret_ref"]
    assert payload(cloud, cloud.token("admin"), before).status_code == 403
    cloud.openstack("server", "delete", "--wait", server["id"], cloud=DEMO)


def test_resize_revert_keeps_the_secret_and_cold_migration_by_the_user(cloud, image, demo):
    specs = {"hw:tpm_version": "2.0"}
    server = boot(cloud, image, flavor(cloud, **specs))
    before = secret_of(cloud, demo, server["id"])["secret_ref"]
    bigger = flavor(cloud, **specs, **{"hw:tpm_secret_security": "host"})
    cloud.openstack("server", "resize", "--flavor", bigger, "--wait", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "VERIFY_RESIZE")
    cloud.openstack("server", "resize", "revert", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "ACTIVE")
    assert secret_of(cloud, demo, server["id"])["secret_ref"] == before
    cloud.openstack("server", "stop", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "SHUTOFF")
    cloud.openstack("server", "start", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "ACTIVE")
    assert "state cannot be decrypted" not in console(cloud, server["id"])
    cloud.openstack("server", "delete", "--wait", server["id"], cloud=DEMO)


def test_shelve_rescue_rebuild_evacuate_are_refused(cloud, image):
    server = boot(cloud, image, flavor(cloud, **{"hw:tpm_version": "2.0"}))
    for argv, operation in (
        (("server", "shelve", server["id"]), "shelve"),
        (("server", "rescue", server["id"]), "rescue"),
        (("server", "rebuild", "--image", image, server["id"]), "rebuild"),
    ):
        stderr = refused(cloud, *argv, cloud=DEMO)
        assert f"Operation '{operation}' {NOT_SUPPORTED} ({server['id']})" in stderr, stderr
    assert wait_status(cloud, server["id"], "ACTIVE")["OS-EXT-STS:task_state"] is None
    cloud.openstack("server", "delete", "--wait", server["id"], cloud=DEMO)


def test_bad_tpm_requests_are_refused_at_create(cloud, image, tmp_path):
    crb_on_1_2 = flavor(cloud, **{"hw:tpm_version": "1.2", "hw:tpm_model": "tpm-crb"})
    stderr = refused(
        cloud, "server", "create", "--image", image, "--flavor", crb_on_1_2, "--nic", "none",
        _name("bad"), cloud=DEMO,
    )  # fmt: skip
    assert "TPM model CRB is only valid with TPM version 2.0." in stderr

    path = tmp_path / "tpm.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True)
    tpm_image = cloud.openstack(
        "image", "create", _name("tpm-img"), "--file", str(path), "--disk-format", "qcow2",
        "--container-format", "bare", "--public", "--property", "hw_tpm_version=1.2",
        "-f", "json",
    )  # fmt: skip
    two = flavor(cloud, **{"hw:tpm_version": "2.0"})
    stderr = refused(
        cloud, "server", "create", "--image", tpm_image["id"], "--flavor", two, "--nic",
        "none", _name("bad"), cloud=DEMO,
    )  # fmt: skip
    assert (
        f"Flavor {two} has hw:tpm_version extra spec explicitly set to 2.0, conflicting "
        f"with image {tpm_image['name']} which has hw_tpm_version explicitly set to 1.2."
    ) in stderr

    # The image alone asks for a TPM: the server has one.
    server = boot(cloud, tpm_image["id"], flavor(cloud))
    assert "tpm: TPM 1.2 (tpm-tis) state created" in console(cloud, server["id"])
    cloud.openstack("server", "delete", "--wait", server["id"], cloud=DEMO)


def test_hosts_report_the_tpm_traits(cloud):
    async def traits() -> dict[str, list[str]]:
        from sqlalchemy import select

        from cumulo.compute.models import ComputeNode

        db = cloud.cloud.compute.service.db
        async with db.read() as s:
            return dict((await s.execute(select(ComputeNode.host, ComputeNode.traits))).all())

    reported = cloud.run_async(traits())
    assert set(reported) == HOSTS
    for host_traits in reported.values():
        assert {"COMPUTE_SECURITY_TPM_1_2", "COMPUTE_SECURITY_TPM_2_0"} <= set(host_traits)
        assert "COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST" in host_traits
        assert "COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT" in host_traits


def test_a_user_tpm_after_a_host_restart_starts_only_with_the_users_token(cloud, image, demo):
    """Nova's `user` policy: the host holds the passphrase in memory only; after a restart
    a hard reboot by an admin (who cannot read the user's secret) fails, the user's own
    start reads it again from the Key Manager."""
    server = boot(cloud, image, flavor(cloud, **{"hw:tpm_version": "2.0"}))
    host = cloud.openstack("server", "show", server["id"], "-f", "json")["OS-EXT-SRV-ATTR:host"]
    manager = next(m for m in cloud.cloud.compute.managers if m.host == host)
    cloud.openstack("server", "stop", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "SHUTOFF")
    manager.driver.forget_vtpm_passphrases()  # what a restart of the host does

    cloud.openstack("server", "reboot", "--hard", server["id"])  # the admin
    request = cloud.openstack("server", "event", "list", server["id"], "-f", "json")[0]
    assert request["Action"] == "reboot"
    deadline = time.monotonic() + 30
    while True:
        events = cloud.openstack(
            "--os-compute-api-version", "2.84", "server", "event", "show", server["id"],
            request["Request ID"], "-f", "json",
        )["events"]  # fmt: skip
        details = " ".join(e.get("details") or "" for e in events)
        if "Secret payload retrieval attempt not allowed" in details:
            break
        assert time.monotonic() < deadline, events
        time.sleep(0.3)
    assert wait_status(cloud, server["id"], "SHUTOFF")["OS-EXT-STS:power_state"] != "Running"

    cloud.openstack("server", "start", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "ACTIVE")
    assert "tpm: TPM 2.0 (tpm-tis) state opened" in console(cloud, server["id"])
    cloud.openstack("server", "delete", "--wait", server["id"], cloud=DEMO)


def test_a_server_deleted_while_its_host_is_down_takes_its_secret_along(cloud, image, demo):
    server = boot(cloud, image, flavor(cloud, **{"hw:tpm_version": "1.2"}))
    secret = secret_of(cloud, demo, server["id"])
    host = cloud.openstack("server", "show", server["id"], "-f", "json")["OS-EXT-SRV-ATTR:host"]
    service = ("--os-compute-api-version", "2.53", "compute", "service", "set")
    cloud.openstack(*service, "--down", host, "cumulo-compute")
    try:
        # Deleted by the API itself (Nova's local delete), with the user's token.
        cloud.openstack("server", "delete", "--wait", server["id"], cloud=DEMO)
    finally:
        cloud.openstack(*service, "--up", host, "cumulo-compute")
    assert payload(cloud, demo, secret).status_code == 404


def test_a_deployment_tpm_secret_is_the_service_users(cloud, image, demo):
    """Nova's `deployment` policy: the secret is made, read and deleted with the cloud's
    service user's token, in its project: neither the owner nor an admin reads it, and
    after a host restart anyone's start opens the TPM again. Resizing to another policy
    and live migration are refused as Nova refuses them; a confirmed resize to a flavor
    without a TPM deletes the secret (as the service user)."""
    specs = {"hw:tpm_version": "2.0", "hw:tpm_secret_security": "deployment"}
    server = boot(cloud, image, flavor(cloud, **specs))
    service = cloud.token("cumulo", cloud.config.identity.service_password, "service")
    secret = secret_of(cloud, service, server["id"])
    url = f"http://127.0.0.1:{cloud.config.ports.key_manager}/v1/secrets"
    name = f"vTPM secret for instance {server['id']}"
    listed = httpx.get(url, params={"name": name}, headers={"X-Auth-Token": demo}).json()
    assert listed["total"] == 0  # not in the owner's project
    assert payload(cloud, service, secret).status_code == 200
    assert payload(cloud, demo, secret).status_code in (403, 404)
    assert payload(cloud, cloud.token("admin"), secret).status_code in (403, 404)
    assert "tpm: TPM 2.0 (tpm-tis) state created" in console(cloud, server["id"])

    host = cloud.openstack("server", "show", server["id"], "-f", "json")["OS-EXT-SRV-ATTR:host"]
    manager = next(m for m in cloud.cloud.compute.managers if m.host == host)
    cloud.openstack("server", "stop", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "SHUTOFF")
    manager.driver.forget_vtpm_passphrases()  # what a restart of the host does
    cloud.openstack("server", "reboot", "--hard", server["id"])  # the admin: it works
    wait_status(cloud, server["id"], "ACTIVE")
    assert "tpm: TPM 2.0 (tpm-tis) state opened" in console(cloud, server["id"])

    user_tpm = flavor(cloud, **{"hw:tpm_version": "2.0"})
    stderr = refused(cloud, "server", "resize", "--flavor", user_tpm, server["id"], cloud=DEMO)
    assert "400" in stderr and "Resize between 'deployment' TPM secret security" in stderr
    stderr = refused(cloud, "server", "migrate", "--live-migration", server["id"])
    assert "400" in stderr and f"Operation 'live-migration' {NOT_SUPPORTED}" in stderr

    no_tpm = flavor(cloud)
    cloud.openstack("server", "resize", "--flavor", no_tpm, "--wait", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "VERIFY_RESIZE")
    assert payload(cloud, service, secret).status_code == 200  # a revert needs it
    cloud.openstack("server", "resize", "confirm", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "ACTIVE")
    assert payload(cloud, service, secret).status_code == 404
    cloud.openstack("server", "delete", "--wait", server["id"], cloud=DEMO)


def test_a_deployment_tpm_secret_goes_with_its_server(cloud, image, demo):
    specs = {"hw:tpm_version": "1.2", "hw:tpm_secret_security": "deployment"}
    server = boot(cloud, image, flavor(cloud, **specs))
    service = cloud.token("cumulo", cloud.config.identity.service_password, "service")
    secret = secret_of(cloud, service, server["id"])
    cloud.openstack("server", "delete", "--wait", server["id"], cloud=DEMO)
    assert payload(cloud, service, secret).status_code == 404


def test_a_confirmed_resize_to_a_flavor_without_tpm_deletes_the_users_secret(cloud, image, demo):
    server = boot(cloud, image, flavor(cloud, **{"hw:tpm_version": "2.0"}))
    secret = secret_of(cloud, demo, server["id"])
    cloud.openstack(
        "server", "resize", "--flavor", flavor(cloud), "--wait", server["id"], cloud=DEMO
    )
    wait_status(cloud, server["id"], "VERIFY_RESIZE")
    cloud.openstack("server", "resize", "confirm", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "ACTIVE")
    assert payload(cloud, demo, secret).status_code == 404
    cloud.openstack("server", "delete", "--wait", server["id"], cloud=DEMO)


def test_a_reverted_resize_to_a_tpm_flavor_deletes_the_secret_it_made(cloud, image, demo):
    """Nova's revert_resize: the TPM the new flavor gave goes with it, secret included."""
    server = boot(cloud, image, flavor(cloud))
    with_tpm = flavor(cloud, **{"hw:tpm_version": "2.0"})
    cloud.openstack("server", "resize", "--flavor", with_tpm, "--wait", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "VERIFY_RESIZE")
    secret = secret_of(cloud, demo, server["id"])
    assert payload(cloud, demo, secret).status_code == 200
    cloud.openstack("server", "resize", "revert", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "ACTIVE")
    assert payload(cloud, demo, secret).status_code == 404
    # Resized to it again and confirmed, the server keeps a TPM with a new secret (recorded
    # on the server by the host it moved to: its delete takes the secret along).
    cloud.openstack("server", "resize", "--flavor", with_tpm, "--wait", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "VERIFY_RESIZE")
    again = secret_of(cloud, demo, server["id"])
    assert again["secret_ref"] != secret["secret_ref"]
    cloud.openstack("server", "resize", "confirm", server["id"], cloud=DEMO)
    wait_status(cloud, server["id"], "ACTIVE")
    cloud.openstack("server", "delete", "--wait", server["id"], cloud=DEMO)
    assert payload(cloud, demo, again).status_code == 404
