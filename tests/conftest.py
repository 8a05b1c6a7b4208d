from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cloudrunner import CloudRunner, configure_state_dir

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    # openstacksdk warns about its own future removals on every call; they are not ours.
    config.addinivalue_line("filterwarnings", "ignore::openstack.warnings._RemovedInSDKWarning")


def skip_or_fail(reason: str) -> None:
    """Under CI a missing service fails the run; on a developer machine the test is skipped."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory):
    """One all-in-one cloud (SQLite) shared by the functional tests."""
    state_dir: Path = tmp_path_factory.mktemp("cumulo-state")
    configure_state_dir(state_dir)
    runner = CloudRunner(state_dir).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="session")
def admin_token(cloud: CloudRunner) -> str:
    return cloud.token("admin")


@pytest.fixture
def admin_http(cloud: CloudRunner, admin_token: str):
    with cloud.http(admin_token) as client:
        yield client
