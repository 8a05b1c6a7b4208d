"""The token caches never outlive a write: revoked, disabled or unassigned is refused at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from cumulo.cloud import Cloud
from cumulo.common.config import CumuloConfig, write_config
from cumulo.identity.core import Identity, InvalidToken
from cumulo.identity.models import Assignment, Project, User
from cumulo.identity.tokens import SCOPE_PROJECT


@pytest.fixture
async def identity(tmp_path: Path) -> AsyncIterator[Identity]:
    config = CumuloConfig()
    config.identity.bcrypt_rounds = 4
    # Identity is what is tested: no data plane on the host, no real guests.
    config.network.driver = "noop"
    config.compute.driver = "fake"
    write_config(tmp_path, config)
    cloud = await Cloud.open(tmp_path)
    assert cloud.identity is not None
    yield cloud.identity
    await cloud.close()


async def demo_token(identity: Identity) -> tuple[str, str, str]:
    async with identity.read() as s:
        user = await s.scalar(select(User).where(User.name == "demo"))
        project = await s.scalar(select(Project).where(Project.name == "demo"))
    token, _ = await identity.issue_token(
        user.id, ("password",), SCOPE_PROJECT, project.id, include_catalog=False
    )
    await identity.validate(token)
    return token, user.id, project.id


async def test_a_cached_token_of_a_disabled_user_is_refused_at_once(identity: Identity):
    token, user_id, _ = await demo_token(identity)
    async with identity.write() as s:
        await s.execute(update(User).where(User.id == user_id).values(enabled=False))
    with pytest.raises(InvalidToken):
        await identity.validate(token)


async def test_removing_the_last_role_refuses_the_token_and_new_tokens(identity: Identity):
    token, user_id, project_id = await demo_token(identity)
    async with identity.write() as s:
        await s.execute(
            delete(Assignment).where(
                Assignment.actor_id == user_id, Assignment.target_id == project_id
            )
        )
    with pytest.raises(InvalidToken, match="no role"):
        await identity.validate(token)
    with pytest.raises(InvalidToken, match="no role"):
        await identity.issue_token(user_id, ("token",), SCOPE_PROJECT, project_id)


async def test_a_revoked_token_is_refused_while_its_siblings_stay_valid(identity: Identity):
    token, user_id, project_id = await demo_token(identity)
    sibling, _ = await identity.issue_token(user_id, ("password",), SCOPE_PROJECT, project_id)
    payload, _ = await identity.validate(token)
    await identity.revoke(payload)
    with pytest.raises(InvalidToken, match="revoked"):
        await identity.validate(token)
    _, body = await identity.validate(sibling)
    assert body["project"]["id"] == project_id


async def test_a_read_that_overlaps_a_write_is_not_kept(
    identity: Identity, monkeypatch: pytest.MonkeyPatch
):
    """A validation that read the user before a disable committed answers with what it
    read, but what it read is not cached: the next validation sees the write."""
    token, user_id, _ = await demo_token(identity)
    identity.invalidate()  # nothing cached: the next validation reads the database
    has_read, may_finish = asyncio.Event(), asyncio.Event()
    read_scope = identity._read_scope

    async def slow_read_scope(session, payload):
        parts = await read_scope(session, payload)
        has_read.set()
        await may_finish.wait()
        return parts

    monkeypatch.setattr(identity, "_read_scope", slow_read_scope)
    in_flight = asyncio.create_task(identity.validate(token))
    await has_read.wait()
    async with identity.write() as s:
        await s.execute(update(User).where(User.id == user_id).values(enabled=False))
    may_finish.set()
    await in_flight
    with pytest.raises(InvalidToken):
        await identity.validate(token)


async def test_memoized_values_last_until_the_next_write(identity: Identity):
    calls = []

    async def compute() -> int:
        calls.append(1)
        return len(calls)

    assert await identity.memoize("answer", compute) == 1
    assert await identity.memoize("answer", compute) == 1
    async with identity.write():
        pass
    assert await identity.memoize("answer", compute) == 2
