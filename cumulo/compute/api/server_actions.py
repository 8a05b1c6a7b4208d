"""POST /servers/{id}/action and os-instance-actions (api-ref: Servers - run an action)."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, Conflict, NotFound, NotImplementedYet
from cumulo.common.openapi import describes
from cumulo.compute import consoles
from cumulo.compute.api import (
    floating_ips,
    multinic,
    server_backups,
    server_moves,
    server_security,
    wire,
)
from cumulo.compute.api.common import (
    authorize,
    base_url,
    compute_of,
    json,
    no_content,
    version,
)
from cumulo.compute.api.servers import render_server
from cumulo.compute.api.views import disk_config_changes, host_id
from cumulo.compute.api.wire import check_metadata
from cumulo.compute.image_signature import with_trusted_certs
from cumulo.compute.models import Instance, InstanceAction, InstanceActionEvent, KeyPair
from cumulo.compute.states import InstanceInvalidState

# Actions the api-ref defines that this cloud does not do yet (answered 501, honestly).
NOT_YET = {
    "trigger_crash_dump",
    "resetNetwork",
    "os-getSPICEConsole",
    "os-getRDPConsole",
}


@describes(statuses={501: "An action this cloud or its virt driver does not implement."})
async def server_action(request: Request) -> Response:
    ctx = await authorize(request, "compute:servers:index")
    service = compute_of(request)
    data = await json_body(request)
    if not isinstance(data, dict) or len(data) != 1:
        raise BadRequest("Malformed request body: one action is expected.")
    [(action, args)] = data.items()
    inst = await service.get_instance(
        ctx, request.path_params["server_id"], "compute:servers:action"
    )
    try:
        if action == "os-stop":
            await service.stop(inst, ctx)
        elif action == "os-start":
            await service.start(inst, ctx)
        elif action == "reboot":
            kind = (args or {}).get("type") if isinstance(args, dict) else None
            if kind not in ("SOFT", "HARD", "soft", "hard"):
                raise BadRequest("Invalid input for field/attribute type: SOFT or HARD.")
            if kind.upper() == "HARD":
                await service.hard_reboot(inst, ctx)
            else:
                await service.soft_reboot(inst, ctx)
        elif action in ("pause", "unpause", "suspend", "resume"):
            await getattr(service, action)(inst, ctx)
        elif action == "lock":
            reason = None
            if isinstance(args, dict) and "locked_reason" in args:
                if version(request) < (2, 73):
                    raise BadRequest("locked_reason is accepted from microversion 2.73.")
                reason = args["locked_reason"]
                if not isinstance(reason, str) or len(reason) > 255:
                    raise BadRequest("Invalid input for field/attribute locked_reason.")
            await service.lock(ctx, inst, reason)
        elif action == "unlock":
            await service.unlock(ctx, inst)
        elif action == "os-getConsoleOutput":
            length = (args or {}).get("length") if isinstance(args, dict) else None
            if length is not None:
                try:
                    length = int(length)
                except (TypeError, ValueError):
                    raise BadRequest("Invalid input for field/attribute length.") from None
                if length < -1:
                    raise BadRequest("Invalid input for field/attribute length.")
                if length == -1:
                    length = None
            output = await service.console_output(ctx, inst, length)
            return json({"output": output})
        elif action == "createImage":
            return await _create_image(request, ctx, inst, args)
        elif action == "rebuild":
            return await _rebuild(request, ctx, inst, args)
        elif action == "resize":
            flavor_ref = args.get("flavorRef") if isinstance(args, dict) else None
            if not isinstance(flavor_ref, (str, int)) or flavor_ref == "":
                raise BadRequest("Invalid input for field/attribute flavorRef.")
            if "OS-DCF:diskConfig" in args:
                # Written with the resize's own record of the instance (its system metadata).
                inst.system_metadata = disk_config_changes(inst, args["OS-DCF:diskConfig"])[
                    "system_metadata"
                ]
            await service.resize(inst, ctx, str(flavor_ref))
        elif action == "confirmResize":
            await service.confirm_resize(inst, ctx)
            return no_content(204)
        elif action == "revertResize":
            await service.revert_resize(inst, ctx)
        elif action == "changePassword":
            password = args.get("adminPass") if isinstance(args, dict) else None
            if not isinstance(password, str) or not password:
                raise BadRequest("Invalid input for field/attribute adminPass.")
            await service.change_password(inst, ctx, password)
        elif action == "os-getVNCConsole":
            kind = args.get("type") if isinstance(args, dict) else None
            if kind not in ("novnc", "xvpvnc"):
                raise BadRequest("Invalid input for field/attribute type: novnc or xvpvnc.")
            url = await console_url(service, inst, await service.vnc_console(ctx, inst))
            return json({"console": {"type": kind, "url": url}})
        elif action == "os-getSPICEConsole":
            kind = args.get("type") if isinstance(args, dict) else None
            if kind != "spice-html5":
                raise BadRequest("Invalid input for field/attribute type: spice-html5.")
            console = await service.spice_console(ctx, inst, kind)
            url = await spice_console_url(service, inst, console, kind)
            return json({"console": {"type": kind, "url": url}})
        elif action == "os-getSerialConsole":
            kind = args.get("type") if isinstance(args, dict) else None
            if kind != "serial":
                raise BadRequest("Invalid input for field/attribute type: serial.")
            console = await service.serial_console(ctx, inst)
            return json(
                {"console": {"type": kind, "url": await serial_console_url(service, inst, console)}}
            )
        elif action == "addSecurityGroup":
            await server_security.add_security_group(
                service, ctx, inst, server_security.group_name(args)
            )
        elif action == "removeSecurityGroup":
            await server_security.remove_security_group(
                service, ctx, inst, server_security.group_name(args)
            )
        elif action == "createBackup":
            image_id = await server_backups.create_backup(request, ctx, inst, args)
            return image_accepted(request, image_id) if image_id else no_content(202)
        elif action == "addFloatingIp":
            await floating_ips.add_floating_ip(request, ctx, inst, args)
        elif action == "removeFloatingIp":
            await floating_ips.remove_floating_ip(request, ctx, inst, args)
        elif action == "addFixedIp":
            await multinic.add_fixed_ip(request, ctx, inst, args)
        elif action == "removeFixedIp":
            await multinic.remove_fixed_ip(request, ctx, inst, args)
        elif action == "restore":
            # Deletes are immediate here (no reclaim interval): no server is ever
            # SOFT_DELETED, so there is nothing to restore (Nova's 409).
            raise InstanceInvalidState("restore", "vm_state", inst.vm_state)
        elif action == "forceDelete":
            await service.delete(ctx, inst)
        elif action == "injectNetworkInfo":
            # Guests read their network from DHCP and the config drive; nothing to push
            # (as Nova's libvirt driver, which does nothing either).
            await authorize(request, "compute:servers:reset_state")
        elif action == "os-resetState":
            await authorize(request, "compute:servers:reset_state")
            await server_security.reset_state(service, ctx, inst, args)
        elif action in server_moves.ACTIONS:
            return await server_moves.ACTIONS[action](request, ctx, inst, args)
        elif action in NOT_YET:
            raise NotImplementedYet(
                f"Server action '{action}' is not implemented by this cloud yet."
            )
        else:
            raise BadRequest(f"There is no such action: {action}")
    except InstanceInvalidState as exc:
        raise Conflict(
            f"Cannot '{exc.action}' instance {inst.uuid} while it is in {exc.attr} {exc.state}"
        ) from None
    return no_content(202)


async def _create_image(request: Request, ctx, inst, args: Any) -> Response:
    if not isinstance(args, dict):
        raise BadRequest("Invalid input for field/attribute createImage.")
    name = args.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        raise BadRequest("Invalid input for field/attribute name: 1-255 characters.")
    metadata = check_metadata(args.get("metadata") or {})
    image_id = await compute_of(request).create_image(inst, ctx, name, metadata)
    return image_accepted(request, image_id)


def image_accepted(request: Request, image_id: str) -> Response:
    """202 for createImage/createBackup: the image id in the body from 2.45, else Location."""
    if version(request) >= (2, 45):
        return json({"image_id": image_id}, status=202)
    return no_content_with_location(f"{base_url(request)}/images/{image_id}")


def no_content_with_location(location: str) -> Response:
    return Response(status_code=202, headers={"Location": location})


async def _key_changes(request: Request, ctx, key_name: Any) -> dict[str, Any]:
    """Rebuild's `key_name` (2.54): the rebuilding user's key pair replaces the server's,
    null removes it (Nova's KeypairNotFound is a 400)."""
    if key_name is None:
        return {"key_name": None, "key_data": None}
    if not isinstance(key_name, str) or not 1 <= len(key_name) <= 255:
        raise BadRequest("Invalid input for field/attribute key_name.")
    async with compute_of(request).db.read() as s:
        key = await s.scalar(
            select(KeyPair).where(KeyPair.user_id == ctx.user_id, KeyPair.name == key_name)
        )
    if key is None:
        raise BadRequest(f"Keypair {key_name} not found for user {ctx.user_id}")
    return {"key_name": key.name, "key_data": key.public_key}


async def _rebuild(request: Request, ctx, inst, args: Any) -> Response:
    if not isinstance(args, dict) or not isinstance(args.get("imageRef"), str):
        raise BadRequest("Invalid input for field/attribute imageRef.")
    changes: dict[str, Any] = {}
    if "name" in args:
        name = args["name"]
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            raise BadRequest("Invalid input for field/attribute name.")
        changes["display_name"] = name
    if "metadata" in args:
        meta = args["metadata"]
        if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= 255 for k, v in meta.items()
        ):
            raise BadRequest("Invalid input for field/attribute metadata.")
        changes["metadata_items"] = meta
    if "description" in args and version(request) >= (2, 19):
        changes["display_description"] = args["description"]
    for field, column in (("accessIPv4", "access_ip_v4"), ("accessIPv6", "access_ip_v6")):
        if field in args:
            changes[column] = wire.access_ip(field, args[field])
    if "OS-DCF:diskConfig" in args:
        changes.update(disk_config_changes(inst, args["OS-DCF:diskConfig"]))
    if "hostname" in args and version(request) >= (2, 90):
        changes["hostname"] = wire.hostname(args["hostname"], fqdn=version(request) >= (2, 94))
    if "key_name" in args and version(request) >= (2, 54):
        changes.update(await _key_changes(request, ctx, args["key_name"]))
    if "trusted_image_certificates" in args and version(request) >= (2, 63):
        # Given (null too) they replace the server's, as Nova's rebuild does.
        certs = wire.trusted_certs(args["trusted_image_certificates"])
        if certs and not inst.image_ref:
            raise BadRequest(
                "Image certificate validation is not supported for volume-backed servers."
            )
        sysmeta = changes.get("system_metadata", inst.system_metadata or {})
        changes["system_metadata"] = with_trusted_certs(sysmeta, certs)
    files = wire.personality(args["personality"], version(request)) if "personality" in args else []
    password = args.get("adminPass")
    if password is not None and not isinstance(password, str):
        raise BadRequest("Invalid input for field/attribute adminPass.")
    # The guest gets the password it is told (the config drive's admin_pass, as the
    # build's), a new random one when none is given.
    password = password or secrets.token_urlsafe(9)
    service = compute_of(request)
    # 2.93: a volume-backed server's root volume is reimaged (before it, only its own
    # image is accepted).
    inst = await service.rebuild(
        inst,
        ctx,
        args["imageRef"],
        changes,
        reimage_boot_volume=version(request) >= (2, 93),
        injected_files=files,
        admin_pass=password,
    )
    is_admin = service.policy.check("compute:servers:show:extended_attributes", ctx)
    body = await render_server(request, ctx, inst, is_admin, "rebuild")
    body["adminPass"] = password
    return json({"server": body}, status=202)


