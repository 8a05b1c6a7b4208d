"""/v2.0/metering/metering-labels and /metering-label-rules (api-ref: Metering).

Labels and their rules are admin resources, as in Neutron: other callers see none
(404) and may not create them (403). cumulo keeps labels and rules; no agent counts
traffic against them yet (Neutron's metering agent reports to notifications only).
"""

from __future__ import annotations

import ipaddress
from typing import Any, TypeVar

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.common.openapi import describes, wrapped
from cumulo.network.api.common import (
    caller,
    list_response,
    no_content,
    owner_of,
    resource_body,
    service_of,
    show,
    to_bool,
    to_str,
)
from cumulo.network.core import NetworkService, new_id
from cumulo.network.errors import (
    InvalidInput,
    MeteringLabelNotFound,
    MeteringLabelRuleNotFound,
    MeteringLabelRuleOverlaps,
)
from cumulo.network.models import MeteringLabel, MeteringLabelRule
from cumulo.network.ports import write_retrying

Row = TypeVar("Row", MeteringLabel, MeteringLabelRule)
LABEL_ATTRS = ("name", "description", "shared")
RULE_ATTRS = (
    "metering_label_id", "direction", "excluded", "remote_ip_prefix", "source_ip_prefix",
    "destination_ip_prefix",
)  # fmt: skip
PREFIXES = ("remote_ip_prefix", "source_ip_prefix", "destination_ip_prefix")


def render_label(label: MeteringLabel) -> dict[str, Any]:
    return {
        "id": label.id,
        "name": label.name,
        "description": label.description,
        "project_id": label.project_id,
        "tenant_id": label.project_id,
        "shared": label.shared,
    }


def render_rule(rule: MeteringLabelRule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "metering_label_id": rule.metering_label_id,
        "direction": rule.direction,
        "excluded": rule.excluded,
        **{name: getattr(rule, name) for name in PREFIXES},
    }


async def _rows(service: NetworkService, ctx: RequestContext, model: type[Row]) -> list[Row]:
    """Every label (or rule) for an admin; nothing for anyone else."""
    if not service.is_admin(ctx):
        return []
    async with service.db.read() as session:
        return list(await session.scalars(select(model)))


async def _row(service: NetworkService, ctx: RequestContext, model: type[Row], row_id: str) -> Row:
    """One label (or rule) an admin asks for; 404 for anyone else, as Neutron."""
    async with service.db.read() as session:
        row = await session.get(model, row_id)
    if row is None or not service.is_admin(ctx):
        if model is MeteringLabel:
            raise MeteringLabelNotFound(f"Metering label {row_id} does not exist")
        raise MeteringLabelRuleNotFound(f"Metering label rule {row_id} does not exist")
    return row


