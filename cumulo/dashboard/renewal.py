"""Silent renewal of a session's token with a Keystone trust (OS-TRUST), as Heat keeps
the right to act for a user after its token is gone.

After a password login on a project, the user's fresh token makes a trust: trustor the
user, trustee the dashboard's own Identity user (`dashboard`, no role of its own),
impersonation, the session's project, the token's roles, ending `[dashboard]
session_max_lifetime` seconds later. While the user is active (a page asked for within
the token's life) and the token nears its end, the dashboard authenticates as the
trustee with the trust's scope and swaps the token so made (acting as the user, with the
trust's roles, never outliving the trust) into the session. Keystone's multi-factor
rules are the trustee's (none), so an MFA user's session renews too; the user disabled,
deleted or losing the roles, or the trust deleted, and the next renewal fails: the
session ends. Near the trust's end the page asks for the password as before, and a new
trust starts from the new token. Trusts are project-scoped: a domain-scoped session has
none and is renewed with the password only."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cumulo.dashboard.apis import Api, ApiFailure
from cumulo.dashboard.sessions import Session, token_expiry

if TYPE_CHECKING:
    from starlette.requests import Request

    from cumulo.common.config import CumuloConfig

LOG = logging.getLogger(__name__)

# A token is renewed once less than this is left of it (half its life for short
# tokens): before the page's warning (its last 10 minutes) shows.
RENEW_BEFORE = 15 * 60
# Not renewed when the new token would end less than this later than the current one
# (the trust ends first): the page asks for the password.
MIN_GAIN = 60


@dataclass
class Trustee:
    """The dashboard's own Identity user, trustee of every session's trust."""

    name: str
    password: str
    max_lifetime: float
    domain_id: str = "default"
    user_id: str = ""  # learned at its first authentication

    @classmethod
    def from_config(cls, config: CumuloConfig) -> Trustee | None:
        """The trustee `cumulo init` made, or None when silent renewal is off."""
        dashboard = config.dashboard
        if not dashboard.service_password or dashboard.session_max_lifetime <= 0:
            return None
        # Imported here: the dashboard served alone needs no part of Identity but this.
        from cumulo.identity.bootstrap import DASHBOARD_USER

        return cls(DASHBOARD_USER, dashboard.service_password, dashboard.session_max_lifetime)

    def identity(self, scope: dict[str, Any] | None = None) -> dict[str, Any]:
        user = {"name": self.name, "domain": {"id": self.domain_id}, "password": self.password}
        auth: dict[str, Any] = {"identity": {"methods": ["password"], "password": {"user": user}}}
        if scope is not None:
            auth["scope"] = scope
        return auth


class RenewalRefused(Exception):
    """Keystone refused the trust's token: the session ends (the login page says why)."""


def trustee_of(request: Request) -> Trustee | None:
    return getattr(request.app.state, "trustee", None)


def _identity(request: Request, token: str = "") -> Api:
    return Api(request.app.state.apis.clients["identity"], token)


async def _post_token(request: Request, auth: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    response = await _identity(request).call("POST", "/v3/auth/tokens", json={"auth": auth})
    return response.headers["x-subject-token"], response.json()["token"]


def _isotime(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def start_trust(request: Request, session: Session, body: dict[str, Any]) -> None:
    """A new trust for the session from its token (`body` the token's, fresh from a
    password): the old trust, if any, deleted. Without a trustee, on a domain scope, or
    when Keystone refuses, the session goes on without one (the password renews it)."""
    trustee = trustee_of(request)
    old = session.trust_id
    session.trust_id, session.trust_expires, session.trust_token = "", 0.0, False
    if trustee is not None and session.project_id and body.get("roles"):
        try:
            if not trustee.user_id:
                _, own = await _post_token(request, trustee.identity())
                trustee.user_id = own["user"]["id"]
            expires = time.time() + trustee.max_lifetime
            trust = {
                "trustor_user_id": session.user_id,
                "trustee_user_id": trustee.user_id,
                "impersonation": True,
                "project_id": session.project_id,
                "roles": [{"id": role["id"]} for role in body["roles"]],
                "expires_at": _isotime(expires),
            }
            made = await _identity(request, session.token).post(
                "/v3/OS-TRUST/trusts", {"trust": trust}
            )
            session.trust_id = made["trust"]["id"]
            session.trust_expires = token_expiry(made["trust"]["expires_at"])
        except ApiFailure as exc:
            LOG.warning("no silent renewal for user %s: %s", session.user_id, exc)
    if old:
        await drop_trust(request, session.token, old)


async def drop_trust(request: Request, token: str, trust_id: str) -> None:
    """Delete a session's trust with a token of its user (the trustor); when that token
    no longer works, with a token the trust itself gives (it acts as the user)."""
    for attempt in range(2):
        try:
            await _identity(request, token).delete(f"/v3/OS-TRUST/trusts/{trust_id}")
            return
        except ApiFailure as exc:
            if exc.status == 404:  # deleted or expired already
                return
            trustee = trustee_of(request)
            if exc.status != 401 or attempt or trustee is None:
                LOG.warning("trust %s not deleted: %s", trust_id, exc)
                return
            try:
                token, _ = await _post_token(
                    request, trustee.identity({"OS-TRUST:trust": {"id": trust_id}})
                )
            except ApiFailure:
                return  # the trust gives no token any more: nothing can use it either


def renewal_due(session: Session, now: float | None = None) -> bool:
    """Whether the session's token is renewed from its trust now: it is still valid
    (the user is active), near its end, and the trust lasts beyond it."""
    if not session.trust_id:
        return False
    now = time.time() if now is None else now
    left = session.expires_at - now
    lifetime = session.token_lifetime or RENEW_BEFORE * 2
    return 0 < left < min(RENEW_BEFORE, lifetime / 2) and (
        session.trust_expires - session.expires_at >= MIN_GAIN
    )


async def renew_from_trust(request: Request, session: Session) -> None:
    """The trustee's token on the session's trust swapped into the session; the old
    token revoked. RenewalRefused when Keystone says no (user disabled or deleted, trust
    deleted or expired, roles gone); other failures (Identity unreachable) raise
    ApiFailure and leave the session as it was."""
    trustee = trustee_of(request)
    if trustee is None:
        raise RenewalRefused("silent renewal is off")
    scope = {"OS-TRUST:trust": {"id": session.trust_id}}
    try:
        token, body = await _post_token(request, trustee.identity(scope))
    except ApiFailure as exc:
        if exc.status in (401, 403, 404):
            raise RenewalRefused(exc.message) from None
        raise
    if body.get("user", {}).get("id") != session.user_id:  # not impersonating: refuse it
        raise RenewalRefused(f"trust {session.trust_id} does not act as the user")
    old = session.token
    set_token(session, token, body)
    session.trust_token = True
    try:  # the old token is of no more use (requests still running with it retry)
        await _identity(request, token).call(
            "DELETE", "/v3/auth/tokens", headers={"X-Subject-Token": old}
        )
    except ApiFailure:
        pass


def set_token(session: Session, token: str, body: dict[str, Any]) -> None:
    """A new token of the session's scope: its roles, expiry and lifetime."""
    session.token = token
    session.roles = [r["name"] for r in body.get("roles", [])]
    session.expires_at = token_expiry(body["expires_at"])
    issued = body.get("issued_at")
    session.token_lifetime = session.expires_at - (
        token_expiry(issued) if isinstance(issued, str) else time.time()
    )
