"""/v3/auth: issue, validate, check and revoke tokens; what a token may reach."""

from __future__ import annotations

import json as stdjson
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, Forbidden, NotFound, Unauthorized
from cumulo.identity import assignments, authentication, receipts
from cumulo.identity.api.common import (
    authorize,
    context,
    identity_of,
    json,
    no_content,
    query_bool,
    self_link,
)
from cumulo.identity.core import Identity
from cumulo.identity.models import Domain, Project, User
from cumulo.identity.tokens import TokenPayload

SUPPORTED_METHODS = ("password", "token", "application_credential", "totp")


async def issue_token(request: Request) -> Response:
    """POST /v3/auth/tokens (api-ref: Password / TOTP / Token / Application credential
    authentication; a user's multi-factor rules may answer 401 with an auth receipt)."""
    identity = identity_of(request)
    data = await json_body(request)
    auth = data.get("auth") if isinstance(data, dict) else None
    ident = auth.get("identity") if isinstance(auth, dict) else None
    if not isinstance(ident, dict):
        raise BadRequest("Invalid input for field 'auth.identity': an object is required.")
    methods = ident.get("methods")
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        raise BadRequest("Invalid input for field 'identity.methods': a list of methods.")
    receipt_id = request.headers.get(receipts.RECEIPT_HEADER)
    receipt = receipts.validate_receipt(identity, receipt_id) if receipt_id else None
    results = []
    async with AsyncExitStack() as stack:
        opened: list[AsyncSession] = []

        async def session() -> AsyncSession:
            # Opened on first use: a re-scope answered from the caches never needs one.
            if not opened:
                opened.append(await stack.enter_async_context(identity.read()))
            return opened[0]

        for method in dict.fromkeys(methods):
            if method not in SUPPORTED_METHODS:
                raise Unauthorized(f"Unsupported authentication method: {method}.")
            section = ident.get(method)
            if not isinstance(section, dict):
                raise BadRequest(f"Invalid input for field 'identity.{method}'.")
            if method == "password":
                results.append(await authentication.by_password(identity, await session(), section))
            elif method == "totp":
                results.append(await authentication.by_totp(identity, await session(), section))
            elif method == "token":
                results.append(await authentication.by_token(identity, section))
            else:
                results.append(
                    await authentication.by_application_credential(
                        identity, await session(), section
                    )
                )
        if len({r.user_id for r in results}) != 1:
            raise Unauthorized("The authentication methods name different users.")
        merged = results[0]
        for extra in results[1:]:
            merged.methods = tuple(dict.fromkeys((*merged.methods, *extra.methods)))
            merged.parent = merged.parent or extra.parent
            merged.app_cred = merged.app_cred or extra.app_cred
        if receipt is not None:
            if receipt.user_id != merged.user_id:
                raise Unauthorized(f"Could not find auth receipt: {receipt_id}.")
            merged.methods = tuple(dict.fromkeys((*receipt.methods, *merged.methods)))
        if not await _mfa_rules_satisfied(identity, merged):
            return await _receipt_response(identity, merged)
        scope_kind, scope_id = await _resolve_scope(identity, session, merged, auth.get("scope"))
    token, body = await identity.issue_token(
        merged.user_id,
        merged.methods,
        scope_kind,
        scope_id,
        parent=merged.parent,
        app_cred=merged.app_cred,
        include_catalog=not _nocatalog(request),
    )
    return json({"token": body}, status=201, headers={"X-Subject-Token": token})


async def _mfa_rules_satisfied(identity: Identity, auth: authentication.Authenticated) -> bool:
    async def read_options() -> dict[str, Any]:
        async with identity.read() as session:
            user = await session.get(User, auth.user_id)
        return dict(user.options or {}) if user is not None else {}

    # Memoized like scopes: a client re-scoping its token needs no database read.
    options = await identity.memoize(("user options", auth.user_id), read_options)
    return receipts.rules_satisfied(options, set(auth.methods), SUPPORTED_METHODS)


async def _receipt_response(identity: Identity, auth: authentication.Authenticated) -> Response:
    """401 with the auth receipt: which methods succeeded, which rules remain."""
    receipt_id, body = await receipts.issue_receipt(
        identity, auth.user_id, auth.methods, SUPPORTED_METHODS
    )
    return json(body, status=401, headers={receipts.RECEIPT_HEADER: receipt_id})


async def _resolve_scope(
    identity: Identity,
    session: Callable[[], Awaitable[AsyncSession]],
    auth: authentication.Authenticated,
    scope: Any,
) -> tuple[int, str | None]:
    """The scope asked for, memoized: the same user asking for the same scope again
    (the common case: a client re-scoping its token) is answered without the database,
    until the next write."""
    parent = auth.parent
    key = (
        "scope",
        auth.user_id,
        auth.app_cred.id if auth.app_cred else None,
        (parent.scope, parent.scope_id) if parent else None,
        stdjson.dumps(scope, sort_keys=True),
    )

    async def resolve() -> tuple[int, str | None]:
        return await authentication.resolve_scope(await session(), auth, scope)

    return await identity.memoize(key, resolve)


