"""/v3/users/{user_id}/access_rules (api-ref: Application Credentials, access rules).

A rule stays after the credentials that used it are deleted, until its user deletes
it; deleting one that a credential still names is refused (403), as Keystone does.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.faults import Forbidden, NotFound
from cumulo.identity.access_rules import render_access_rule
from cumulo.identity.api.common import authorize, identity_of, json, list_body, no_content, paginate
from cumulo.identity.models import AccessRule, ApplicationCredential, User


def _with_links(request: Request, rule: AccessRule) -> dict:
    base = str(request.base_url).rstrip("/")
    link = f"{base}/v3/users/{rule.user_id}/access_rules/{rule.id}"
    return {**render_access_rule(rule), "links": {"self": link}}


async def _rule(request: Request, rule_name: str) -> AccessRule:
    user_id = request.path_params["user_id"]
    await authorize(request, rule_name, {"user": {"id": user_id}})
    rule_id = request.path_params["rule_id"]
    async with identity_of(request).read() as session:
        rule = await session.get(AccessRule, rule_id)
    if rule is None or rule.user_id != user_id:
        raise NotFound(f"Could not find Access Rule: {rule_id}.")
    return rule


async def list_access_rules(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    await authorize(request, "identity:list_access_rules", {"user": {"id": user_id}})
    query = select(AccessRule).where(AccessRule.user_id == user_id)
    for name in ("service", "path", "method"):
        if name in request.query_params:
            query = query.where(getattr(AccessRule, name) == request.query_params[name])
    async with identity_of(request).read() as session:
        if await session.get(User, user_id) is None:
            raise NotFound(f"Could not find user: {user_id}.")
        rows, truncated = await paginate(request, session, query, AccessRule.id)
    items = [_with_links(request, r) for r in rows]
    return json(list_body(request, "access_rules", items, truncated))


async def show_access_rule(request: Request) -> Response:
    rule = await _rule(request, "identity:get_access_rule")
    return json({"access_rule": _with_links(request, rule)})


async def delete_access_rule(request: Request) -> Response:
    rule = await _rule(request, "identity:delete_access_rule")
    async with identity_of(request).write() as session:
        creds = await session.scalars(
            select(ApplicationCredential.access_rule_ids).where(
                ApplicationCredential.user_id == rule.user_id
            )
        )
        if any(rule.id in (ids or ()) for ids in creds):
            raise Forbidden("May not delete access rule in use")
        await session.execute(delete(AccessRule).where(AccessRule.id == rule.id))
    return no_content()


_BASE = "/v3/users/{user_id}/access_rules"

routes = [
    Route(_BASE, list_access_rules, methods=["GET", "HEAD"]),
    Route(_BASE + "/{rule_id}", show_access_rule, methods=["GET", "HEAD"]),
    Route(_BASE + "/{rule_id}", delete_access_rule, methods=["DELETE"]),
]
