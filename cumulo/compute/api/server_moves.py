"""The server actions that move a server (api-ref: Servers - run an action): shelve,
shelveOffload, unshelve, rescue, unrescue, migrate, os-migrateLive, evacuate.

Each handler validates the action's body for the request's microversion and calls
the compute service (service_moves); server_actions dispatches to ACTIONS.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cumulo.common.context import RequestContext
from cumulo.common.faults import BadRequest
from cumulo.compute.api.common import compute_of, json, no_content, version
from cumulo.compute.models import Instance


def _args(args: Any, action: str, allowed: set[str]) -> dict[str, Any]:
    """The action's object (null is an empty one); unknown keys are a 400."""
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise BadRequest(f"Invalid input for field/attribute {action}.")
    unknown = set(args) - allowed
    if unknown:
        raise BadRequest(
            f"Invalid input for field/attribute {action}. Additional properties are not "
            f"allowed ({', '.join(sorted(repr(k) for k in unknown))} were unexpected)"
        )
    return args


def _host(value: Any, field: str = "host") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 255:
        raise BadRequest(f"Invalid input for field/attribute {field}.")
    return value


def _boolean(value: Any, field: str) -> bool:
    """Nova's boolean parameter type: true/false and their string spellings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "t", "y"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off", "f", "n"):
        return False
    raise BadRequest(f"Invalid input for field/attribute {field}. Value: {value!r}.")


async def shelve(request: Request, ctx: RequestContext, inst: Instance, args: Any) -> Response:
    _args(args, "shelve", set())
    await compute_of(request).shelve(inst, ctx)
    return no_content(202)


async def shelve_offload(
    request: Request, ctx: RequestContext, inst: Instance, args: Any
) -> Response:
    _args(args, "shelveOffload", set())
    await compute_of(request).shelve_offload(inst, ctx)
    return no_content(202)


async def unshelve(request: Request, ctx: RequestContext, inst: Instance, args: Any) -> Response:
    """2.77: availability_zone; 2.91: host, and a null zone (unpin)."""
    allowed: set[str] = set()
    if version(request) >= (2, 77):
        allowed.add("availability_zone")
    if version(request) >= (2, 91):
        allowed.add("host")
    body = _args(args, "unshelve", allowed)
    zone = body.get("availability_zone")
    if "availability_zone" in body and not (
        (isinstance(zone, str) and 1 <= len(zone) <= 255)
        or (zone is None and version(request) >= (2, 91))
    ):
        raise BadRequest("Invalid input for field/attribute availability_zone.")
    if "host" in body and body["host"] is None:  # Nova's 2.91 schema: a string
        raise BadRequest("Invalid input for field/attribute host. Value: None.")
    await compute_of(request).unshelve(
        inst,
        ctx,
        availability_zone=zone,
        host=_host(body.get("host")),
        zone_given="availability_zone" in body,
    )
    return no_content(202)


async def rescue(request: Request, ctx: RequestContext, inst: Instance, args: Any) -> Response:
    body = _args(args, "rescue", {"adminPass", "rescue_image_ref"})
    password = body.get("adminPass")
    if password is not None and not isinstance(password, str):
        raise BadRequest("Invalid input for field/attribute adminPass.")
    image_ref = body.get("rescue_image_ref")
    if image_ref is not None and (not isinstance(image_ref, str) or not image_ref):
        raise BadRequest("Invalid input for field/attribute rescue_image_ref.")
    password = await compute_of(request).rescue(
        inst, ctx, image_ref, password, allow_bfv_rescue=version(request) >= (2, 87)
    )
    return json({"adminPass": password})


async def unrescue(request: Request, ctx: RequestContext, inst: Instance, args: Any) -> Response:
    _args(args, "unrescue", set())
    await compute_of(request).unrescue(inst, ctx)
    return no_content(202)


async def migrate(request: Request, ctx: RequestContext, inst: Instance, args: Any) -> Response:
    """Cold migration; 2.56 names the host."""
    body = _args(args, "migrate", {"host"} if version(request) >= (2, 56) else set())
    await compute_of(request).migrate(inst, ctx, _host(body.get("host")))
    return no_content(202)


async def live_migrate(
    request: Request, ctx: RequestContext, inst: Instance, args: Any
) -> Response:
    """os-migrateLive: host and block_migration always; disk_over_commit before 2.25,
    "auto" from 2.25, force from 2.30 until 2.68."""
    v = version(request)
    allowed = {"host", "block_migration"}
    if v < (2, 25):
        allowed.add("disk_over_commit")
    if (2, 30) <= v < (2, 68):
        allowed.add("force")
    if not isinstance(args, dict):
        raise BadRequest("Invalid input for field/attribute os-migrateLive.")
    body = _args(args, "os-migrateLive", allowed)
    required = {"host", "block_migration"} | ({"disk_over_commit"} if v < (2, 25) else set())
    missing = required - set(body)
    if missing:
        raise BadRequest(f"'{sorted(missing)[0]}' is a required property")
    raw = body["block_migration"]
    block: bool | None
    if raw == "auto" and v >= (2, 25):
        block = None
    else:
        block = _boolean(raw, "block_migration")
    if "disk_over_commit" in body:
        _boolean(body["disk_over_commit"], "disk_over_commit")
    if "force" in body:
        _boolean(body["force"], "force")
    await compute_of(request).live_migrate(inst, ctx, _host(body.get("host")), block)
    return no_content(202)


async def evacuate(request: Request, ctx: RequestContext, inst: Instance, args: Any) -> Response:
    """200; adminPass in the body before 2.14 (onSharedStorage required then), force
    from 2.29 until 2.68; from 2.95 the server ends STOPPED on its new host."""
    v = version(request)
    allowed = {"host", "adminPass"}
    if v < (2, 14):
        allowed.add("onSharedStorage")
    if (2, 29) <= v < (2, 68):
        allowed.add("force")
    if not isinstance(args, dict):
        raise BadRequest("Invalid input for field/attribute evacuate.")
    body = _args(args, "evacuate", allowed)
    if v < (2, 14):
        if "onSharedStorage" not in body:
            raise BadRequest("'onSharedStorage' is a required property")
        if _boolean(body["onSharedStorage"], "onSharedStorage"):
            raise BadRequest(
                "The servers' disks are local to their hosts here: onSharedStorage must be false."
            )
    password = body.get("adminPass")
    if password is not None and not isinstance(password, str):
        raise BadRequest("Invalid input for field/attribute adminPass.")
    if "force" in body:
        _boolean(body["force"], "force")
    # 2.95: the server is left stopped on its new host (Nova's target_state).
    password = await compute_of(request).evacuate(
        inst, ctx, _host(body.get("host")), password, stopped=v >= (2, 95)
    )
    if v < (2, 14):
        return json({"adminPass": password})
    return Response(status_code=200)


ACTIONS: dict[str, Callable[[Request, RequestContext, Instance, Any], Awaitable[Response]]] = {
    "shelve": shelve,
    "shelveOffload": shelve_offload,
    "unshelve": unshelve,
    "rescue": rescue,
    "unrescue": unrescue,
    "migrate": migrate,
    "os-migrateLive": live_migrate,
    "evacuate": evacuate,
}
