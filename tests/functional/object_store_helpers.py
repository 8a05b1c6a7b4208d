"""What the object store's functional tests share: a cloud with two storage policies
(`gold` 3 replicas, the default; `bronze` 2 replicas; `old` deprecated), and the
`swift` CLI and raw HTTP against it."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from cumulo.common.config import StoragePolicyConfig, load_config, write_config
from tests.cloudrunner import VENV_BIN, CloudRunner, configure_state_dir

INFO_ADMIN_KEY = "info-admin-secret"  # signs admin /info requests


def start_policy_cloud(state: Path) -> CloudRunner:
    configure_state_dir(state)
    config = load_config(state)
    config.object_store.policies = [
        StoragePolicyConfig(index=0, name="gold", default=True, replicas=3),
        StoragePolicyConfig(index=1, name="bronze", replicas=2),
        StoragePolicyConfig(index=2, name="old", deprecated=True, replicas=2),
    ]
    # Daemons run when a test asks (run_once), not behind its back.
    config.object_store.replicator_interval = 0
    config.object_store.auditor_interval = 0
    config.object_store.updater_interval = 0
    config.object_store.expirer_interval = 0
    config.object_store.info_admin_key = INFO_ADMIN_KEY
    write_config(state, config)
    return CloudRunner(state).start()


def policy_cloud_fixture(name: str):
    """A module's own policy cloud (`cloud`), started once for the module."""

    @pytest.fixture(scope="module")
    def cloud(tmp_path_factory):
        runner = start_policy_cloud(tmp_path_factory.mktemp(name))
        yield runner
        runner.stop()

    return cloud


def admin_http_fixture():
    """`http`: the admin's account URL with the admin's token, for the module."""

    @pytest.fixture(scope="module")
    def http(cloud: CloudRunner):
        with account_client(cloud, cloud.token("admin")) as client:
            yield client

    return http


def account_client(cloud: CloudRunner, token: str) -> httpx.Client:
    """An httpx client on the token's account URL (/v1/AUTH_<project>)."""
    return httpx.Client(
        base_url=storage_url(cloud, token), headers={"X-Auth-Token": token}, timeout=60
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def swift_env(cloud: CloudRunner, user: str = "admin") -> dict[str, str]:
    cfg = cloud.config
    env = {k: v for k, v in cloud.env().items() if k not in ("OS_CLOUD", "OS_CLIENT_CONFIG_FILE")}
    env.update(
        OS_AUTH_URL=cloud.auth_url,
        OS_USERNAME=user,
        OS_PASSWORD=cfg.identity.admin_password if user == "admin" else cfg.identity.demo_password,
        OS_PROJECT_NAME=user,
        OS_USER_DOMAIN_NAME="Default",
        OS_PROJECT_DOMAIN_NAME="Default",
        OS_IDENTITY_API_VERSION="3",
        OS_INTERFACE="public",
    )
    return env


def swift(cloud: CloudRunner, *args: str, cwd: Path | None = None, user: str = "admin") -> str:
    """Run the real `swift` CLI (python-swiftclient)."""
    proc = subprocess.run(
        [str(VENV_BIN / "swift"), *args],
        capture_output=True,
        text=True,
        env=swift_env(cloud, user),
        cwd=cwd,
        timeout=300,
    )
    if proc.returncode != 0:
        raise AssertionError(f"swift {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def storage_url(cloud: CloudRunner, token: str) -> str:
    project = httpx.get(
        f"{cloud.auth_url}/auth/tokens",
        headers={"X-Auth-Token": token, "X-Subject-Token": token},
    ).json()["token"]["project"]["id"]
    return f"http://127.0.0.1:{cloud.config.ports.object_store}/v1/AUTH_{project}"


def replica_files(cloud: CloudRunner, policy_index: int = 0, suffix: str = ".data") -> list[Path]:
    devices = cloud.state_dir / "object-store" / "devices"
    kind = "objects" if policy_index == 0 else f"objects-{policy_index}"
    return sorted(devices.glob(f"*/{kind}/*/*/*/*{suffix}"))


def ec2_credentials(cloud: CloudRunner, os_cloud: str = "cumulo-demo") -> dict[str, str]:
    """New EC2 credentials of that clouds.yaml entry's user, as boto3 takes them."""
    made = cloud.openstack("ec2", "credentials", "create", "-f", "json", cloud=os_cloud)
    return {"aws_access_key_id": made["access"], "aws_secret_access_key": made["secret"]}


def s3_client(endpoint: str, keys: dict[str, str]):
    """boto3's S3 client on the object store's port, path-style, no retries."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="RegionOne",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        **keys,
    )
