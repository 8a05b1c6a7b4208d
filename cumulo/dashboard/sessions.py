"""Server-side sessions: the token stays on the server; the browser holds only a
signed, HttpOnly, SameSite cookie naming the session, and every form carries the
session's CSRF token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

COOKIE = "cumulo_session"


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

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at

    @property
    def minutes_left(self) -> int:
        return max(0, int((self.expires_at - time.time()) // 60))


def token_expiry(expires_at: str) -> float:
    """Keystone's expires_at (2026-01-01T00:00:00.000000Z) as a timestamp."""
    return datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()


class SessionStore:
    """Sessions in this process's memory (a restart logs everyone out, tokens stay valid
    until they expire)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.sessions: dict[str, Session] = {}

    def _sign(self, sid: str) -> str:
        return hmac.new(self.secret, sid.encode(), hashlib.sha256).hexdigest()

    def create(self, session: Session) -> str:
        """A new session; returns the cookie value."""
        sid = secrets.token_urlsafe(24)
        self.sessions[sid] = session
        return f"{sid}.{self._sign(sid)}"

    def find(self, cookie: str | None) -> tuple[str, Session] | None:
        if not cookie or "." not in cookie:
            return None
        sid, signature = cookie.rsplit(".", 1)
        if not hmac.compare_digest(signature, self._sign(sid)):
            return None
        session = self.sessions.get(sid)
        return (sid, session) if session is not None else None

    def end(self, cookie: str | None) -> None:
        found = self.find(cookie)
        if found is not None:
            self.sessions.pop(found[0], None)
