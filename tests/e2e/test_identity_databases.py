"""Identity on the distributed-mode databases: PostgreSQL and MariaDB.

Each test creates a fresh, uniquely named database on the local server, points a
whole cloud at it, drives it with the real `openstack` CLI and openstacksdk, then
restarts the cloud on the same database and checks that everything survived.
Without the server the test is skipped (failed under CI).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cumulo.common.db import Database, utcnow
from cumulo.identity.models import (
    USER_PROJECT,
    Assignment,
    Domain,
    Group,
    Project,
    RevocationEvent,
    Role,
    User,
    UserGroupMembership,
)
from tests.cloudrunner import CloudRunner, configure_state_dir
from tests.conftest import skip_or_fail
from tests.databases import SERVERS, ServerUnavailable, fresh_database

pytestmark = pytest.mark.e2e


@pytest.fixture(params=sorted(SERVERS), scope="module")
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the engine's server, dropped afterwards; yields its URL."""
    try:
        with fresh_database(request.param) as url:
            yield url
    except ServerUnavailable as exc:
        skip_or_fail(f"{request.param} server not reachable: {exc}")


async def test_schema_round_trips_every_column_kind(database: str) -> None:
    """JSON, booleans, microsecond DATETIMEs, 4-byte UTF-8, "user"/"group" tables, uniques."""
    db = Database(database, "identity")
    try:
        await db.migrate()
        await db.migrate()  # a second upgrade is a no-op
        suffix = uuid.uuid4().hex[:8]
        stamp = utcnow().replace(microsecond=123456)
        long_name = "\N{CLOUD WITH LIGHTNING}" * 255  # 4 bytes a character, at the limit
        async with db.write() as s:
            s.add(
                Domain(
                    id=f"d-{suffix}",
                    name=f"dom-{suffix}",
                    enabled=False,
                    options={"nested": {"list": [1, 2.5, None, True]}},
                    tags=["a", "\N{SNOWFLAKE}"],
                    extra={},
                )
            )
            await s.flush()
            s.add(
                User(
                    id=f"u-{suffix}",
                    name=long_name,
                    domain_id=f"d-{suffix}",
                    enabled=True,
                    password_created_at=stamp,
                    options={},
                    extra={"email_verified": False},
                )
            )
            s.add(Group(id=f"g-{suffix}", name=f"grp-{suffix}", domain_id=f"d-{suffix}", extra={}))
            s.add(Role(id=f"r-{suffix}", name=f"role-{suffix}", domain_id="", options={}))
            s.add(
                Project(
                    id=f"p-{suffix}",
                    name=f"proj-{suffix}",
                    domain_id=f"d-{suffix}",
                    enabled=False,
                    options={},
                    tags=[],
                    extra={},
                )
            )
            await s.flush()
            s.add(UserGroupMembership(user_id=f"u-{suffix}", group_id=f"g-{suffix}"))
            for inherited in (False, True):
                s.add(
                    Assignment(
                        type=USER_PROJECT,
                        actor_id=f"u-{suffix}",
                        target_id=f"p-{suffix}",
                        role_id=f"r-{suffix}",
                        inherited=inherited,
                    )
                )
            s.add(RevocationEvent(user_id=f"u-{suffix}", issued_before=stamp))

        async with db.read() as s:
            domain = await s.get(Domain, f"d-{suffix}")
            assert domain.enabled is False
            assert domain.options == {"nested": {"list": [1, 2.5, None, True]}}
            assert domain.tags == ["a", "\N{SNOWFLAKE}"]
            user = await s.get(User, f"u-{suffix}")
            assert user.name == long_name and user.enabled is True
            assert user.password_created_at == stamp
            assert user.extra == {"email_verified": False}
            event = await s.scalar(
                select(RevocationEvent).where(RevocationEvent.user_id == f"u-{suffix}")
            )
            assert event.issued_before == stamp  # microseconds kept
            disabled = await s.scalars(
                select(Project.id).where(Project.enabled.is_(False), Project.id == f"p-{suffix}")
            )
            assert disabled.all() == [f"p-{suffix}"]
            inherited = await s.scalars(
                select(Assignment.inherited).where(Assignment.actor_id == f"u-{suffix}")
            )
            assert sorted(inherited.all()) == [False, True]
            members = await s.scalars(
                select(UserGroupMembership.user_id).where(
                    UserGroupMembership.group_id == f"g-{suffix}"
                )
            )
            assert members.all() == [f"u-{suffix}"]

        # Unique (domain_id, name): a second row is refused and nothing is half-written.
        for model, extra in ((User, {"options": {}}), (Group, {}), (Project, {"options": {}})):
            source = f"{'u' if model is User else 'g' if model is Group else 'p'}-{suffix}"
            async with db.read() as s:
                name = (await s.get(model, source)).name
            with pytest.raises(IntegrityError):
                async with db.write() as s:
                    s.add(
                        Domain(
                            id=f"d2-{suffix}-{model.__name__}",
                            name=f"x-{suffix}-{model.__name__}",
                            options={},
                            tags=[],
                            extra={},
                        )
                    )
                    s.add(
                        model(
                            id=f"dup-{suffix}",
                            name=name,
                            domain_id=f"d-{suffix}",
                            extra={},
                            **extra,
                        )
                    )
            async with db.read() as s:
                assert await s.get(Domain, f"d2-{suffix}-{model.__name__}") is None
    finally:
        await db.dispose()


