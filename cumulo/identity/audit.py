"""Keystone's CADF audit notifications (notification_format = cadf): `identity.authenticate`
for every password/token sign-in, successful or not, and `identity.<resource>.created /
updated / deleted` for every change Identity answers with success, each a DMTF CADF event
naming its initiator (the caller), its target (the resource) and its outcome.

They are taken from the API's answers (an ASGI middleware), so that every handler is
covered by one rule; the resource type is the route's collection, as Keystone's own
names (`project`, `user`, `role_assignment`...).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cumulo.common import metrics
from cumulo.common.notifications import Notifier

CADF_EVENT = "http://schemas.dmtf.org/cloud/audit/1.0/event"
USER_TYPE = "service/security/account/user"
MAX_CAPTURED = 256 * 1024
WRITES = {"POST": "created", "PUT": "created", "PATCH": "updated", "DELETE": "deleted"}
# The route's collections, as Keystone names the resources in its notifications.
RESOURCE_TYPES = {
    "domains": "domain",
    "projects": "project",
    "users": "user",
    "groups": "group",
    "roles": "role",
    "implies": "implied_role",
    "regions": "region",
    "services": "service",
    "endpoints": "endpoint",
    "policies": "policy",
    "credentials": "credential",
    "application_credentials": "application_credential",
    "access_rules": "access_rule",
    "endpoint_groups": "endpoint_group",
    "consumers": "OS-OAUTH1:consumer",
    "trusts": "OS-TRUST:trust",
    "password": "user",
}
# Resources that live under another one (/users/{id}/application_credentials/{id}) and are
# notified as themselves; other nested writes (/groups/{g}/users/{u}, /projects/{p}/tags/
# {t}) change the resource they are under.
OWN_NESTED = {"application_credentials", "access_rules", "implies", "OS-EC2", "password"}
RESOURCE_TYPES["OS-EC2"] = "ec2_credential"


def cadf_event(
    action: str,
    outcome: str,
    initiator: dict[str, Any],
    target: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "typeURI": CADF_EVENT,
        "id": str(uuid.uuid4()),
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000"),
        "action": action,
        "eventType": "activity",
        "outcome": outcome,
        "initiator": initiator,
        "target": target,
        "observer": {"typeURI": "service/security", "id": "openstack:identity"},
        **extra,
    }


def _segments(route: str) -> list[str]:
    return [s for s in route.split("/") if s and s != "v3"]


def resource_change(
    method: str, route: str, params: dict[str, str], body: Any
) -> tuple[str, str, str | None] | None:
    """(resource type, action, resource id) of a successful write, or None when the
    route is no resource of Identity's (sign-in, EC2 signatures, discovery)."""
    parts = [p for p in route.split("/") if p and p != "v3"]
    parts = [p for p in parts if not p.startswith("OS-") or p == "OS-EC2"]
    names = [p for p in parts if not p.startswith("{")]
    if not names or names[0] in ("auth", "ec2tokens", "s3tokens"):
        return None
    action = WRITES[method]
    if names[0] != "roles" and "roles" in names and "{role_id}" in parts:
        return "role_assignment", action, params.get("role_id")  # a grant
    collection = names[-1]
    nested = len(names) > 1 and collection not in OWN_NESTED
    if nested and parts.index(collection) > 0:
        # A change inside the resource the route is under (membership, tags, config).
        owner = names[-2]
        owner_param = parts[parts.index(owner) + 1]
        resource = RESOURCE_TYPES.get(owner)
        if resource is None or not owner_param.startswith("{"):
            return None
        return resource, "updated", params.get(owner_param.strip("{}"))
    resource = RESOURCE_TYPES.get(collection)
    if resource is None:
        return None
    if collection == "password":
        return "user", "updated", params.get("user_id")
    last_param = parts[-1] if parts[-1].startswith("{") else None
    resource_id = params.get(last_param.strip("{}")) if last_param else None
    if last_param is None and isinstance(body, dict):
        shown = next((v for v in body.values() if isinstance(v, dict)), {})
        resource_id = shown.get("id", shown.get("access", resource_id))
    return resource, action, resource_id


def _initiator(scope: Scope) -> dict[str, Any]:
    ctx = scope.get("cumulo.context")
    headers = dict(scope.get("headers", ()))
    client = scope.get("client") or ("", 0)
    initiator: dict[str, Any] = {
        "typeURI": USER_TYPE,
        "id": getattr(ctx, "user_id", None),
        "host": {
            "address": client[0],
            "agent": headers.get(b"user-agent", b"").decode("latin-1"),
        },
        "request_id": scope.get("state", {}).get("request_id"),
    }
    if getattr(ctx, "project_id", None):
        initiator["project_id"] = ctx.project_id
    return initiator


def _authenticate_event(scope: Scope, status: int, request: Any, body: Any) -> dict[str, Any]:
    """identity.authenticate: the user signing in (by id, or by name when refused)."""
    initiator = _initiator(scope)
    token = body.get("token") if isinstance(body, dict) else None
    if isinstance(token, dict):
        initiator["id"] = token["user"]["id"]
        initiator["name"] = token["user"].get("name")
    else:
        identity = (request or {}).get("auth", {}).get("identity", {})
        user = (identity.get("password") or identity.get("totp") or {}).get("user") or {}
        initiator["id"] = user.get("id")
        initiator["name"] = user.get("name")
    outcome = "success" if status == 201 else "failure" if status == 401 else "pending"
    return cadf_event(
        "authenticate",
        outcome,
        initiator,
        {"typeURI": USER_TYPE, "id": initiator["id"]},
        reason={"reasonType": "HTTP", "reasonCode": str(status)},
    )


class AuditMiddleware:
    def __init__(self, app: ASGIApp, notifier_of) -> None:
        self.app = app
        self.notifier_of = notifier_of  # () -> Notifier | None: the Identity's, once set

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        notifier: Notifier | None = self.notifier_of()
        if (
            scope["type"] != "http"
            or scope["method"] not in WRITES
            or notifier is None
            or notifier.driver == "noop"
        ):
            await self.app(scope, receive, send)
            return
        status = 500
        sent: list[bytes] = []
        received: list[bytes] = []

        async def keep_request(message_receive=receive) -> Message:
            message = await message_receive()
            if message["type"] == "http.request" and sum(map(len, received)) < MAX_CAPTURED:
                received.append(message.get("body", b""))
            return message

        async def keep_response(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and sum(map(len, sent)) < MAX_CAPTURED:
                sent.append(message.get("body", b""))
            await send(message)

        await self.app(scope, keep_request, keep_response)
        route = metrics.route_template(scope)
        publisher = "identity.cumulo"
        if route == "/v3/auth/tokens" and scope["method"] == "POST":
            if status in (201, 401):
                event = _authenticate_event(scope, status, _json(received), _json(sent))
                await notifier.info(publisher, "identity.authenticate", event)
            return
        if not 200 <= status < 300:
            return
        change = resource_change(scope["method"], route, scope.get("path_params", {}), _json(sent))
        if change is None:
            return
        resource, action, resource_id = change
        event = cadf_event(
            f"{action}.{resource}",
            "success",
            _initiator(scope),
            {"typeURI": f"data/security/{resource}", "id": resource_id},
            resource_info=resource_id,
        )
        await notifier.info(publisher, f"identity.{resource}.{action}", event)


def _json(chunks: list[bytes]) -> Any:
    try:
        return json.loads(b"".join(chunks)) if chunks else None
    except ValueError:
        return None
