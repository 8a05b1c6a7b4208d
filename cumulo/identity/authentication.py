"""Authentication methods (password, TOTP, token, application credential) and scope resolution.

Every failure is a 401 with Keystone's generic message: which part was wrong
(unknown user, wrong password, disabled) is logged, never told to the caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Unauthorized
from cumulo.identity import assignments, security_compliance, totp
from cumulo.identity.core import Identity
from cumulo.identity.models import ApplicationCredential, Credential, Domain, Project, User
from cumulo.identity.passwords import check_password
from cumulo.identity.tokens import (
    SCOPE_DOMAIN,
    SCOPE_PROJECT,
    SCOPE_SYSTEM,
    SCOPE_UNSCOPED,
    TokenPayload,
)

LOG = logging.getLogger(__name__)


def _refuse(reason: str) -> Unauthorized:
    LOG.info("authentication refused: %s", reason)
    return Unauthorized()


@dataclass
class Authenticated:
    user_id: str
    methods: tuple[str, ...]
    parent: TokenPayload | None = None
    app_cred: ApplicationCredential | None = None


async def _domain_by_ref(session: AsyncSession, ref: dict[str, Any] | None) -> Domain:
    if not isinstance(ref, dict) or not (ref.get("id") or ref.get("name")):
        raise BadRequest("A domain must be given by id or name.")
    if ref.get("id"):
        domain = await session.get(Domain, ref["id"])
    else:
        domain = await session.scalar(select(Domain).where(Domain.name == ref["name"]))
    if domain is None:
        raise _refuse(f"unknown domain {ref}")
    if not domain.enabled:
        raise _refuse(f"domain {domain.id} is disabled")
    return domain


async def user_by_ref(session: AsyncSession, ref: dict[str, Any]) -> User:
    """A user given by id, or by name and domain; must exist and be enabled."""
    if ref.get("id"):
        user = await session.get(User, ref["id"])
    elif ref.get("name"):
        domain = await _domain_by_ref(session, ref.get("domain"))
        user = await session.scalar(
            select(User).where(User.name == ref["name"], User.domain_id == domain.id)
        )
    else:
        raise BadRequest("Invalid input for field 'user': a user id or name is required.")
    if user is None:
        raise _refuse(f"unknown user {ref.get('id') or ref.get('name')}")
    if not user.enabled:
        raise _refuse(f"user {user.id} is disabled")
    domain = await session.get(Domain, user.domain_id)
    if domain is None or not domain.enabled:
        raise _refuse(f"domain of user {user.id} is disabled")
    return user


def _user_and_secret(data: dict[str, Any], method: str, key: str) -> tuple[dict[str, Any], str]:
    """The `user` object of a password or totp section, and its password or passcode."""
    user_ref = data.get("user")
    if not isinstance(user_ref, dict):
        raise BadRequest(
            f"Invalid input for field 'identity.{method}.user': an object is required."
        )
    secret = user_ref.get(key)
    if not isinstance(secret, str):
        raise BadRequest(f"Invalid input for field 'identity.{method}.user.{key}'.")
    return user_ref, secret


async def by_password(
    identity: Identity, session: AsyncSession, data: dict[str, Any]
) -> Authenticated:
    """Password authentication with the security compliance rules: a locked account is
    refused before its password is even checked, a wrong password counts towards the
    lockout, an expired password is refused (all with Keystone's messages)."""
    user_ref, password = _user_and_secret(data, "password", "password")
    user = await user_by_ref(session, user_ref)
    # bcrypt takes a fifth of a second: give the connection back to the pool meanwhile,
    # or a burst of logins holds them all and every other request waits.
    await session.close()
    rules = identity.config.identity.security_compliance
    now = utcnow()
    if security_compliance.account_locked(rules, user, now):
        LOG.info("authentication refused: user %s is locked out", user.id)
        raise security_compliance.locked_error(user.id)
    if not await check_password(password, user.password_hash):
        await security_compliance.record_failed_login(identity.db, rules, user, now)
        raise _refuse(f"wrong password for user {user.id}")
    if security_compliance.password_expired(user, now):
        LOG.info("authentication refused: the password of user %s has expired", user.id)
        raise security_compliance.expired_error(user.id)
    await security_compliance.reset_failed_logins(identity.db, user)
    return Authenticated(user.id, ("password",))


async def by_totp(identity: Identity, session: AsyncSession, data: dict[str, Any]) -> Authenticated:
    """A passcode of one of the user's `totp` credentials (Keystone's totp method)."""
    user_ref, code = _user_and_secret(data, "totp", "passcode")
    user = await user_by_ref(session, user_ref)
    rows = await session.scalars(
        select(Credential).where(Credential.user_id == user.id, Credential.type == "totp")
    )
    windows = identity.config.identity.totp_included_previous_windows
    for cred in rows:
        try:
            secret = identity.credential_fernet.decrypt(cred.encrypted_blob.encode()).decode()
        except InvalidToken:
            LOG.warning("TOTP credential %s cannot be decrypted with the credential keys", cred.id)
            continue
        if totp.passcode_matches(secret, code, windows):
            return Authenticated(user.id, ("totp",))
    raise _refuse(f"no TOTP passcode of user {user.id} matches")


async def by_token(identity: Identity, data: dict[str, Any]) -> Authenticated:
    token = data.get("id")
    if not isinstance(token, str):
        raise BadRequest("Invalid input for field 'identity.token.id'.")
    payload, _ = await identity.validate(token)
    if payload.app_cred_id is not None:
        raise _refuse("a token made from an application credential cannot be rescoped")
    methods = tuple(dict.fromkeys((*payload.methods, "token")))
    return Authenticated(payload.user_id, methods, parent=payload)


async def by_application_credential(
    identity: Identity, session: AsyncSession, data: dict[str, Any]
) -> Authenticated:
    secret = data.get("secret")
    if not isinstance(secret, str):
        raise BadRequest("Invalid input for field 'identity.application_credential.secret'.")
    if data.get("id"):
        cred = await session.get(ApplicationCredential, data["id"])
    elif data.get("name") and isinstance(data.get("user"), dict):
        user = await user_by_ref(session, data["user"])
        cred = await session.scalar(
            select(ApplicationCredential).where(
                ApplicationCredential.user_id == user.id,
                ApplicationCredential.name == data["name"],
            )
        )
    else:
        raise BadRequest("An application credential is given by id, or by name and user.")
    if cred is None:
        raise _refuse("unknown application credential")
    if cred.expires_at is not None and cred.expires_at <= utcnow():
        raise _refuse(f"application credential {cred.id} has expired")
    await user_by_ref(session, {"id": cred.user_id})
    if not await check_password(secret, cred.secret_hash):
        raise _refuse(f"wrong secret for application credential {cred.id}")
    return Authenticated(cred.user_id, ("application_credential",), app_cred=cred)


async def resolve_scope(
    session: AsyncSession, auth: Authenticated, scope: Any
) -> tuple[int, str | None]:
    """The (scope kind, id) the request asks for; 401 when the user holds no role there."""
    if auth.app_cred is not None:
        if scope not in (None, "unscoped") and scope != {}:
            raise _refuse("an application credential token cannot ask for another scope")
        return SCOPE_PROJECT, auth.app_cred.project_id
    if scope == "unscoped":
        return SCOPE_UNSCOPED, None
    if scope is None:
        if auth.parent is not None:
            return auth.parent.scope, auth.parent.scope_id
        user = await session.get(User, auth.user_id)
        if user and user.default_project_id:
            project = await session.get(Project, user.default_project_id)
            if (
                project
                and project.enabled
                and await assignments.roles_on_project(session, user.id, project)
            ):
                return SCOPE_PROJECT, project.id
        return SCOPE_UNSCOPED, None
    if not isinstance(scope, dict) or len(scope) != 1:
        raise BadRequest("Invalid input for field 'scope': give one of project, domain, system.")
    if "project" in scope:
        ref = scope["project"]
        if not isinstance(ref, dict):
            raise BadRequest("Invalid input for field 'scope.project'.")
        if ref.get("id"):
            project = await session.get(Project, ref["id"])
        elif ref.get("name"):
            domain = await _domain_by_ref(session, ref.get("domain"))
            project = await session.scalar(
                select(Project).where(Project.name == ref["name"], Project.domain_id == domain.id)
            )
        else:
            raise BadRequest("A project scope needs an id, or a name and a domain.")
        if project is None or not project.enabled:
            raise _refuse(f"project {ref} is unknown or disabled")
        if not await assignments.roles_on_project(session, auth.user_id, project):
            raise _refuse(f"user {auth.user_id} has no role on project {project.id}")
        return SCOPE_PROJECT, project.id
    if "domain" in scope:
        domain = await _domain_by_ref(session, scope["domain"])
        if not await assignments.roles_on_domain(session, auth.user_id, domain.id):
            raise _refuse(f"user {auth.user_id} has no role on domain {domain.id}")
        return SCOPE_DOMAIN, domain.id
    if "system" in scope:
        if scope["system"] != {"all": True}:
            raise BadRequest("Invalid input for field 'scope.system': only {\"all\": true}.")
        if not await assignments.roles_on_system(session, auth.user_id):
            raise _refuse(f"user {auth.user_id} has no role on the system")
        return SCOPE_SYSTEM, "all"
    if "OS-TRUST:trust" in scope:
        raise BadRequest("Trusts are not supported by this cloud.")
    raise BadRequest("Invalid input for field 'scope': give one of project, domain, system.")
