"""Server-side sessions: the token stays on the server; the browser holds only a
signed, HttpOnly, SameSite cookie naming the session, and every form carries the
session's CSRF token.

Two stores behind one interface: in this process's memory (`cumulo dashboard` alone, and
tests), or in the dashboard's database (`cumulo up` and `cumulo api`, whose workers share
the port: a session made by one worker is found by the others). In the database a
session is one row, encrypted (Fernet, a key derived from `[dashboard] session_secret`),
so its token, its trust's id and the private keys it holds are never stored in the clear.

A login waiting for its second factor (Keystone's auth receipt) is kept the same way, as
a `PendingLogin` under a cookie of its own: the receipt never reaches the browser."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select

from cumulo.dashboard.models import DashboardSession

if TYPE_CHECKING:
    from sqlalchemy.orm import Session as DbSession

    from cumulo.common.db import Database

COOKIE = "cumulo_session"
PENDING_COOKIE = "cumulo_login"
# How long an expired session is kept: its page can still renew it (the password asked
# again in a dialog) without losing what the user typed. Its token is dead meanwhile.
EXPIRED_KEPT = 2 * 3600


@dataclass
class Session:
    token: str
    user_id: str
    user_name: str
    domain_name: str
    project_id: str
    project_name: str
    roles: list[str]
    expires_at: float
    projects: list[dict[str, Any]] = field(default_factory=list)
    # The domains the user has a role on (Keystone's /v3/auth/domains): the scopes the
    # project switcher offers beside the projects.
    domains: list[dict[str, Any]] = field(default_factory=list)
    # Set while the token is scoped to a domain (then project_id is empty).
    scope_domain_id: str = ""
    scope_domain_name: str = ""
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    # Per page view: the live fragments as the page was rendered (its stream sends
    # only what changes after), kept until the page's stream opens.
    views: dict[str, dict[str, str]] = field(default_factory=dict)
    # Private keys of key pairs the launch wizard made, until the server page shows them.
    private_keys: dict[str, str] = field(default_factory=dict)
    # A renewal waiting for its passcode: Keystone's auth receipt and its expiry.
    renew_receipt: str = ""
    renew_receipt_expires: float = 0.0
    # Silent renewal (renewal.py): the session's trust, when it ends, and whether the
    # token was made from it (Keystone does not re-scope such a token). The token's
    # lifetime as issued tells when it is renewed.
    trust_id: str = ""
    trust_expires: float = 0.0
    trust_token: bool = False
    token_lifetime: float = 0.0

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at

    @property
    def minutes_left(self) -> int:
        return max(0, int((self.expires_at - time.time()) // 60))


@dataclass
class PendingLogin:
    """A login whose password Keystone took but whose user's multi-factor rules want a
    passcode too: Keystone's auth receipt (it stands for the password) until it expires."""

    receipt: str
    user_id: str
    user_name: str
    domain_name: str
    expires_at: float  # the receipt's

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


Record = Session | PendingLogin


def token_expiry(expires_at: str) -> float:
    """Keystone's expires_at (2026-01-01T00:00:00.000000Z) as a timestamp."""
    return datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()


