"""The life of a cloud as its operator sees it: init, up, restart, key rotation, Ctrl-C.

These tests run the real `cumulo` console script and the real `openstack` CLI, each on
a private state dir (not the shared `cloud` fixture), since they stop and start clouds.
"""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.fernet import Fernet

from cumulo.common.config import load_config, write_config
from tests.cloudrunner import VENV_BIN, CloudRunner, configure_state_dir

CUMULO = str(VENV_BIN / "cumulo")


def _clean_env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "CUMULO_"))}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return env


def _cumulo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CUMULO, *args], capture_output=True, text=True, env=_clean_env(), timeout=timeout
    )


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Served:
    """`cumulo up` running as a subprocess on a state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.runner = CloudRunner(state_dir)  # for its client helpers only; never started
        self.proc = subprocess.Popen(
            [CUMULO, "up", "--state-dir", str(state_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_clean_env(),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cumulo up exited: {self.proc.communicate()[1]}")
            try:
                if httpx.get(self.runner.auth_url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("cumulo up did not answer within 60 s")

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: SIGINT, then the exit code and what it printed on stderr."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


def _state_dir(tmp_path: Path, **identity: float) -> Path:
    state_dir = tmp_path / "state"
    configure_state_dir(state_dir)
    if identity:
        config = load_config(state_dir)
        for key, value in identity.items():
            setattr(config.identity, key, value)
        write_config(state_dir, config)
    return state_dir


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # No token cache: every validation below really decrypts the token.
    served = Served(_state_dir(tmp_path_factory.mktemp("served"), cache_time=0))
    yield served
    served.stop()


def test_init_creates_config_client_files_and_private_keys(tmp_path: Path):
    state_dir = tmp_path / "fresh"
    proc = _cumulo("init", "--state-dir", str(state_dir))
    assert proc.returncode == 0, proc.stderr
    assert "clouds.yaml" in proc.stderr and "openrc" in proc.stderr

    config = tomllib.loads((state_dir / "cumulo.toml").read_text())
    assert config["identity"]["admin_password"] and config["identity"]["demo_password"]
    assert config["ports"]["identity"] == 5000

    clouds = yaml.safe_load((state_dir / "clouds.yaml").read_text())["clouds"]
    assert set(clouds) == {"cumulo", "cumulo-demo"}
    assert clouds["cumulo"]["auth"]["username"] == "admin"
    assert clouds["cumulo-demo"]["auth"]["project_name"] == "demo"
    assert clouds["cumulo"]["auth"]["auth_url"] == "http://127.0.0.1:5000/v3"

    assert "OS_USERNAME=admin" in (state_dir / "openrc").read_text()
    assert "OS_USERNAME=demo" in (state_dir / "openrc-demo").read_text()

    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    secrets = ["cumulo.toml", "clouds.yaml", "openrc", "openrc-demo"]
    for name in ("fernet-keys", "credential-keys"):
        keys = sorted(p.name for p in (state_dir / name).iterdir())
        assert keys == ["0", "1"]
        secrets += [f"{name}/{k}" for k in keys]
    for name in secrets:
        assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600, name

    # Running it again keeps the passwords and keys.
    key = (state_dir / "fernet-keys" / "1").read_bytes()
    assert _cumulo("init", "--state-dir", str(state_dir)).returncode == 0
    again = tomllib.loads((state_dir / "cumulo.toml").read_text())
    assert again["identity"]["admin_password"] == config["identity"]["admin_password"]
    assert (state_dir / "fernet-keys" / "1").read_bytes() == key


def test_restart_keeps_users_projects_and_valid_tokens(tmp_path: Path):
    state_dir = _state_dir(tmp_path)
    suffix = uuid.uuid4().hex[:8]
    runner = CloudRunner(state_dir).start()
    try:
        conn = runner.sdk()
        project = conn.identity.create_project(name=f"keep-{suffix}", domain_id="default")
        domain = conn.identity.create_domain(name=f"keep-dom-{suffix}")
        bob = conn.identity.create_user(
            name=f"bob-{suffix}", password="bobs-secret", domain_id="default"
        )
        member = conn.identity.find_role("member")
        conn.identity.assign_project_role_to_user(project, bob, member)
        users = {u.name for u in conn.identity.users()}
        conn.close()
        demo_token = runner.token("demo", project="demo")
        admin_token = runner.token("admin")
        bob_token = runner.token(bob.name, "bobs-secret", project=project.name)
    finally:
        runner.stop()

    runner = CloudRunner(state_dir).start()
    try:
        for token in (demo_token, admin_token, bob_token):
            with runner.http(token) as client:
                assert client.get("/v3/auth/projects").status_code == 200
        with runner.http(admin_token) as admin:
            r = admin.get(f"/v3/projects/{project.id}")
            assert r.status_code == 200 and r.json()["project"]["name"] == f"keep-{suffix}"
            assert admin.get(f"/v3/domains/{domain.id}").status_code == 200
            after = {u["name"] for u in admin.get("/v3/users").json()["users"]}
            assert after == users and {"admin", "demo", bob.name} <= after
        # Everyone still logs in with their password (the bootstrap ones from the config).
        assert runner.token(bob.name, "bobs-secret", project=project.name)
        assert runner.token("demo", project="demo") and runner.token("admin")
    finally:
        runner.stop()


def test_second_up_on_the_same_state_dir_is_refused(served: Served):
    proc = _cumulo("up", "--state-dir", str(served.state_dir), timeout=60)
    assert proc.returncode == 1
    assert "already running" in proc.stderr
    assert str(served.proc.pid) in proc.stderr
    # The first one is unharmed.
    assert httpx.get(served.runner.auth_url).status_code == 200


def test_sourcing_openrc_demo_gives_a_working_openstack_cli(served: Served):
    script = f"source {served.state_dir / 'openrc-demo'} && openstack token issue -f json"
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=_clean_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    token = yaml.safe_load(proc.stdout)
    assert token["id"] and token["project_id"]
    with served.runner.http(token["id"]) as demo:
        r = demo.get("/v3/auth/projects")
    assert [p["name"] for p in r.json()["projects"]] == ["demo"]


def test_rotating_keys_while_running_keeps_old_tokens_and_signs_new_ones(served: Served):
    runner = served.runner
    old = runner.token("demo", project="demo")
    proc = _cumulo("identity", "rotate-keys", "--state-dir", str(served.state_dir))
    assert proc.returncode == 0, proc.stderr
    keys = served.state_dir / "fernet-keys"
    primary = max(int(p.name) for p in keys.iterdir() if p.name.isdigit())
    assert f"key {primary} is now primary" in proc.stderr
    time.sleep(1.2)  # the server looks for new keys once a second

    new = runner.token("demo", project="demo")
    for token in (old, new):
        with runner.http(token) as client:
            assert client.get("/v3/auth/projects").status_code == 200
    # The new token is encrypted with the new primary key.
    fernet = Fernet((keys / str(primary)).read_bytes().strip())
    fernet.decrypt((new + "=" * (-len(new) % 4)).encode())


def test_ctrl_c_stops_cleanly_and_frees_the_ports(tmp_path: Path):
    served = Served(_state_dir(tmp_path))
    port = load_config(served.state_dir).ports.identity
    assert not _port_is_free(port)
    code, err = served.interrupt()
    assert code == 0, err
    assert "cumulo stopped." in err
    assert "Traceback" not in err
    assert _port_is_free(port)
    # The lock is released too: the cloud starts again on the same state dir.
    Served(served.state_dir).stop()
