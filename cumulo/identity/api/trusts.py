"""/v3/OS-TRUST/trusts (api-ref: OS-TRUST API).

A trustor delegates some of its roles on a project to a trustee; the trustee then
authenticates with the scope `{"OS-TRUST:trust": {"id": ...}}` (see
cumulo.identity.authentication) and gets a token with those roles, acting as the
trustor when the trust says `impersonation`. Deleting the trust, its expiry, or the
trustor losing a role ends what its tokens carry at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field, StrictBool, StrictInt, StrictStr
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body, validate
from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest, Forbidden, NotFound
from cumulo.identity import assignments
from cumulo.identity.api.application_credentials import RoleRef
from cumulo.identity.api.common import (
    Body,
    authorize,
    context,
    identity_of,
    json,
    list_body,
    new_id,
    no_content,
    refuse_trust_token,
    section,
    self_link,
)
from cumulo.identity.models import GLOBAL, Project, Role, Trust, User

_FIELDS = {
    "id",
    "trustor_user_id",
    "trustee_user_id",
    "project_id",
    "impersonation",
    "expires_at",
    "remaining_uses",
    "roles",
    "allow_redelegation",
    "redelegation_count",
    "links",
}


class TrustCreate(Body):
    trustor_user_id: StrictStr
    trustee_user_id: StrictStr
    impersonation: StrictBool
    project_id: StrictStr | None = None
    roles: list[RoleRef] = Field(default_factory=list)
    expires_at: StrictStr | None = None
    remaining_uses: StrictInt | None = Field(None, ge=1)
    allow_redelegation: StrictBool = False


def _isotime(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def _parse_expiry(raw: str) -> datetime:
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"Invalid input for field 'expires_at': {raw!r} is not a 'date-time'."
        ) from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


def render_trust(request: Request, trust: Trust, roles: list[Role] | None) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    body: dict[str, Any] = {
        **(trust.extra or {}),
        "id": trust.id,
        "trustor_user_id": trust.trustor_user_id,
        "trustee_user_id": trust.trustee_user_id,
        "project_id": trust.project_id,
        "impersonation": trust.impersonation,
        "expires_at": _isotime(trust.expires_at),
        "remaining_uses": trust.remaining_uses,
        "redelegation_count": 0,
        "links": self_link(request, f"OS-TRUST/trusts/{trust.id}"),
    }
    if roles is not None:
        body["roles"] = [_render_role(request, r) for r in roles]
        body["roles_links"] = {
            "self": f"{base}/v3/OS-TRUST/trusts/{trust.id}/roles",
            "previous": None,
            "next": None,
        }
    return body


def _render_role(request: Request, role: Role) -> dict[str, Any]:
    return {
        "id": role.id,
        "name": role.name,
        "domain_id": role.domain_id or None,
        "links": self_link(request, f"roles/{role.id}"),
    }


async def _roles(session: AsyncSession, role_ids: list[str]) -> list[Role]:
    rows = await session.scalars(select(Role).where(Role.id.in_(role_ids or [])))
    return sorted(rows, key=lambda r: r.name)


def _refuse_app_cred(ctx: RequestContext) -> None:
    if ctx.app_cred_id is not None:
        raise Forbidden(
            "You are not authorized to perform the requested action: Using method "
            "'application_credential' is not allowed for managing trusts."
        )


async def _role_ids(session: AsyncSession, refs: list[RoleRef]) -> list[str]:
    ids = []
    for ref in refs:
        if ref.id:
            ids.append(ref.id)
            continue
        role_id = await session.scalar(
            select(Role.id).where(Role.name == ref.name, Role.domain_id == GLOBAL)
        )
        if role_id is None:
            raise NotFound(f"Could not find role: {ref.name}.")
        ids.append(role_id)
    return list(dict.fromkeys(ids))


async def create_trust(request: Request) -> Response:
    data = section(await json_body(request), "trust")
    body = validate(TrustCreate, data)
    ctx = await authorize(
        request, "identity:create_trust", {"trust": {"trustor_user_id": body.trustor_user_id}}
    )
    _refuse_app_cred(ctx)
    await refuse_trust_token(request, ctx, "trusts (redelegation is not supported)")
    if body.project_id and not body.roles:
        raise Forbidden(
            "You are not authorized to perform the requested action: At least one role "
            "should be specified."
        )
    if ctx.user_id != body.trustor_user_id:
        raise Forbidden(
            "You are not authorized to perform the requested action: The authenticated "
            "user should match the trustor."
        )
    expires_at = _parse_expiry(body.expires_at) if body.expires_at else None
    async with identity_of(request).read() as session:
        if await session.get(User, body.trustee_user_id) is None:
            raise NotFound(f"Could not find user: {body.trustee_user_id}.")
        role_ids = await _role_ids(session, body.roles)
        held: set[str] = set()
        if body.project_id:
            project = await session.get(Project, body.project_id)
            if project is None:
                raise NotFound(f"Could not find project: {body.project_id}.")
            held = await assignments.roles_on_project(session, ctx.user_id, project)
        for role_id in role_ids:
            if role_id not in held:
                raise NotFound(f"Could not find role: {role_id}.")
    trust = Trust(
        id=new_id(),
        trustor_user_id=body.trustor_user_id,
        trustee_user_id=body.trustee_user_id,
        project_id=body.project_id,
        impersonation=body.impersonation,
        expires_at=expires_at,
        remaining_uses=body.remaining_uses,
        role_ids=role_ids,
        extra={k: v for k, v in (body.model_extra or {}).items() if k not in _FIELDS},
    )
    async with identity_of(request).write() as session:
        session.add(trust)
    async with identity_of(request).read() as session:
        roles = await _roles(session, role_ids)
    return json({"trust": render_trust(request, trust, roles)}, status=201)


async def list_trusts(request: Request) -> Response:
    q = request.query_params
    if q.get("trustor_user_id"):
        target = {"trust": {"trustor_user_id": q["trustor_user_id"]}}
        ctx = await authorize(request, "identity:list_trusts_for_trustor", target)
        query = select(Trust).where(Trust.trustor_user_id == q["trustor_user_id"])
    elif q.get("trustee_user_id"):
        target = {"trust": {"trustee_user_id": q["trustee_user_id"]}}
        ctx = await authorize(request, "identity:list_trusts_for_trustee", target)
        query = select(Trust).where(Trust.trustee_user_id == q["trustee_user_id"])
    else:
        ctx = await authorize(request, "identity:list_trusts")
        query = select(Trust)
    _refuse_app_cred(ctx)
    async with identity_of(request).read() as session:
        rows = (await session.scalars(query.order_by(Trust.id))).all()
    return json(list_body(request, "trusts", [render_trust(request, t, None) for t in rows]))


async def _trust(request: Request, rule: str) -> tuple[Trust, RequestContext]:
    """The trust in the path (404 when unknown or expired), after the policy."""
    await context(request)
    trust_id = request.path_params["trust_id"]
    async with identity_of(request).read() as session:
        trust = await session.get(Trust, trust_id)
    # Keystone looks the trust up before its policy: an unknown trust is 404 for anyone.
    if trust is None or (trust.expires_at is not None and trust.expires_at <= utcnow()):
        raise NotFound(f"Could not find trust: {trust_id}.")
    parties = ("trustor_user_id", "trustee_user_id")
    ctx = await authorize(request, rule, {"trust": {k: getattr(trust, k) for k in parties}})
    _refuse_app_cred(ctx)
    return trust, ctx


async def show_trust(request: Request) -> Response:
    trust, _ = await _trust(request, "identity:get_trust")
    async with identity_of(request).read() as session:
        roles = await _roles(session, trust.role_ids)
    return json({"trust": render_trust(request, trust, roles)})


async def delete_trust(request: Request) -> Response:
    """The trust and every token made from it end."""
    trust, _ = await _trust(request, "identity:delete_trust")
    async with identity_of(request).write() as session:
        await session.execute(delete(Trust).where(Trust.id == trust.id))
    return no_content()


async def list_trust_roles(request: Request) -> Response:
    trust, _ = await _trust(request, "identity:list_roles_for_trust")
    async with identity_of(request).read() as session:
        roles = await _roles(session, trust.role_ids)
    return json(list_body(request, "roles", [_render_role(request, r) for r in roles]))


async def show_trust_role(request: Request) -> Response:
    trust, _ = await _trust(request, "identity:get_role_for_trust")
    role_id = request.path_params["role_id"]
    if role_id not in trust.role_ids:
        raise NotFound(f"Could not find role: {role_id}.")
    async with identity_of(request).read() as session:
        role = await session.get(Role, role_id)
    if role is None:
        raise NotFound(f"Could not find role: {role_id}.")
    if request.method == "HEAD":
        return Response(status_code=200)
    return json({"role": _render_role(request, role)})


_BASE = "/v3/OS-TRUST/trusts"

routes = [
    Route(_BASE, create_trust, methods=["POST"]),
    Route(_BASE, list_trusts, methods=["GET"]),
    Route(_BASE + "/{trust_id}", show_trust, methods=["GET"]),
    Route(_BASE + "/{trust_id}", delete_trust, methods=["DELETE"]),
    Route(_BASE + "/{trust_id}/roles", list_trust_roles, methods=["GET"]),
    Route(_BASE + "/{trust_id}/roles/{role_id}", show_trust_role, methods=["GET", "HEAD"]),
]
