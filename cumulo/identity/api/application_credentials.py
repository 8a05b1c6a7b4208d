"""/v3/users/{user_id}/application_credentials (api-ref: Application Credentials).

A user delegates some of the roles their token holds on its project to a
credential that an application authenticates with (id + secret). The secret is
shown once, at creation; only its bcrypt hash is stored. Authentication with the
credential lives in cumulo.identity.authentication; a token made from it carries
the credential's id, so deleting the credential stops its tokens at once.

Access rules (service, method, path) limit what the credential's tokens reach: each
service checks them on every request (cumulo.common.access_rules).
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, StrictBool, StrictStr, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, validate
from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Conflict, Forbidden, NotFound
from cumulo.identity.access_rules import access_rules_of, render_access_rule
from cumulo.identity.api.common import (
    Body,
    ClosedBody,
    Name,
    authorize,
    identity_of,
    json,
    list_body,
    new_id,
    no_content,
    paginate,
    refuse_trust_token,
)
from cumulo.identity.models import GLOBAL, AccessRule, ApplicationCredential, Role, User
from cumulo.identity.passwords import MAX_PASSWORD_BYTES, hash_password


class RoleRef(ClosedBody):
    id: StrictStr | None = None
    name: StrictStr | None = None

    @model_validator(mode="after")
    def _one_of_id_or_name(self) -> RoleRef:
        if (self.id is None) == (self.name is None):
            raise ValueError("give a role by either id or name")
        return self


class AccessRuleRef(ClosedBody):
    """An access rule: an existing one by id, or service + method + path (Keystone's schema)."""

    id: StrictStr | None = None
    service: StrictStr | None = Field(None, min_length=1, max_length=64)
    path: StrictStr | None = Field(None, max_length=225, pattern=r"^/")
    method: Literal["DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"] | None = None

    @model_validator(mode="after")
    def _id_or_rule(self) -> AccessRuleRef:
        if self.id is None and None in (self.service, self.path, self.method):
            raise ValueError("an access rule needs an id, or service, path and method")
        return self


class AppCredCreate(Body):
    name: StrictStr = Name(255)
    description: StrictStr | None = None
    secret: StrictStr | None = None
    expires_at: StrictStr | None = None
    roles: list[RoleRef] | None = None
    unrestricted: StrictBool = False
    access_rules: list[AccessRuleRef] = Field(default_factory=list)


def _generate_secret() -> str:
    # 48 random bytes: 64 url-safe characters, inside bcrypt's 72-byte limit.
    # Never start with '-': a CLI would read such a secret as an option.
    while True:
        secret = base64.urlsafe_b64encode(secrets.token_bytes(48)).decode().rstrip("=")
        if not secret.startswith("-"):
            return secret


def _timestamp(value: datetime | None) -> str | None:
    """Keystone shows application credential expiry as 2018-02-27T18:30:59.000000."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def _parse_expiry(raw: str) -> datetime:
    """An ISO 8601 time in the future, as naive UTC."""
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"Invalid input for field 'expires_at': {raw!r} is not an ISO 8601 timestamp."
        ) from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    if when <= utcnow():
        raise BadRequest(
            "The 'expires_at' must be later than now. The server could not comply with the "
            "request since it is either malformed or otherwise incorrect. "
            "The client is assumed to be in error."
        )
    return when


async def _render(
    request: Request, session: AsyncSession, cred: ApplicationCredential
) -> dict[str, Any]:
    roles = (await session.scalars(select(Role).where(Role.id.in_(cred.role_ids or [])))).all()
    base = str(request.base_url).rstrip("/")
    return {
        "id": cred.id,
        "name": cred.name,
        "description": cred.description,
        "expires_at": _timestamp(cred.expires_at),
        "project_id": cred.project_id,
        "roles": [
            {"id": r.id, "name": r.name, "domain_id": r.domain_id or None}
            for r in sorted(roles, key=lambda r: r.name)
        ],
        "unrestricted": cred.unrestricted,
        "access_rules": [
            render_access_rule(r) for r in await access_rules_of(session, cred.access_rule_ids)
        ],
        "links": {"self": f"{base}/v3/users/{cred.user_id}/application_credentials/{cred.id}"},
    }


async def _access_rule_ids(
    session: AsyncSession, user_id: str, refs: list[AccessRuleRef]
) -> list[str]:
    """The user's rules the credential names: by id, else an identical one, else new."""
    ids: list[str] = []
    for ref in refs:
        rule = await session.get(AccessRule, ref.id) if ref.id else None
        if ref.id and (rule is None or rule.user_id != user_id):
            raise NotFound(f"Could not find Access Rule: {ref.id}.")
        if rule is None:
            rule = await session.scalar(
                select(AccessRule).where(
                    AccessRule.user_id == user_id,
                    AccessRule.service == ref.service,
                    AccessRule.path == ref.path,
                    AccessRule.method == ref.method,
                )
            )
        if rule is None:
            rule = AccessRule(
                id=new_id(), user_id=user_id, service=ref.service, path=ref.path, method=ref.method
            )
            session.add(rule)
            await session.flush()
        ids.append(rule.id)
    return list(dict.fromkeys(ids))


def _target(user_id: str) -> dict[str, Any]:
    return {"user": {"id": user_id}}


async def _refuse_restricted_token(request: Request, ctx: RequestContext) -> None:
    """A token made from a restricted application credential cannot manage credentials."""
    if ctx.app_cred_id is None:
        return
    async with identity_of(request).read() as session:
        cred = await session.get(ApplicationCredential, ctx.app_cred_id)
    if cred is None or not cred.unrestricted:
        raise Forbidden(
            "Using method 'application_credential' is not allowed for managing additional "
            "application credentials."
        )


async def _delegated_role_ids(
    request: Request, session: AsyncSession, ctx: RequestContext, wanted: list[RoleRef] | None
) -> list[str]:
    """The roles to delegate: those asked for (each held by the token), else all of them."""
    _, token = await identity_of(request).validate(ctx.auth_token)
    held = {r["id"] for r in token.get("roles", ())}
    if not wanted:
        return sorted(held)
    ids: list[str] = []
    for ref in wanted:
        role_id = ref.id
        if role_id is None:
            role_id = await session.scalar(
                select(Role.id).where(Role.name == ref.name, Role.domain_id == GLOBAL)
            )
            if role_id is None:
                raise NotFound(f"Could not find role: {ref.name}.")
        if role_id not in held:
            raise BadRequest(
                "Invalid application credential: Cannot create an application credential "
                "with unassigned role"
            )
        ids.append(role_id)
    return list(dict.fromkeys(ids))


async def create_application_credential(request: Request) -> Response:
    """POST /v3/users/{user_id}/application_credentials: on the token's project."""
    user_id = request.path_params["user_id"]
    ctx = await authorize(request, "identity:create_application_credential", _target(user_id))
    data = await json_body(request)
    body = validate(
        AppCredCreate, data.get("application_credential") if isinstance(data, dict) else None
    )
    await _refuse_restricted_token(request, ctx)
    await refuse_trust_token(request, ctx, "application credentials")
    if ctx.user_id != user_id:
        raise Forbidden("Cannot create an application credential for another user.")
    if ctx.project_id is None:
        raise BadRequest("An application credential is created with a project-scoped token.")
    expires_at = _parse_expiry(body.expires_at) if body.expires_at else None
    secret = body.secret or _generate_secret()
    if len(secret.encode()) > MAX_PASSWORD_BYTES:
        raise BadRequest(f"Invalid input for field 'secret': at most {MAX_PASSWORD_BYTES} bytes.")
    identity = identity_of(request)
    async with identity.read() as session:
        role_ids = await _delegated_role_ids(request, session, ctx, body.roles)
    cred = ApplicationCredential(
        id=new_id(),
        access_rule_ids=[],
        name=body.name,
        user_id=user_id,
        project_id=ctx.project_id,
        secret_hash=await hash_password(secret, identity.config.identity.bcrypt_rounds),
        description=body.description,
        expires_at=expires_at,
        unrestricted=body.unrestricted,
        role_ids=role_ids,
    )
    try:
        async with identity.write() as session:
            cred.access_rule_ids = await _access_rule_ids(session, user_id, body.access_rules)
            session.add(cred)
    except IntegrityError:
        raise Conflict(
            "Conflict occurred attempting to store application_credential - "
            f"an application credential named {body.name!r} already exists for this user."
        ) from None
    async with identity.read() as session:
        rendered = await _render(request, session, cred)
    return json({"application_credential": {**rendered, "secret": secret}}, status=201)


async def _get_user(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"Could not find user: {user_id}.")
    return user


async def list_application_credentials(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    await authorize(request, "identity:list_application_credentials", _target(user_id))
    query = select(ApplicationCredential).where(ApplicationCredential.user_id == user_id)
    if "name" in request.query_params:
        query = query.where(ApplicationCredential.name == request.query_params["name"])
    async with identity_of(request).read() as session:
        await _get_user(session, user_id)
        rows, truncated = await paginate(request, session, query, ApplicationCredential.id)
        items = [await _render(request, session, c) for c in rows]
    return json(list_body(request, "application_credentials", items, truncated))


async def _get_credential(
    session: AsyncSession, user_id: str, cred_id: str
) -> ApplicationCredential:
    cred = await session.get(ApplicationCredential, cred_id)
    if cred is None or cred.user_id != user_id:
        raise NotFound(f"Could not find Application Credential: {cred_id}.")
    return cred


async def show_application_credential(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    await authorize(request, "identity:get_application_credential", _target(user_id))
    async with identity_of(request).read() as session:
        cred = await _get_credential(session, user_id, request.path_params["cred_id"])
        rendered = await _render(request, session, cred)
    return json({"application_credential": rendered})


async def delete_application_credential(request: Request) -> Response:
    """DELETE: the credential stops authenticating and its tokens stop validating."""
    user_id = request.path_params["user_id"]
    ctx = await authorize(request, "identity:delete_application_credential", _target(user_id))
    await _refuse_restricted_token(request, ctx)
    async with identity_of(request).write() as session:
        cred = await _get_credential(session, user_id, request.path_params["cred_id"])
        await session.delete(cred)
    return no_content()


_BASE = "/v3/users/{user_id}/application_credentials"

routes = [
    Route(_BASE, create_application_credential, methods=["POST"]),
    Route(_BASE, list_application_credentials, methods=["GET"]),
    Route(_BASE + "/{cred_id}", show_application_credential, methods=["GET"]),
    Route(_BASE + "/{cred_id}", delete_application_credential, methods=["DELETE"]),
]
