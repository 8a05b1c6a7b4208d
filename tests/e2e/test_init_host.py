"""`cumulo init` as root on a host with QEMU and the data plane's tools: it makes the
state dir, databases, users, catalog and the `public`/`private` networks, and leaves
nothing running on the host (no namespace, dnsmasq, QEMU or NBD export); `cumulo up`
builds the data plane.
"""

from __future__ import annotations

import subprocess

import pytest

from cumulo.network.dataplane.linuxbridge import REGISTRY, scope_of
from tests.churn import footprint
from tests.cloudrunner import VENV_BIN, configure_guest_state_dir
from tests.conftest import require_real_guests

pytestmark = pytest.mark.e2e


def test_cumulo_init_starts_no_data_plane_guest_or_storage_on_the_host(tmp_path):
    require_real_guests()
    state = tmp_path / "state"
    configure_guest_state_dir(state, "e2e-init")
    proc = subprocess.run(
        [str(VENV_BIN / "cumulo"), "init", "--state-dir", str(state)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    held = footprint(state)
    assert held["namespaces"] == {} and held["links"] == {}
    assert held["processes"] == {}
    assert not (state / "network" / "dhcp").exists()
    # Its network agent never ran (its first apply registers the state dir's scope).
    assert not (REGISTRY / scope_of(state)).exists()
    # What init is for is there: the networks a first `cumulo up` wires.
    assert held["rows"]["network.network"] == 2