async def test_write_retrying_outlives_a_deadlock(database: str) -> None:
    """Two transactions lock two rows in opposite orders: the server aborts one (on
    MariaDB with its savepoint gone, as the network agents' binding met it); a
    retrying write runs that one again and both changes land."""
    db = Database(database, "identity")
    try:
        await db.migrate()
        suffix = uuid.uuid4().hex[:8]
        ids = [f"dl-a-{suffix}", f"dl-b-{suffix}"]
        async with db.write() as s:
            s.add_all(Domain(id=i, name=i) for i in ids)
        both_locked = asyncio.Barrier(2)
        attempts = {"forward": 0, "backward": 0}

        def writer(name: str, order: list[str]):
            async def work(session) -> None:
                attempts[name] += 1
                row = await session.get(Domain, order[0])
                row.description = f"{row.description or ''}{name};"
                await session.flush()
                if attempts[name] == 1:
                    await both_locked.wait()
                async with session.begin_nested():
                    other = await session.get(Domain, order[1])
                    other.description = f"{other.description or ''}{name};"
                    await session.flush()

            return work

        await asyncio.wait_for(
            asyncio.gather(
                db.write_retrying(writer("forward", ids)),
                db.write_retrying(writer("backward", ids[::-1])),
            ),
            timeout=60,
        )
        assert sorted(attempts.values())[-1] >= 2, attempts  # one of them was the victim
        async with db.read() as s:
            for i in ids:
                description = (await s.get(Domain, i)).description
                assert sorted(description.rstrip(";").split(";")) == ["backward", "forward"]
    finally:
        await db.engine.dispose()