def _nocatalog(request: Request) -> bool:
    return "nocatalog" in request.query_params and query_bool(request, "nocatalog") is not False


async def _subject(request: Request) -> tuple[str, TokenPayload, dict[str, Any]]:
    identity = identity_of(request)
    subject = request.headers.get("x-subject-token")
    if not subject:
        raise BadRequest("X-Subject-Token header is required.")
    allow_expired = bool(query_bool(request, "allow_expired"))
    try:
        payload, body = await identity.validate(subject, allow_expired=allow_expired)
    except Unauthorized as exc:
        raise NotFound(f"Could not find token: {exc.message}") from None
    return subject, payload, body


async def validate_token(request: Request) -> Response:
    """GET /v3/auth/tokens: the body of the token in X-Subject-Token."""
    await context(request)
    subject, payload, body = await _subject(request)
    await authorize(request, "identity:validate_token", {"token": {"user_id": payload.user_id}})
    if not _nocatalog(request) and "roles" in body:
        body = {**body, "catalog": await identity_of(request).catalog_for(body)}
    return json({"token": body}, headers={"X-Subject-Token": subject})


async def check_token(request: Request) -> Response:
    """HEAD /v3/auth/tokens."""
    await context(request)
    subject, payload, _ = await _subject(request)
    await authorize(request, "identity:validate_token", {"token": {"user_id": payload.user_id}})
    return Response(status_code=200, headers={"X-Subject-Token": subject})


async def revoke_token(request: Request) -> Response:
    """DELETE /v3/auth/tokens: the token is refused everywhere from now on."""
    await context(request)
    _, payload, _ = await _subject(request)
    await authorize(request, "identity:revoke_token", {"token": {"user_id": payload.user_id}})
    await identity_of(request).revoke(payload)
    return no_content()


async def auth_catalog(request: Request) -> Response:
    ctx = await context(request)
    if not (ctx.project_id or ctx.domain_id or ctx.system_scope):
        raise Forbidden("A catalog cannot be provided for an unscoped token.")
    _, token_body = await identity_of(request).validate(ctx.auth_token)
    return json(
        {
            "catalog": await identity_of(request).catalog_for(token_body),
            "links": self_link(request, "auth/catalog"),
        }
    )


async def auth_projects(request: Request) -> Response:
    """GET /v3/auth/projects: the enabled projects the caller holds a role on."""
    ctx = await context(request)
    identity = identity_of(request)
    async with identity.read() as session:
        ids = await assignments.project_ids_with_roles(session, ctx.user_id)
        rows = (
            await session.scalars(
                select(Project).where(Project.id.in_(ids), Project.enabled).order_by(Project.name)
            )
        ).all()
        domains = {d.id: d for d in await session.scalars(select(Domain).where(Domain.enabled))}
    projects = [
        {
            "id": p.id,
            "name": p.name,
            "domain_id": p.domain_id,
            "enabled": p.enabled,
            "is_domain": False,
            "parent_id": p.parent_id or p.domain_id,
            "description": p.description or "",
            "links": self_link(request, f"projects/{p.id}"),
        }
        for p in rows
        if p.domain_id in domains
    ]
    return json({"projects": projects, "links": self_link(request, "auth/projects")})


async def auth_domains(request: Request) -> Response:
    ctx = await context(request)
    async with identity_of(request).read() as session:
        ids = await assignments.domain_ids_with_roles(session, ctx.user_id)
        rows = (
            await session.scalars(
                select(Domain).where(Domain.id.in_(ids), Domain.enabled).order_by(Domain.name)
            )
        ).all()
    domains = [
        {
            "id": d.id,
            "name": d.name,
            "enabled": d.enabled,
            "description": d.description or "",
            "links": self_link(request, f"domains/{d.id}"),
        }
        for d in rows
    ]
    return json({"domains": domains, "links": self_link(request, "auth/domains")})


async def auth_system(request: Request) -> Response:
    ctx = await context(request)
    async with identity_of(request).read() as session:
        roles = await assignments.roles_on_system(session, ctx.user_id)
    return json(
        {"system": [{"all": True}] if roles else [], "links": self_link(request, "auth/system")}
    )


routes = [
    Route("/v3/auth/tokens", issue_token, methods=["POST"]),
    # HEAD first: Starlette lets a GET route answer HEAD too.
    Route("/v3/auth/tokens", check_token, methods=["HEAD"]),
    Route("/v3/auth/tokens", validate_token, methods=["GET"]),
    Route("/v3/auth/tokens", revoke_token, methods=["DELETE"]),
    Route("/v3/auth/catalog", auth_catalog, methods=["GET"]),
    Route("/v3/auth/projects", auth_projects, methods=["GET"]),
    Route("/v3/auth/domains", auth_domains, methods=["GET"]),
    Route("/v3/auth/system", auth_system, methods=["GET"]),
]
