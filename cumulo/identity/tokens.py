"""Fernet tokens: the key repository (with rotation) and the token payload format.

Keys live in `<state>/fernet-keys/` as Keystone lays them out: file `0` is the
staged key, the highest number is the primary (used to encrypt), the others are
secondary (still decrypt). Rotation promotes the staged key, stages a new one
and drops the oldest beyond `max_active_keys`, so tokens issued under the
previous primary stay valid until they expire.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PAYLOAD_VERSION = 1
# A trust-scoped token's payload: the same fields and the trust id.
TRUST_PAYLOAD_VERSION = 3

METHOD_BITS = {
    "password": 1,
    "token": 2,
    "application_credential": 4,
    "ec2credential": 8,
    "totp": 16,
}


def pack_methods(methods: tuple[str, ...] | list[str]) -> int:
    bits = 0
    for m in methods:
        bits |= METHOD_BITS[m]
    return bits


def unpack_methods(bits: int) -> tuple[str, ...]:
    return tuple(m for m, bit in METHOD_BITS.items() if bits & bit)


SCOPE_UNSCOPED, SCOPE_PROJECT, SCOPE_DOMAIN, SCOPE_SYSTEM = 0, 1, 2, 3


class KeyRepository:
    """A directory of Fernet keys, each file 0600."""

    def __init__(self, path: Path, max_active_keys: int = 3) -> None:
        self.path = path
        self.max_active_keys = max_active_keys

    def _indexes(self) -> list[int]:
        if not self.path.is_dir():
            return []
        return sorted(int(p.name) for p in self.path.iterdir() if p.name.isdecimal())

    def _write_key(self, index: int) -> None:
        target = self.path / str(index)
        tmp = self.path / f".{index}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
        os.replace(tmp, target)

    def initialize(self) -> bool:
        """Create the repository with a staged and a primary key; False if it exists."""
        if self._indexes():
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        self.path.chmod(0o700)
        self._write_key(0)
        self._write_key(1)
        return True

    def rotate(self) -> int:
        """Promote the staged key to primary, stage a new key, drop the oldest extras.

        Returns the new primary's index.
        """
        indexes = self._indexes()
        if not indexes:
            raise FileNotFoundError(f"no Fernet keys in {self.path}: run 'cumulo init'")
        new_primary = max(indexes) + 1
        os.replace(self.path / "0", self.path / str(new_primary))
        self._write_key(0)
        keep = sorted(i for i in self._indexes() if i != 0)
        for old in keep[: max(0, len(keep) - (self.max_active_keys - 1))]:
            (self.path / str(old)).unlink()
        return new_primary

    def load(self) -> MultiFernet:
        """Keys in the order MultiFernet wants: primary first, then the rest."""
        indexes = self._indexes()
        if not indexes:
            raise FileNotFoundError(f"no Fernet keys in {self.path}: run 'cumulo init'")
        order = sorted(indexes, reverse=True)  # primary, secondaries..., staged (0) last
        return MultiFernet([Fernet((self.path / str(i)).read_bytes().strip()) for i in order])


def random_audit_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")


def pack_id(value: str | None) -> bytes | str | None:
    """uuid hex ids travel as 16 bytes (short tokens); other ids as they are."""
    if value is None:
        return None
    if len(value) == 32:
        try:
            return uuid.UUID(hex=value).bytes
        except ValueError:
            pass
    return value


def unpack_id(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return uuid.UUID(bytes=value).hex
    return value


def _pack_audit(audit_id: str) -> bytes:
    return base64.urlsafe_b64decode(audit_id + "==")


def _unpack_audit(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class TokenPayload:
    """What a token carries. Everything else (names, roles, catalog) is looked up."""

    user_id: str
    methods: tuple[str, ...]
    expires_at: float
    issued_at: float
    audit_ids: tuple[str, ...]
    scope: int = SCOPE_UNSCOPED
    scope_id: str | None = None  # project id, domain id, or "all" for system
    app_cred_id: str | None = None
    trust_id: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def project_id(self) -> str | None:
        return self.scope_id if self.scope == SCOPE_PROJECT else None

    @property
    def domain_id(self) -> str | None:
        return self.scope_id if self.scope == SCOPE_DOMAIN else None

    @property
    def system(self) -> str | None:
        return self.scope_id if self.scope == SCOPE_SYSTEM else None


class TokenFormatter:
    """Encrypts payloads into Fernet tokens and back."""

    # How often (seconds) to look whether `cumulo identity rotate-keys` changed the keys.
    KEY_CHECK_INTERVAL = 1.0

    def __init__(self, keys: KeyRepository) -> None:
        self.keys = keys
        self.reload()

    def reload(self) -> None:
        self._fernet = self.keys.load()
        self._keys_mtime = self.keys.path.stat().st_mtime_ns
        self._next_check = time.monotonic() + self.KEY_CHECK_INTERVAL

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.KEY_CHECK_INTERVAL
        if self.keys.path.stat().st_mtime_ns != self._keys_mtime:
            self.reload()

    def create(self, p: TokenPayload) -> str:
        fields = [
            TRUST_PAYLOAD_VERSION if p.trust_id else PAYLOAD_VERSION,
            pack_id(p.user_id),
            pack_methods(p.methods),
            p.scope,
            pack_id(p.scope_id),
            p.expires_at,
            p.issued_at,
            [_pack_audit(a) for a in p.audit_ids],
            pack_id(p.app_cred_id),
        ]
        if p.trust_id:
            fields.append(pack_id(p.trust_id))
        return self.seal(fields)

    def seal(self, fields: list) -> str:
        """Fields packed and encrypted with the primary key (tokens, auth receipts)."""
        self._maybe_reload()
        packed = msgpack.packb(fields)
        # Fernet output is url-safe base64 with '=' padding; Keystone strips the padding.
        return self._fernet.encrypt(packed).decode().rstrip("=")

    def unseal(self, sealed: str) -> list:
        """The fields of something `seal` made; ValueError when it is not one of ours."""
        if not sealed or len(sealed) > 1024:
            raise ValueError("token of wrong size")
        self._maybe_reload()
        padded = sealed + "=" * (-len(sealed) % 4)
        try:
            fields = msgpack.unpackb(self._fernet.decrypt(padded.encode()))
        except (InvalidToken, ValueError, msgpack.UnpackException, TypeError) as exc:
            raise ValueError("token could not be decrypted") from exc
        if not isinstance(fields, list) or not fields:
            raise ValueError("unknown token payload")
        return fields

    def parse(self, token: str) -> TokenPayload:
        """Decrypt a token; raises ValueError when it is not one of ours."""
        fields = self.unseal(token)
        if (fields[0], len(fields)) not in ((PAYLOAD_VERSION, 9), (TRUST_PAYLOAD_VERSION, 10)):
            raise ValueError("unknown token payload")
        _, user, methods, scope, scope_id, expires_at, issued_at, audits, app_cred = fields[:9]
        trust = fields[9] if len(fields) == 10 else None
        return TokenPayload(
            user_id=unpack_id(user),  # type: ignore[arg-type]
            methods=unpack_methods(methods),
            expires_at=float(expires_at),
            issued_at=float(issued_at),
            audit_ids=tuple(_unpack_audit(a) for a in audits),
            scope=int(scope),
            scope_id=unpack_id(scope_id),
            app_cred_id=unpack_id(app_cred),
            trust_id=unpack_id(trust),
        )