async def list_labels(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    labels = await _rows(service, ctx, MeteringLabel)
    return list_response(request, "metering_labels", [render_label(lb) for lb in labels])


@describes(body=wrapped("metering_label", LABEL_ATTRS), resource="metering_label")
async def create_label(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    a = await resource_body(request, "metering_label", LABEL_ATTRS)
    service.enforce(ctx, "network:admin_only")
    label = MeteringLabel(
        id=new_id(),
        project_id=owner_of(service, ctx, a),
        name=to_str("name", a.get("name", "")),
        description=to_str("description", a.get("description", ""), 1024),
        shared=to_bool("shared", a.get("shared", False)),
    )

    async def work(session):
        session.add(label)

    await write_retrying(service.db, work)
    return show(request, "metering_label", render_label(label), 201)


async def show_label(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    label = await _row(service, ctx, MeteringLabel, request.path_params["label_id"])
    return show(request, "metering_label", render_label(label))


async def delete_label(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    label = await _row(service, ctx, MeteringLabel, request.path_params["label_id"])

    async def work(session):
        rules = delete(MeteringLabelRule).where(MeteringLabelRule.metering_label_id == label.id)
        await session.execute(rules)
        await session.execute(delete(MeteringLabel).where(MeteringLabel.id == label.id))

    await write_retrying(service.db, work)
    return no_content()


def _prefix(name: str, value: Any) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_network(str(value), strict=False))
    except ValueError:
        raise InvalidInput(
            f"Invalid input for {name}. Reason: '{value}' is not a valid IP subnet."
        ) from None


def _overlaps(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    net_a, net_b = ipaddress.ip_network(a), ipaddress.ip_network(b)
    return net_a.version == net_b.version and net_a.overlaps(net_b)  # type: ignore[arg-type]


async def list_rules(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    rules = await _rows(service, ctx, MeteringLabelRule)
    return list_response(request, "metering_label_rules", [render_rule(r) for r in rules])


@describes(body=wrapped("metering_label_rule", RULE_ATTRS), resource="metering_label_rule")
async def create_rule(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    a = await resource_body(request, "metering_label_rule", RULE_ATTRS)
    a.pop("project_id", None)
    service.enforce(ctx, "network:admin_only")
    if "metering_label_id" not in a:
        raise BadRequest(
            "Failed to parse request. Required attribute 'metering_label_id' not specified"
        )
    label = await _row(service, ctx, MeteringLabel, str(a["metering_label_id"]))
    direction = a.get("direction")
    if direction not in ("ingress", "egress"):
        raise InvalidInput(
            f"Invalid input for direction. Reason: '{direction}' is not in ['ingress', 'egress']."
        )
    prefixes = {name: _prefix(name, a.get(name)) for name in PREFIXES}
    remote = prefixes["remote_ip_prefix"]
    if remote and (prefixes["source_ip_prefix"] or prefixes["destination_ip_prefix"]):
        raise BadRequest(
            "Cannot use 'remote-ip-prefix' in conjunction with 'source-ip-prefix' or "
            "'destination-ip-prefix'."
        )
    if not any(prefixes.values()):
        raise BadRequest(
            "You must define at least one of the following parameters 'remote_ip_prefix', or "
            "'source_ip_prefix' or 'destination_ip_prefix'."
        )
    rule = MeteringLabelRule(
        id=new_id(),
        metering_label_id=label.id,
        direction=direction,
        excluded=to_bool("excluded", a.get("excluded", False)),
        **prefixes,
    )

    async def work(session):
        siblings = await session.scalars(
            select(MeteringLabelRule).where(
                MeteringLabelRule.metering_label_id == label.id,
                MeteringLabelRule.direction == direction,
                MeteringLabelRule.excluded == rule.excluded,
            )
        )
        for other in siblings:
            if all(_overlaps(getattr(other, n), getattr(rule, n)) for n in PREFIXES):
                raise MeteringLabelRuleOverlaps(
                    f"Metering label rule with remote_ip_prefix {remote} overlaps another."
                )
        session.add(rule)

    await write_retrying(service.db, work)
    return show(request, "metering_label_rule", render_rule(rule), 201)


async def show_rule(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    rule = await _row(service, ctx, MeteringLabelRule, request.path_params["rule_id"])
    return show(request, "metering_label_rule", render_rule(rule))


async def delete_rule(request: Request) -> Response:
    service, ctx = service_of(request), await caller(request)
    rule = await _row(service, ctx, MeteringLabelRule, request.path_params["rule_id"])

    async def work(session):
        await session.execute(delete(MeteringLabelRule).where(MeteringLabelRule.id == rule.id))

    await write_retrying(service.db, work)
    return no_content()


_LABELS = "/v2.0/metering/metering-labels"
_RULES = "/v2.0/metering/metering-label-rules"
routes = [
    Route(_LABELS, list_labels, methods=["GET"]),
    Route(_LABELS, create_label, methods=["POST"]),
    Route(_LABELS + "/{label_id}", show_label, methods=["GET"]),
    Route(_LABELS + "/{label_id}", delete_label, methods=["DELETE"]),
    Route(_RULES, list_rules, methods=["GET"]),
    Route(_RULES, create_rule, methods=["POST"]),
    Route(_RULES + "/{rule_id}", show_rule, methods=["GET"]),
    Route(_RULES + "/{rule_id}", delete_rule, methods=["DELETE"]),
]