class SessionStore:
    """Sessions in this process's memory (a restart logs everyone out, tokens stay valid
    until they expire). Changes to a found session are kept with `save`."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.sessions: dict[str, Record] = {}

    def _sign(self, sid: str) -> str:
        return hmac.new(self.secret, sid.encode(), hashlib.sha256).hexdigest()

    def _sid(self, cookie: str | None) -> str | None:
        if not cookie or "." not in cookie:
            return None
        sid, signature = cookie.rsplit(".", 1)
        return sid if hmac.compare_digest(signature, self._sign(sid)) else None

    async def create(self, record: Record) -> str:
        """A new session (or pending login); returns the cookie value."""
        sid = secrets.token_urlsafe(24)
        await self._put(sid, record, new=True)
        return f"{sid}.{self._sign(sid)}"

    async def find(self, cookie: str | None) -> tuple[str, Session] | None:
        sid = self._sid(cookie)
        if sid is None:
            return None
        session = await self._get(sid)
        return (sid, session) if isinstance(session, Session) else None

    async def find_pending(self, cookie: str | None) -> tuple[str, PendingLogin] | None:
        sid = self._sid(cookie)
        if sid is None:
            return None
        pending = await self._get(sid)
        return (sid, pending) if isinstance(pending, PendingLogin) else None

    async def save(self, sid: str, record: Record) -> None:
        await self._put(sid, record, new=False)

    async def end(self, cookie: str | None) -> None:
        sid = self._sid(cookie)
        if sid is not None:
            await self._delete(sid)

    async def _get(self, sid: str) -> Record | None:
        return self.sessions.get(sid)

    async def _put(self, sid: str, record: Record, new: bool) -> None:
        if new:
            cutoff = time.time() - EXPIRED_KEPT
            for old in [k for k, r in self.sessions.items() if r.expires_at < cutoff]:
                del self.sessions[old]
        self.sessions[sid] = record

    async def _delete(self, sid: str) -> None:
        self.sessions.pop(sid, None)


def _fernet(secret: bytes) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"cumulo dashboard sessions"
    ).derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


class DatabaseSessionStore(SessionStore):
    """Sessions in the dashboard's database, shared by every process serving it. A row
    is written when a session is made or changed (a page that changes nothing writes
    nothing); rows expired for EXPIRED_KEPT are removed as new sessions are made."""

    def __init__(self, db: Database, secret: bytes) -> None:
        super().__init__(hmac.new(secret, b"cookie", hashlib.sha256).digest())
        self.db = db
        self.fernet = _fernet(secret)
        # What each session looked like when read or written (id(session) -> its bytes),
        # so that `save` writes only what changed.
        self._seen: dict[int, bytes] = {}

    def _seal(self, record: Record) -> tuple[bytes, bytes]:
        kind = "pending" if isinstance(record, PendingLogin) else "session"
        fields = {**dataclasses.asdict(record), "kind": kind}
        plain = json.dumps(fields, sort_keys=True).encode()
        return plain, self.fernet.encrypt(plain)

    async def _get(self, sid: str) -> Record | None:
        row = await self.db.run_read(_load_row, sid)
        if row is None:
            return None
        try:
            plain = self.fernet.decrypt(row)
        except InvalidToken:  # another secret: as if there were no session
            return None
        fields = json.loads(plain)
        kind = fields.pop("kind", "session")
        record: Record = PendingLogin(**fields) if kind == "pending" else Session(**fields)
        self._remember(record, plain)
        return record

    async def _put(self, sid: str, record: Record, new: bool) -> None:
        plain, sealed = self._seal(record)
        if not new and self._seen.get(id(record)) == plain:
            return
        await self.db.run_write(_store_row, sid, sealed, record.expires_at, new)
        self._remember(record, plain)

    async def _delete(self, sid: str) -> None:
        await self.db.run_write(_delete_row, sid)

    def _remember(self, record: Record, plain: bytes) -> None:
        # Sessions are short-lived objects (one request): keep the last few only.
        self._seen[id(record)] = plain
        while len(self._seen) > 256:
            self._seen.pop(next(iter(self._seen)))


def _load_row(s: DbSession, sid: str) -> bytes | None:
    return s.scalar(select(DashboardSession.data).where(DashboardSession.id == sid))


def _store_row(s: DbSession, sid: str, sealed: bytes, expires_at: float, new: bool) -> None:
    now = time.time()
    if new:
        cutoff = now - EXPIRED_KEPT
        s.execute(delete(DashboardSession).where(DashboardSession.expires_at < cutoff))
        s.add(DashboardSession(id=sid, data=sealed, expires_at=expires_at, updated_at=now))
        return
    row = s.get(DashboardSession, sid)
    if row is None:  # ended meanwhile (logged out in another tab): stays ended
        return
    if expires_at < row.expires_at:  # read before a renewal: its token is the revoked one
        return
    row.data, row.expires_at, row.updated_at = sealed, expires_at, now


def _delete_row(s: DbSession, sid: str) -> None:
    s.execute(delete(DashboardSession).where(DashboardSession.id == sid))
