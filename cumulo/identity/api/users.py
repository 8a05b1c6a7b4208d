"""/v3/users: CRUD, self-service password change, and the projects a user can use.

api-ref: Identity v3 "Users". A user's password is stored as a bcrypt hash and never
returned; `email` and any unknown attribute are kept as extras, as Keystone does.
Disabling a user or setting its password revokes every token it holds.
"""

from __future__ import annotations

import operator
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import Field, StrictBool, StrictStr
from sqlalchemy import Select, delete, false, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, validate
from cumulo.common.config import SecurityComplianceConfig
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Conflict, NotFound, NotImplementedYet, Unauthorized
from cumulo.common.openapi import describes
from cumulo.identity import assignments, security_compliance
from cumulo.identity.api.common import (
    Body,
    ClosedBody,
    Name,
    authorize,
    context,
    extras_of,
    identity_of,
    json,
    list_body,
    new_id,
    no_content,
    paginate,
    query_bool,
    self_link,
)
from cumulo.identity.api.projects import render_project
from cumulo.identity.models import (
    ApplicationCredential,
    Assignment,
    Credential,
    Domain,
    Project,
    User,
    UserGroupMembership,
)
from cumulo.identity.passwords import MAX_PASSWORD_BYTES, check_password, hash_password
from cumulo.identity.security_compliance import password_expiry_text

# Attributes with a meaning of their own; anything else a client sends is an extra.
_FIELDS = {
    "id",
    "name",
    "domain_id",
    "enabled",
    "default_project_id",
    "description",
    "password",
    "options",
    "federated",
    "links",
    "password_expires_at",
}

# Keystone's user resource options: each a boolean (null removes it), except the MFA rules.
BOOLEAN_OPTIONS = {
    "ignore_change_password_upon_first_use",
    "ignore_password_expiry",
    "ignore_lockout_failure_attempts",
    "ignore_user_inactivity",
    "lock_password",
    "multi_factor_auth_enabled",
}
MFA_RULES = "multi_factor_auth_rules"

# Federated users (idp_id, protocol_id, unique_id) do not exist here: such filters match none.
_FEDERATION_FILTERS = ("idp_id", "protocol_id", "unique_id")
_TIME_OPERATORS = {
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
    "eq": operator.eq,
    "neq": operator.ne,
}
# Inexact filters Keystone accepts as `<attr>__<comparator>`.
B = TypeVar("B", bound=Body)
_COMPARATORS = ("contains", "icontains", "startswith", "istartswith", "endswith", "iendswith")


class UserCreate(Body):
    name: StrictStr = Name(255)
    domain_id: StrictStr | None = None
    enabled: StrictBool = True
    password: StrictStr | None = None
    default_project_id: StrictStr | None = Field(None, max_length=64)
    description: StrictStr | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class UserUpdate(Body):
    name: StrictStr | None = Name(255, required=False)
    domain_id: StrictStr | None = None
    enabled: StrictBool | None = None
    password: StrictStr | None = None
    default_project_id: StrictStr | None = Field(None, max_length=64)
    description: StrictStr | None = None
    options: dict[str, Any] | None = None


class PasswordChange(ClosedBody):
    password: StrictStr
    original_password: StrictStr


def render_user(request: Request, u: User) -> dict[str, Any]:
    body: dict[str, Any] = {
        **(u.extra or {}),
        "id": u.id,
        "name": u.name,
        "domain_id": u.domain_id,
        "enabled": u.enabled,
        "password_expires_at": password_expiry_text(u.password_expires_at),
        "options": dict(u.options or {}),
        "links": self_link(request, f"users/{u.id}"),
    }
    # Keystone keeps these as optional attributes: shown only once set.
    if u.default_project_id is not None:
        body["default_project_id"] = u.default_project_id
    if u.description is not None:
        body["description"] = u.description
    return body


def user_target(u: User | None) -> dict[str, Any]:
    """The policy target for a user; empty when it does not exist (so only admins pass)."""
    return {"user": {"id": u.id, "domain_id": u.domain_id}} if u is not None else {}


def duplicate_entry(kind: str, name: str | None, domain_id: str) -> Conflict:
    return Conflict(
        f"Conflict occurred attempting to store {kind} - Duplicate entry found with name "
        f"{name} at domain ID {domain_id}."
    )


