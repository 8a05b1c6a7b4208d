from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from tests import client_polls
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.databases import ServerUnavailable, fresh_database

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    # openstacksdk warns about its own future removals on every call; they are not ours.
    config.addinivalue_line("filterwarnings", "ignore::openstack.warnings._RemovedInSDKWarning")
    client_polls.shorten_sdk()  # the SDK's waits in the tests poll every 0.5 s, not 2 s


def skip_or_fail(reason: str) -> None:
    """Under CI a missing service fails the run; on a developer machine the test is skipped."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


GUEST_TOOLS = ("qemu-system-x86_64", "qemu-img", "ip", "nft", "dnsmasq")


def require_real_guests() -> None:
    """Real guests need root (namespaces, taps) and QEMU and the data plane's tools."""
    import shutil

    missing = [t for t in GUEST_TOOLS if not shutil.which(t)]
    if missing or os.geteuid() != 0:
        skip_or_fail(f"real guests need root and {', '.join(GUEST_TOOLS)} (missing: {missing})")


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory):
    """One all-in-one cloud shared by the functional tests.

    SQLite by default; CUMULO_TEST_DATABASE=postgresql or mariadb runs the same tests
    on a fresh database of that server.
    """
    state_dir: Path = tmp_path_factory.mktemp("cumulo-state")
    engine = os.environ.get("CUMULO_TEST_DATABASE", "")
    with contextlib.ExitStack() as stack:
        database = None
        if engine:
            try:
                database = stack.enter_context(fresh_database(engine))
            except ServerUnavailable as exc:
                skip_or_fail(str(exc))
        configure_state_dir(state_dir, database=database)
        runner = CloudRunner(state_dir).start()
        stack.callback(runner.stop)
        yield runner


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def each_database_url(request: pytest.FixtureRequest, tmp_path: Path):
    """The URL of a fresh database of each engine in turn: a SQLite file of the test's
    own, then a new database on the PostgreSQL and the MariaDB server."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    try:
        with fresh_database(request.param) as url:
            yield url
    except ServerUnavailable as exc:
        skip_or_fail(f"{request.param} is not reachable: {exc}")


@pytest.fixture(scope="session")
def admin_token(cloud: CloudRunner) -> str:
    return cloud.token("admin")


@pytest.fixture
def admin_http(cloud: CloudRunner, admin_token: str):
    with cloud.http(admin_token) as client:
        yield client