async def console_url(service, inst, console: dict[str, Any]) -> str:
    """The noVNC proxy's address for the guest's VNC server, with a fresh token."""
    token = await consoles.issue_token(service.db, service.config, inst.uuid, console)
    return consoles.access_url(service.config, token)


async def spice_console_url(service, inst, console: dict[str, Any], console_type: str) -> str:
    """A fresh token for the guest's SPICE server: spice-html5 through this cloud's
    proxy, or spice-direct (a SPICE client at the host's port, no internal path)."""
    if console_type == "spice-direct":
        console = {**console, "internal_access_path": None}
    token = await consoles.issue_token(service.db, service.config, inst.uuid, console, console_type)
    if console_type == "spice-direct":
        return consoles.spice_direct_access_url(service.config, token)
    return consoles.spice_html5_access_url(service.config, token)


async def serial_console_url(service, inst, console: dict[str, Any]) -> str:
    """The serial proxy's websocket for the guest's serial port, with a fresh token."""
    token = await consoles.issue_token(service.db, service.config, inst.uuid, console, "serial")
    return consoles.serial_access_url(service.config, token)


# -- os-instance-actions ---------------------------------------------------------------


def _time(value) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def _action_view(request: Request, a: InstanceAction) -> dict[str, Any]:
    body = {
        "action": a.action,
        "instance_uuid": a.instance_uuid,
        "message": a.message,
        "project_id": a.project_id,
        "request_id": a.request_id,
        "start_time": _time(a.start_time),
        "user_id": a.user_id,
    }
    if version(request) >= (2, 58):
        body["updated_at"] = _time(a.updated_at or a.start_time)
    return body