async def insert_in_domain(request: Request, kind: str, row: Any) -> None:
    """Store a new user or group: 404 for an unknown domain, 409 for a taken name."""
    try:
        async with identity_of(request).write() as session:
            if await session.get(Domain, row.domain_id) is None:
                raise NotFound(f"Could not find domain: {row.domain_id}.")
            session.add(row)
    except IntegrityError:
        raise duplicate_entry(kind, row.name, row.domain_id) from None


async def requested_domain_id(request: Request, raw: Any) -> str:
    """The domain_id of a create body; when absent the caller's, as Keystone takes the token's."""
    domain_id = raw.get("domain_id") if isinstance(raw, dict) else None
    if isinstance(domain_id, str):
        return domain_id
    ctx = await context(request)
    return ctx.domain_id or ctx.project_domain_id or ctx.user_domain_id


def parse_update(model: type[B], data: Any, key: str, entity_id: str, domain_id: str) -> B:
    """A PATCH body: at least one attribute; id and domain_id may be repeated, not changed."""
    body = validate(model, data.get(key) if isinstance(data, dict) else None)
    fields = body.model_fields_set
    extras = body.model_extra or {}
    if not fields and not extras:
        raise BadRequest(f"Invalid input for field '{key}': {{}} does not have enough properties.")
    if extras.get("id") not in (None, entity_id):
        raise BadRequest("Cannot change ID")
    if "domain_id" in fields and getattr(body, "domain_id", None) != domain_id:
        raise BadRequest("Cannot change Domain ID")
    for name in ("name", "enabled"):
        if name in fields and getattr(body, name, None) is None:
            raise BadRequest(f"Invalid input for field '{name}': None is not a valid value.")
    return body


def check_options(options: dict[str, Any]) -> None:
    """The user options Keystone knows, with their types (api-ref: user options)."""
    for key, value in options.items():
        if key in BOOLEAN_OPTIONS:
            if value is not None and not isinstance(value, bool):
                raise BadRequest(f"Invalid input for field 'options.{key}': must be a boolean.")
        elif key == MFA_RULES:
            if value is not None and not (
                isinstance(value, list)
                and all(
                    isinstance(rule, list) and rule and all(isinstance(m, str) for m in rule)
                    for rule in value
                )
            ):
                raise BadRequest(
                    f"Invalid input for field 'options.{MFA_RULES}': "
                    "must be a list of lists of method names."
                )
        else:
            raise BadRequest(f"Invalid input for field 'options': unknown option {key!r}.")


