"""Fernet tokens: the payload format, key rotation, and expiry as Identity enforces it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from cumulo.cloud import prepare_state_dir
from cumulo.common.config import database_url
from cumulo.common.db import Database
from cumulo.identity.bootstrap import bootstrap
from cumulo.identity.core import Identity, InvalidToken
from cumulo.identity.models import Project, User
from cumulo.identity.tokens import (
    SCOPE_PROJECT,
    KeyRepository,
    TokenFormatter,
    TokenPayload,
    random_audit_id,
)


def _payload(**changes) -> TokenPayload:
    now = time.time()
    base = TokenPayload(
        user_id="0123456789abcdef0123456789abcdef",
        methods=("password", "token"),
        expires_at=now + 3600,
        issued_at=now,
        audit_ids=(random_audit_id(), random_audit_id()),
        scope=SCOPE_PROJECT,
        scope_id="fedcba9876543210fedcba9876543210",
    )
    return replace(base, **changes)


def test_payload_round_trips_through_a_token(tmp_path: Path):
    repo = KeyRepository(tmp_path / "keys")
    repo.initialize()
    formatter = TokenFormatter(repo)
    for payload in (_payload(), _payload(user_id="not-a-uuid", scope_id="default")):
        token = formatter.create(payload)
        assert "=" not in token and len(token) < 255
        assert formatter.parse(token) == payload


def test_key_files_are_private(tmp_path: Path):
    repo = KeyRepository(tmp_path / "keys")
    repo.initialize()
    repo.rotate()
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    for key in (tmp_path / "keys").iterdir():
        assert key.stat().st_mode & 0o777 == 0o600


def test_rotation_keeps_tokens_of_the_previous_keys_until_they_fall_off(tmp_path: Path):
    repo = KeyRepository(tmp_path / "keys", max_active_keys=3)
    repo.initialize()
    old = TokenFormatter(repo).create(_payload())
    repo.rotate()
    assert TokenFormatter(repo).parse(old).user_id == _payload().user_id
    repo.rotate()
    repo.rotate()  # the key that made `old` is now beyond max_active_keys
    with pytest.raises(ValueError):
        TokenFormatter(repo).parse(old)


def test_garbage_and_foreign_tokens_are_refused(tmp_path: Path):
    mine, theirs = KeyRepository(tmp_path / "a"), KeyRepository(tmp_path / "b")
    mine.initialize()
    theirs.initialize()
    foreign = TokenFormatter(theirs).create(_payload())
    formatter = TokenFormatter(mine)
    for bad in ("", "x" * 2000, "not a token", foreign, foreign[:-4]):
        with pytest.raises(ValueError):
            formatter.parse(bad)


# -- expiry, enforced by Identity on a real (SQLite) database ---------------------------


@pytest.fixture
async def identity(tmp_path: Path) -> AsyncIterator[Identity]:
    config = prepare_state_dir(tmp_path)
    config.identity.bcrypt_rounds = 4
    db = Database(database_url(config, tmp_path, "identity"), "identity")
    await db.migrate()
    ident = Identity(config, tmp_path, db)
    await bootstrap(ident, config)
    yield ident
    await db.dispose()


async def _demo_payload(identity: Identity, **changes) -> TokenPayload:
    async with identity.read() as s:
        user = await s.scalar(select(User).where(User.name == "demo"))
        project = await s.scalar(select(Project).where(Project.name == "demo"))
    return _payload(user_id=user.id, scope_id=project.id, methods=("password",), **changes)


async def test_a_live_token_validates(identity: Identity):
    token = identity.formatter.create(await _demo_payload(identity))
    _, body = await identity.validate(token)
    assert body["project"]["name"] == "demo"
    assert {r["name"] for r in body["roles"]} >= {"member", "reader"}


async def test_an_expired_token_is_refused(identity: Identity):
    now = time.time()
    payload = await _demo_payload(identity, issued_at=now - 3700, expires_at=now - 100)
    token = identity.formatter.create(payload)
    with pytest.raises(InvalidToken, match="expired"):
        await identity.validate(token)
    # A service may still look at it with ?allow_expired=1, inside the window only.
    _, body = await identity.validate(token, allow_expired=True)
    assert body["user"]["name"] == "demo"


async def test_a_token_expired_beyond_the_window_is_refused_even_to_services(identity: Identity):
    window = identity.config.identity.allow_expired_window
    now = time.time()
    payload = await _demo_payload(
        identity, issued_at=now - window - 7200, expires_at=now - window - 1
    )
    token = identity.formatter.create(payload)
    with pytest.raises(InvalidToken, match="expired"):
        await identity.validate(token, allow_expired=True)


async def test_a_cached_token_is_refused_once_it_expires(identity: Identity):
    payload = await _demo_payload(identity, expires_at=time.time() + 1.0)
    token = identity.formatter.create(payload)
    await identity.validate(token)  # now cached
    await asyncio.sleep(1.1)
    with pytest.raises(InvalidToken, match="expired"):
        await identity.validate(token)


async def test_a_rescoped_token_never_outlives_its_parent(identity: Identity):
    parent = await _demo_payload(identity, expires_at=time.time() + 120)
    payload = await _demo_payload(identity)
    token, body = await identity.issue_token(
        payload.user_id,
        ("token",),
        SCOPE_PROJECT,
        payload.scope_id,
        parent=parent,
        include_catalog=False,
    )
    child = identity.parse_token(token)
    assert child.expires_at == parent.expires_at
    assert child.audit_ids[-1] == parent.audit_ids[-1]
    assert body["expires_at"].endswith("Z")