async def _actions_instance(request: Request, ctx) -> Instance:
    """The server whose actions are read; from 2.21 a deleted one too (as Nova)."""
    service = compute_of(request)
    server_id = request.path_params["server_id"]
    if version(request) < (2, 21):
        return await service.get_instance(ctx, server_id, "compute:instance_actions")
    async with service.db.read() as s:
        found = (
            await s.scalars(
                select(Instance)
                .where(Instance.uuid == server_id)
                .order_by(Instance.deleted)  # a live row first
            )
        ).first()
    rule_ok = found is not None and service.policy.check(
        "compute:instance_actions", ctx, {"project_id": found.project_id}
    )
    if not rule_ok:
        raise NotFound(f"Instance {server_id} could not be found.")
    return found


async def list_instance_actions(request: Request) -> Response:
    ctx = await authorize(request, "compute:servers:index")
    service = compute_of(request)
    inst = await _actions_instance(request, ctx)
    async with service.db.read() as s:
        rows = await s.scalars(
            select(InstanceAction)
            .where(InstanceAction.instance_uuid == inst.uuid)
            .order_by(InstanceAction.id.desc())
        )
        actions = [_action_view(request, a) for a in rows]
    return json({"instanceActions": actions})


def _failure_details(ev: InstanceActionEvent) -> str | None:
    """2.84: a failed event's fault message (what the server's fault says; at most 255
    characters, as Nova keeps it); null for the others."""
    if ev.result != "Error" or not ev.traceback:
        return None
    return ev.traceback[:255]


