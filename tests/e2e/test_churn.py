"""Churn on a real cloud: projects at once build a tenant (network, subnet, router with
the external gateway, security group, volume, servers, floating IP) and tear it down,
round after round. Most servers run on fake hosts, one QEMU guest per round on the
real host (linuxbridge data plane). Afterwards nothing is left: no failed build, no
server or volume, and the host holds what it held before (namespaces, links, dnsmasq
and QEMU processes, NBD exports, files under the state dir, database rows).

A small run, sized for CI on 2 cores; bench/churn.py does the long ones.
"""

from __future__ import annotations

import subprocess

import pytest

from cumulo.image.demo import register_for_cloud
from tests.churn import Workload, churn, footprint, leaks
from tests.cloudrunner import CloudRunner, configure_guest_state_dir, stop_guest_cloud
from tests.conftest import require_real_guests, skip_or_fail

pytestmark = pytest.mark.e2e

ROUNDS, PROJECTS = 2, 4


@pytest.fixture(scope="module")
def churn_cloud(tmp_path_factory):
    """The QEMU host `e2e-churn` and two fake hosts; `tiny` boots on QEMU only, the
    image `churn-fake` on the fake hosts only (their hypervisor_type)."""
    require_real_guests()
    state = tmp_path_factory.mktemp("churn")
    configure_guest_state_dir(state, "e2e-churn", fake_hosts=2)
    runner = CloudRunner(state).start(timeout=120)
    try:
        try:
            runner.run_async(register_for_cloud(runner.cloud))
        except Exception as exc:  # noqa: BLE001 - no kernel package to be had here
            skip_or_fail(f"the demo image could not be registered: {exc}")
        runner.openstack("image", "set", "--property", "hypervisor_type=qemu", "tiny")
        root = tmp_path_factory.mktemp("churn-work") / "root.qcow2"
        subprocess.run(["qemu-img", "create", "-f", "qcow2", str(root), "16M"], check=True)
        runner.openstack(
            "image", "create", "churn-fake", "--file", str(root), "--disk-format", "qcow2",
            "--public", "--property", "hypervisor_type=fake",
        )  # fmt: skip
        yield runner
    finally:
        stop_guest_cloud(runner)


def test_projects_churning_at_once_leave_no_failed_build_and_nothing_behind(churn_cloud):
    cloud = churn_cloud
    admin = cloud.sdk()
    workload = Workload(image="churn-fake", guest_image="tiny", servers=3, guests=1)
    # A first round warms what is kept on purpose (the hosts' image caches).
    warm = churn(admin, workload, rounds=1, projects=1)
    assert not warm.failures, warm.failures
    before = footprint(cloud.state_dir)

    result = churn(admin, workload, rounds=ROUNDS, projects=PROJECTS)

    assert not result.failures, "\n".join(result.failures)
    assert len(result.seconds["boot"]) == ROUNDS * PROJECTS * workload.servers
    assert len(result.seconds["boot (qemu)"]) == ROUNDS * workload.guests
    assert cloud.openstack("server", "list", "--all-projects", "-f", "json") == []
    assert cloud.openstack("volume", "list", "--all-projects", "-f", "json") == []
    cloud.run_async(cloud.cloud.network.agent.wait_idle(30))
    assert leaks(before, footprint(cloud.state_dir)) == {}
