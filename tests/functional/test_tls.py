"""`cumulo up --tls`: every API and the console proxy over HTTPS with a CA cumulo makes,
clouds.yaml and openrc pointing the clients at it, and the CLI working through it."""

from __future__ import annotations

import os
import signal
import ssl
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from cumulo.common.config import load_config
from tests.cloudrunner import VENV_BIN, CloudRunner, configure_state_dir
from tests.functional.test_identity_lifecycle import _clean_env


@pytest.fixture(scope="module")
def tls_cloud(tmp_path_factory):
    state = tmp_path_factory.mktemp("tls-cloud")
    configure_state_dir(state)
    up = subprocess.Popen(
        [str(VENV_BIN / "cumulo"), "up", "--tls", "--state-dir", str(state)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_clean_env(),
    )  # fmt: skip
    runner = CloudRunner(state)  # its client helpers only
    deadline = time.monotonic() + 90
    while True:
        assert up.poll() is None, up.stderr.read()
        assert time.monotonic() < deadline, "cumulo up --tls did not answer"
        config = load_config(state)
        if config.tls.ca_file and os.path.exists(config.tls.ca_file):
            try:
                ca = ssl.create_default_context(cafile=config.tls.ca_file)
                if httpx.get(runner.auth_url, verify=ca, timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
        time.sleep(0.3)
    yield runner
    up.send_signal(signal.SIGINT)
    up.wait(timeout=60)


def test_the_cli_works_over_https_with_the_ca_in_clouds_yaml(tls_cloud):
    clouds = yaml.safe_load((tls_cloud.state_dir / "clouds.yaml").read_text())["clouds"]
    cacert = clouds["cumulo"]["cacert"]
    assert clouds["cumulo"]["auth"]["auth_url"].startswith("https://")
    assert f"export OS_CACERT={cacert}" in (tls_cloud.state_dir / "openrc").read_text()
    # Every endpoint of the catalog is https, and the CLI reaches each service through it.
    endpoints = tls_cloud.openstack("endpoint", "list", "-f", "json")
    assert endpoints and all(e["URL"].startswith("https://") for e in endpoints)
    assert tls_cloud.openstack("server", "list", "-f", "json") == []
    assert tls_cloud.openstack("network", "list", "-f", "json")
    assert tls_cloud.openstack("image", "list", "-f", "json") is not None
    assert tls_cloud.openstack("volume", "list", "-f", "json") == []
    # As a user passes it on the command line.
    env = {"OS_CLOUD": "", "OS_CLIENT_CONFIG_FILE": "/nonexistent"}
    auth = clouds["cumulo"]["auth"]
    proc = tls_cloud.openstack(
        "--os-cacert", cacert, "--os-auth-url", auth["auth_url"], "--os-username", "admin",
        "--os-password", auth["password"], "--os-project-name", "admin",
        "--os-user-domain-name", "Default", "--os-project-domain-name", "Default",
        "token", "issue", "-f", "value", "-c", "id", check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_a_client_without_the_ca_is_refused_and_plain_http_gets_nothing(tls_cloud):
    config = tls_cloud.config
    url = f"https://127.0.0.1:{config.ports.compute}/"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)  # the system's CAs do not know cumulo's
    ca = ssl.create_default_context(cafile=config.tls.ca_file)
    assert httpx.get(url, verify=ca, timeout=5).status_code in (200, 300)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{config.ports.identity}/v3", timeout=5)
    # The console proxy too; the metadata service stays HTTP (only the proxies reach it).
    with httpx.Client(verify=ca) as client:
        assert client.get(f"https://127.0.0.1:{config.ports.novncproxy}/").status_code < 500
    assert httpx.get(f"http://127.0.0.1:{config.ports.metadata}/", timeout=5).status_code < 500


def test_the_made_keys_are_private_and_the_certificate_names_the_cloud(tls_cloud):
    from cryptography import x509

    config = tls_cloud.config
    for key in (config.tls.key_file, str(Path(config.tls.ca_file).with_name("ca-key.pem"))):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(Path(config.tls.cert_file).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