async def show_instance_action(request: Request) -> Response:
    ctx = await authorize(request, "compute:servers:index")
    service = compute_of(request)
    inst = await _actions_instance(request, ctx)
    details = service.policy.check("compute:instance_actions:events:details", ctx)
    async with service.db.read() as s:
        action = await s.scalar(
            select(InstanceAction).where(
                InstanceAction.instance_uuid == inst.uuid,
                InstanceAction.request_id == request.path_params["request_id"],
            )
        )
        if action is None:
            raise NotFound(
                f"Action for request_id {request.path_params['request_id']} on "
                f"instance {inst.uuid} not found"
            )
        events = (
            await s.scalars(
                select(InstanceActionEvent)
                .where(InstanceActionEvent.action_id == action.id)
                .order_by(InstanceActionEvent.id)
            )
        ).all()
    body = _action_view(request, action)
    body["events"] = []
    for ev in events:
        event: dict[str, Any] = {
            "event": ev.event,
            "start_time": _time(ev.start_time),
            "finish_time": _time(ev.finish_time),
            "result": ev.result,
        }
        if details:
            event["traceback"] = ev.traceback
        if version(request) >= (2, 62):
            if details:
                event["host"] = ev.host or ""
            event["hostId"] = host_id(inst) if ev.host else ""
        if version(request) >= (2, 84) and details:
            event["details"] = _failure_details(ev)
        body["events"].append(event)
    return json({"instanceAction": body})


routes = [
    Route("/v2.1/servers/{server_id}/action", server_action, methods=["POST"]),
    Route("/v2.1/servers/{server_id}/os-instance-actions", list_instance_actions, methods=["GET"]),
    Route(
        "/v2.1/servers/{server_id}/os-instance-actions/{request_id}",
        show_instance_action,
        methods=["GET"],
    ),
]
