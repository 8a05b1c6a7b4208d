"""The Fernet token format: what a token carries for every scope, and how key rotation ages it."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from cumulo.identity.tokens import (
    SCOPE_DOMAIN,
    SCOPE_PROJECT,
    SCOPE_SYSTEM,
    SCOPE_UNSCOPED,
    KeyRepository,
    TokenFormatter,
    TokenPayload,
    random_audit_id,
)

USER = "0123456789abcdef0123456789abcdef"
PROJECT = "fedcba9876543210fedcba9876543210"
APP_CRED = "00112233445566778899aabbccddeeff"


def payload(scope: int = SCOPE_PROJECT, scope_id: str | None = PROJECT, **extra) -> TokenPayload:
    now = time.time()
    fields = {
        "user_id": USER,
        "methods": ("password",),
        "expires_at": now + 3600,
        "issued_at": now,
        "audit_ids": (random_audit_id(),),
        "scope": scope,
        "scope_id": scope_id,
        **extra,
    }
    return TokenPayload(**fields)


EVERY_SCOPE = {
    "unscoped": payload(SCOPE_UNSCOPED, None),
    "project": payload(SCOPE_PROJECT, PROJECT),
    "domain by uuid": payload(SCOPE_DOMAIN, PROJECT),
    "default domain": payload(SCOPE_DOMAIN, "default"),
    "system": payload(SCOPE_SYSTEM, "all"),
    "rescoped, chained audit ids": payload(
        methods=("password", "token"), audit_ids=(random_audit_id(), random_audit_id())
    ),
    "application credential": payload(methods=("application_credential",), app_cred_id=APP_CRED),
    "ids that are not uuids": payload(user_id="ldap-user-42", scope_id="project-with-a-name"),
}


@pytest.fixture
def keys(tmp_path: Path) -> KeyRepository:
    repo = KeyRepository(tmp_path / "fernet-keys", max_active_keys=3)
    repo.initialize()
    return repo


def reload_now(formatter: TokenFormatter) -> None:
    """Bring a running server's next key check (it notices the changed key directory)."""
    formatter._next_check = 0.0


@pytest.mark.parametrize("name", EVERY_SCOPE)
def test_every_kind_of_token_unpacks_to_what_was_packed(keys: KeyRepository, name: str):
    formatter = TokenFormatter(keys)
    original = EVERY_SCOPE[name]
    token = formatter.create(original)
    assert formatter.parse(token) == original
    # Keystone-like tokens: url-safe, unpadded, small enough for a header.
    assert "=" not in token and len(token) < 255
    base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_uuid_ids_travel_packed_so_tokens_stay_short(keys: KeyRepository):
    formatter = TokenFormatter(keys)
    with_uuids = formatter.create(payload())
    with_names = formatter.create(payload(user_id="u" * 32, scope_id="p" * 32))
    assert len(with_uuids) < len(with_names)


@pytest.mark.parametrize("where", [0, 10, 40, -30, -2])
def test_a_token_changed_anywhere_is_refused(keys: KeyRepository, where: int):
    formatter = TokenFormatter(keys)
    token = formatter.create(payload())
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[where] ^= 0x01
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(ValueError):
        formatter.parse(tampered)


def test_a_token_cut_short_or_lengthened_is_refused(keys: KeyRepository):
    formatter = TokenFormatter(keys)
    token = formatter.create(payload())
    for bad in (token[:-1], token[:-8], token + "A", token + "AAAA", token[8:]):
        with pytest.raises(ValueError):
            formatter.parse(bad)


def test_a_token_issued_before_rotate_keys_still_parses_after_it(keys: KeyRepository):
    running = TokenFormatter(keys)
    before = payload()
    token = running.create(before)
    keys.rotate()
    reload_now(running)
    assert running.parse(token) == before
    assert running.parse(running.create(payload())).user_id == USER


def test_a_server_that_has_not_reloaded_reads_tokens_of_the_new_primary(tmp_path: Path):
    # The new primary was the staged key every server already holds.
    repo = KeyRepository(tmp_path / "keys")
    repo.initialize()
    stale = TokenFormatter(repo)
    stale.KEY_CHECK_INTERVAL = 3600.0
    stale.reload()  # its next key check is an hour away
    repo.rotate()
    fresh = TokenFormatter(repo)
    token = fresh.create(payload())
    assert stale.parse(token).user_id == USER


@pytest.mark.parametrize("max_active_keys", [3, 5])
def test_a_key_dropped_after_max_active_keys_rotations_invalidates_its_tokens(
    tmp_path: Path, max_active_keys: int
):
    repo = KeyRepository(tmp_path / "keys", max_active_keys=max_active_keys)
    repo.initialize()
    running = TokenFormatter(repo)
    token = running.create(payload())
    # Staged and primary take two of the slots: a primary survives as secondary
    # for max_active_keys - 2 rotations.
    for _ in range(max_active_keys - 2):
        repo.rotate()
        reload_now(running)
        assert running.parse(token).user_id == USER
    assert len([p for p in (tmp_path / "keys").iterdir() if p.name.isdigit()]) == max_active_keys
    repo.rotate()
    reload_now(running)
    with pytest.raises(ValueError):
        running.parse(token)
    # Tokens of the current keys are unaffected.
    assert running.parse(running.create(payload())).user_id == USER
