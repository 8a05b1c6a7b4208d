"""`cumulo db check` / `cumulo db upgrade` on SQLite, PostgreSQL and MariaDB: schemas left
at the revision before the newest (as the previous release made them) are found behind,
upgraded, and serve a cloud afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory

from cumulo.common.config import database_url, load_config
from cumulo.common.db import Database, alembic_config
from cumulo.operations.database import SERVICES
from tests.cloudrunner import CloudRunner, configure_state_dir, reserve_fresh_ports
from tests.conftest import skip_or_fail
from tests.databases import SERVERS, ServerUnavailable, fresh_database
from tests.functional.test_identity_lifecycle import _cumulo

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", *sorted(SERVERS)])
def state_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    if request.param == "sqlite":
        configure_state_dir(tmp_path)
        yield tmp_path
        return
    try:
        with fresh_database(request.param) as url:
            configure_state_dir(tmp_path, database=url)
            yield tmp_path
    except ServerUnavailable as exc:
        skip_or_fail(f"{request.param} server not reachable: {exc}")


def _previous_revision(service: str) -> str | None:
    script = ScriptDirectory.from_config(alembic_config(service))
    return script.get_revision(script.get_current_head()).down_revision


async def _make_previous_release_schemas(state_dir: Path) -> dict[str, str | None]:
    """Each service's schema at the revision before its newest (none for one-revision ones)."""
    config = load_config(state_dir)
    made = {}
    for service in SERVICES:
        previous = _previous_revision(service)
        made[service] = previous
        if previous is None:
            continue
        db = Database(database_url(config, state_dir, service), service)
        try:
            if not db.is_sqlite:
                await db._create_database()
            async with db.engine.begin() as conn:
                await conn.run_sync(
                    lambda sync, s=service, r=previous: command.upgrade(alembic_config(s, sync), r)
                )
        finally:
            await db.dispose()
    return made


async def test_db_check_finds_old_schemas_and_db_upgrade_brings_them_to_head(state_dir: Path):
    made = await _make_previous_release_schemas(state_dir)
    assert any(made.values()), "no service has two revisions to upgrade between"

    before = _cumulo("db", "check", "--state-dir", str(state_dir))
    assert before.returncode == 1, before.stderr
    for service, previous in made.items():
        line = next(x for x in before.stderr.splitlines() if x.split()[:1] == [service])
        assert ("not created" if previous is None else f"at {previous},") in line

    upgraded = _cumulo("db", "upgrade", "--state-dir", str(state_dir))
    assert upgraded.returncode == 0, upgraded.stderr
    after = _cumulo("db", "check", "--state-dir", str(state_dir))
    assert after.returncode == 0, after.stderr
    assert after.stderr.count("up to date") == len(SERVICES)

    reserve_fresh_ports(state_dir)  # those of configure_state_dir may be taken by now
    runner = CloudRunner(state_dir).start()
    try:
        assert runner.openstack("token", "issue", "-f", "json")["id"]
        assert runner.openstack("network", "list", "-f", "json")
    finally:
        runner.stop()