def test_identity_scenario_survives_restart(database: str, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    configure_state_dir(state_dir, database=database)
    suffix = uuid.uuid4().hex[:8]
    runner = CloudRunner(state_dir).start()
    try:
        # A token from the real CLI, validated by the cloud.
        issued = runner.openstack("token", "issue", "-f", "json")
        assert issued["project_id"] and issued["user_id"]

        # Projects: create, list, set, duplicate name, delete.
        name = f"proj-{suffix}"
        created = runner.openstack(
            "project",
            "create",
            name,
            "--description",
            "on " + database.split("+")[0],
            "--tag",
            "e2e",
            "-f",
            "json",
        )
        assert created["name"] == name and created["enabled"] is True
        listed = runner.openstack("project", "list", "-f", "json")
        assert name in {p["Name"] for p in listed}
        runner.openstack("project", "set", name, "--disable", "--description", "changed")
        shown = runner.openstack("project", "show", name, "-f", "json")
        assert shown["enabled"] is False and shown["description"] == "changed"
        assert shown["tags"] == ["e2e"]

        dup = runner.openstack("project", "create", name, check=False)
        assert dup.returncode != 0 and "409" in dup.stderr

        unicode_name = f"n\N{LATIN SMALL LETTER E WITH ACUTE}bula-\N{CLOUD WITH LIGHTNING}-{suffix}"
        runner.openstack("project", "create", unicode_name, "--description", "\N{SNOWFLAKE}" * 3)

        conn = runner.sdk()
        doomed = conn.identity.create_project(name=f"doomed-{suffix}", domain_id="default")
        kept = conn.identity.create_project(name=f"kept-{suffix}", domain_id="default")
        runner.openstack("project", "delete", doomed.id)
        assert conn.identity.find_project(doomed.id) is None

        # Names are unique per domain, not across domains.
        other = conn.identity.create_domain(name=f"dom-{suffix}")
        twin = conn.identity.create_project(name=name, domain_id=other.id)
        assert twin.domain_id == other.id

        # A user with a role, in a group, with a stored (encrypted) credential.
        alice = f"alice-{suffix}"
        runner.openstack(
            "user", "create", alice, "--password", "secret-1", "--project", kept.id, "-f", "json"
        )
        runner.openstack("role", "add", "--user", alice, "--project", kept.id, "member")
        dup_user = runner.openstack("user", "create", alice, "--password", "x", check=False)
        assert dup_user.returncode != 0 and "409" in dup_user.stderr
        alice_id = conn.identity.find_user(alice, domain_id="default").id
        group = conn.identity.create_group(name=f"grp-{suffix}", domain_id="default")
        conn.identity.add_user_to_group(alice_id, group.id)
        credential = conn.identity.create_credential(
            type="totp", user_id=alice_id, blob='{"secret": "\N{SNOWFLAKE}"}'
        )
        alice_token = runner.token(alice, "secret-1", project=kept.name)

        # Revocation: a revoked token is refused, a live one is accepted.
        revoked = runner.token("demo", project="demo")
        survivor = runner.token("demo", project="demo")
        runner.openstack("token", "revoke", revoked)
        with runner.http(revoked) as c:
            assert c.get("/v3/auth/projects").status_code == 401
        # Revoked within the second it was issued: still refused (sub-second timestamps).
        with runner.http(runner.token()) as admin:
            for _ in range(3):
                quick = runner.token("demo", project="demo")
                r = admin.delete("/v3/auth/tokens", headers={"X-Subject-Token": quick})
                assert r.status_code == 204
                assert (
                    admin.get("/v3/auth/tokens", headers={"X-Subject-Token": quick}).status_code
                    == 404
                )
        with runner.http(survivor) as c:
            assert c.get("/v3/auth/projects").status_code == 200
        conn.close()
    finally:
        runner.stop()

    # The same state dir and database: a second start finds everything as it was.
    runner = CloudRunner(state_dir).start()
    try:
        with runner.http(survivor) as c:
            r = c.get("/v3/auth/projects")
            assert r.status_code == 200
            assert [p["name"] for p in r.json()["projects"]] == ["demo"]
        with runner.http(revoked) as c:
            assert c.get("/v3/auth/projects").status_code == 401
        projects = {p["Name"]: p for p in runner.openstack("project", "list", "-f", "json")}
        assert {name, unicode_name, f"kept-{suffix}", "admin", "demo", "service"} <= set(projects)
        assert f"doomed-{suffix}" not in projects
        conn = runner.sdk()
        assert conn.identity.get_project(kept.id).name == f"kept-{suffix}"
        assert conn.identity.find_project(name, domain_id=other.id).id == twin.id
        with runner.http(alice_token) as c:
            assert c.get("/v3/auth/projects").json()["projects"][0]["id"] == kept.id
        assert runner.token(alice, "secret-1", project=kept.name)
        assert [u.id for u in conn.identity.group_users(group)] == [alice_id]
        shown = conn.identity.get_credential(credential.id)
        assert shown.blob == '{"secret": "\N{SNOWFLAKE}"}'
        roles = runner.openstack(
            "role", "assignment", "list", "--user", alice_id, "--names", "-f", "json"
        )
        assert [r["Role"] for r in roles] == ["member"]
        # The bootstrap users still log in with their passwords (no second bootstrap).
        assert runner.token("admin") and runner.token("demo", project="demo")
        with httpx.Client(timeout=30) as anon:
            assert anon.get(runner.auth_url).status_code == 200
        conn.close()
    finally:
        runner.stop()