def merge_options(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Set the given options; an option set to null is removed."""
    merged = {**old, **new}
    return {k: v for k, v in merged.items() if v is not None}


def check_password_length(password: str) -> None:
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise BadRequest(
            f"Password validation error: a password is at most {MAX_PASSWORD_BYTES} bytes."
        )


def _rules(request: Request) -> SecurityComplianceConfig:
    return identity_of(request).config.identity.security_compliance


def _check_new_password(request: Request, password: str) -> None:
    check_password_length(password)
    security_compliance.check_password_rules(_rules(request), password)


async def _new_password_hash(request: Request, password: str | None) -> str | None:
    """The hash of a password being set, after the length and the configured rules."""
    if password is None:
        return None
    _check_new_password(request, password)
    return await hash_password(password, identity_of(request).config.identity.bcrypt_rounds)


async def _check_default_project(request: Request, project_id: str | None) -> None:
    if not project_id:
        return
    async with identity_of(request).read() as session:
        if await session.get(Domain, project_id) is not None:
            raise BadRequest(f"User's default project ID cannot be a domain ID: {project_id}.")


async def load_user(request: Request, user_id: str) -> User | None:
    async with identity_of(request).read() as session:
        return await session.get(User, user_id)


def user_not_found(user_id: str) -> NotFound:
    return NotFound(f"Could not find user: {user_id}.")


async def _authorized_user(request: Request, rule: str) -> User:
    """The user named in the path, after the policy check (403 before 404, as Keystone)."""
    user_id = request.path_params["user_id"]
    user = await load_user(request, user_id)
    await authorize(request, rule, user_target(user))
    if user is None:
        raise user_not_found(user_id)
    return user


# -- filters shared with GET /v3/groups/{group_id}/users ------------------------------------


def filter_by_text(request: Request, query: Select, name: str, column: Any) -> Select:
    """`name=` (exact) and Keystone's inexact `name__contains=`, `name__istartswith=`, ..."""
    q = request.query_params
    if q.get(name):
        query = query.where(column == q[name])
    for comparator in _COMPARATORS:
        value = q.get(f"{name}__{comparator}")
        if value:
            query = query.where(getattr(column, comparator)(value))
    return query


def _password_expires_filter(raw: str) -> Any:
    """`password_expires_at=[op:]timestamp` as Keystone reads it (users without an
    expiring password never match)."""
    op, timestamp = raw.split(":", 1) if ":" in raw[2:4] else ("eq", raw)
    try:
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest("Timestamp not in expected format.") from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    if op not in _TIME_OPERATORS:
        raise BadRequest(f"The given operator {op} is not a valid operator.")
    return _TIME_OPERATORS[op](User.password_expires_at, when)


def filter_users(request: Request, query: Select) -> Select:
    q = request.query_params
    if q.get("domain_id"):
        query = query.where(User.domain_id == q["domain_id"])
    query = filter_by_text(request, query, "name", User.name)
    enabled = query_bool(request, "enabled")
    if enabled is not None:
        query = query.where(User.enabled == enabled)
    if q.get("password_expires_at"):
        query = query.where(_password_expires_filter(q["password_expires_at"]))
    if any(q.get(f) for f in _FEDERATION_FILTERS):
        query = query.where(false())
    return query


# -- handlers -------------------------------------------------------------------------------


@describes(statuses={501: "Federated users are not supported."})
async def create_user(request: Request) -> Response:
    data = await json_body(request)
    raw = data.get("user") if isinstance(data, dict) else None
    domain_id = await requested_domain_id(request, raw)
    await authorize(request, "identity:create_user", {"user": {"domain_id": domain_id}})
    body = validate(UserCreate, raw)
    if body.model_extra and body.model_extra.get("federated"):
        raise NotImplementedYet("Federated users are not supported.")
    check_options(body.options)
    await _check_default_project(request, body.default_project_id)
    password_hash = await _new_password_hash(request, body.password)
    user = User(
        id=new_id(),
        name=body.name.strip(),
        domain_id=domain_id,
        enabled=body.enabled,
        default_project_id=body.default_project_id,
        description=body.description,
        options=merge_options({}, body.options),
        extra=extras_of(body, _FIELDS),
        password_history=[],
        failed_auth_count=0,
    )
    security_compliance.set_password(_rules(request), user, password_hash, self_service=False)
    await insert_in_domain(request, "user", user)
    return json({"user": render_user(request, user)}, status=201)


async def list_users(request: Request) -> Response:
    ctx = await context(request)
    # A domain-scoped token sees only its domain's users.
    domain_id = request.query_params.get("domain_id") or ctx.domain_id
    await authorize(request, "identity:list_users", {"domain_id": domain_id})
    query = filter_users(request, select(User))
    if ctx.domain_id:
        query = query.where(User.domain_id == ctx.domain_id)
    async with identity_of(request).read() as session:
        rows, truncated = await paginate(request, session, query, User.id)
    return json(list_body(request, "users", [render_user(request, u) for u in rows], truncated))


async def show_user(request: Request) -> Response:
    user = await _authorized_user(request, "identity:get_user")
    return json({"user": render_user(request, user)})


@describes(statuses={501: "Federated users are not supported."})
async def update_user(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    user = await _authorized_user(request, "identity:update_user")
    body = parse_update(UserUpdate, await json_body(request), "user", user_id, user.domain_id)
    fields = body.model_fields_set
    if (body.model_extra or {}).get("federated"):
        raise NotImplementedYet("Federated users are not supported.")
    if body.options:
        check_options(body.options)
    await _check_default_project(request, body.default_project_id)
    password_hash = await _new_password_hash(request, body.password)
    identity = identity_of(request)
    try:
        async with identity.write() as session:
            row = await session.get(User, user_id)
            if row is None:
                raise user_not_found(user_id)
            was_enabled = row.enabled
            if "name" in fields:
                row.name = (body.name or "").strip()
            for name in ("enabled", "default_project_id", "description"):
                if name in fields:
                    setattr(row, name, getattr(body, name))
            if body.options:
                row.options = merge_options(row.options or {}, body.options)
            if "password" in fields:
                security_compliance.set_password(
                    _rules(request), row, password_hash, self_service=False
                )
            if body.enabled:
                # Keystone: enabling a user also ends its lockout.
                row.failed_auth_count, row.failed_auth_at = 0, None
            if new_extras := extras_of(body, _FIELDS):
                row.extra = {**(row.extra or {}), **new_extras}
            # Keystone: disabling a user or setting its password ends every token it holds.
            if "password" in fields or (was_enabled and not row.enabled):
                await identity.revoke_user_tokens(session, user_id)
    except IntegrityError:
        raise duplicate_entry("user", body.name, user.domain_id) from None
    return json({"user": render_user(request, row)})


async def delete_user(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    await _authorized_user(request, "identity:delete_user")
    async with identity_of(request).write() as session:
        if await session.get(User, user_id) is None:
            raise user_not_found(user_id)
        await session.execute(delete(Assignment).where(Assignment.actor_id == user_id))
        await session.execute(
            delete(UserGroupMembership).where(UserGroupMembership.user_id == user_id)
        )
        await session.execute(delete(Credential).where(Credential.user_id == user_id))
        await session.execute(
            delete(ApplicationCredential).where(ApplicationCredential.user_id == user_id)
        )
        await session.execute(delete(User).where(User.id == user_id))
    return no_content()


async def change_password(request: Request) -> Response:
    """POST /v3/users/{user_id}/password: the original password is the proof.

    Keystone accepts this without a token (so a user with an expired password can
    change it); a token, when sent, must be valid and belong to the user.
    """
    user_id = request.path_params["user_id"]
    if request.headers.get("x-auth-token"):
        await authorize(
            request,
            "identity:change_password",
            user_target(await load_user(request, user_id)) or {"user": {"id": user_id}},
        )
    data = await json_body(request)
    body = validate(PasswordChange, data.get("user") if isinstance(data, dict) else None)
    identity = identity_of(request)
    rules = identity.config.identity.security_compliance
    async with identity.read() as session:
        user = await session.get(User, user_id)
        domain = await session.get(Domain, user.domain_id) if user else None
    if user is None or not user.enabled or domain is None or not domain.enabled:
        raise Unauthorized()
    # The original password proves who asks, as a login would (an expired one still may).
    now = utcnow()
    if security_compliance.account_locked(rules, user, now):
        raise security_compliance.locked_error(user.id)
    if not await check_password(body.original_password, user.password_hash):
        await security_compliance.record_failed_login(identity.db, rules, user, now)
        raise Unauthorized()
    _check_new_password(request, body.password)
    if (user.options or {}).get("lock_password") is True:
        raise BadRequest(
            "You cannot change your password at this time due to password policy "
            "disallowing password changes. Please contact your administrator to reset "
            "your password."
        )
    await security_compliance.check_self_service_change(rules, user, body.password, now)
    new_hash = await _new_password_hash(request, body.password)
    async with identity.write() as session:
        row = await session.get(User, user_id)
        # Compare-and-swap: a concurrent change makes the original password stale.
        if row is None or row.password_hash != user.password_hash:
            raise Unauthorized()
        security_compliance.set_password(rules, row, new_hash, self_service=True)
        row.failed_auth_count, row.failed_auth_at = 0, None
        await identity.revoke_user_tokens(session, user_id)
    return no_content()


async def list_user_projects(request: Request) -> Response:
    user = await _authorized_user(request, "identity:list_user_projects")
    q = request.query_params
    async with identity_of(request).read() as session:
        project_ids = await assignments.project_ids_with_roles(session, user.id)
        query = select(Project).where(Project.id.in_(project_ids))
        if q.get("domain_id"):
            query = query.where(Project.domain_id == q["domain_id"])
        query = filter_by_text(request, query, "name", Project.name)
        enabled = query_bool(request, "enabled")
        if enabled is not None:
            query = query.where(Project.enabled == enabled)
        rows, truncated = await paginate(request, session, query, Project.id)
    return json(
        list_body(request, "projects", [render_project(request, p) for p in rows], truncated)
    )


routes = [
    Route("/v3/users", create_user, methods=["POST"]),
    Route("/v3/users", list_users, methods=["GET"]),
    Route("/v3/users/{user_id}", show_user, methods=["GET"]),
    Route("/v3/users/{user_id}", update_user, methods=["PATCH"]),
    Route("/v3/users/{user_id}", delete_user, methods=["DELETE"]),
    Route("/v3/users/{user_id}/password", change_password, methods=["POST"]),
    Route("/v3/users/{user_id}/projects", list_user_projects, methods=["GET"]),
]
