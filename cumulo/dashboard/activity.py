"""The overview's "Recent activity": what happened in the project lately, read from the
REST APIs with the user's token (Compute's instance actions of the most recently
updated servers, Block Storage's most recently updated volumes), merged newest first.

The merge and the words are pure functions (tests/unit/test_dashboard_activity.py);
`recent_activity` makes the calls: the server and volume lists in parallel, then every
listed server's action log in parallel, then the details of the failed actions shown.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from cumulo.common.service_client import url_path
from cumulo.dashboard.apis import ApiFailure, UserApis, gather
from cumulo.dashboard.pages.compute import STEP_LABELS

# Servers whose action logs are read (one call each): the page's cost stays flat however
# large the project.
MAX_SERVERS = 10
MAX_VOLUMES = 10
MAX_ENTRIES = 20
# A volume settles (creating → available) within this of its creation: an update later
# than that is a change worth its own entry.
VOLUME_SETTLE = timedelta(seconds=60)

# Nova's action names (os-instance-actions `action`) in plain words; the others are
# split at their capitals, dashes and underscores ("swap_volume" → "swap volume").
ACTION_WORDS = {
    "confirmResize": "confirm resize",
    "revertResize": "revert resize",
    "createImage": "create snapshot image",
    "createBackup": "create backup image",
    "changePassword": "change password",
    "resetState": "reset state",
    "shelveOffload": "shelve offload",
    "live-migration": "live migrate",
    "live_migration_cancel": "cancel live migration",
    "live_migration_force_complete": "force live migration to complete",
    "softDelete": "soft delete",
    "forceDelete": "force delete",
    "restore": "restore (undo soft delete)",
    "trigger_crash_dump": "trigger crash dump",
}


def action_words(action: str) -> str:
    """A Nova action name in plain words."""
    if action in ACTION_WORDS:
        return ACTION_WORDS[action]
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", action).replace("_", " ").replace("-", " ")
    return spaced.lower().strip() or "unknown action"


def parse_api_time(value: str | None) -> datetime | None:
    """An API timestamp (Nova's and Cinder's carry no zone: UTC) as an aware datetime."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def relative_time(then: datetime, now: datetime) -> str:
    """How long ago, in the largest whole unit ("3 minutes ago")."""
    seconds = int((now - then).total_seconds())
    if seconds < 5:
        return "just now"  # also a clock a little ahead of the dashboard's
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "just now"


def iso_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(
    when: datetime, now: datetime, what: str, target: dict[str, str], **rest: Any
) -> dict[str, Any]:
    return {
        "when": when,
        "iso": iso_time(when),
        "ago": relative_time(when, now),
        "what": what,
        "target": target,  # {"kind", "label", "id", "name", "url"}
        "user_id": rest.get("user_id") or "",
        "request_id": rest.get("request_id") or "",
        "result": rest.get("result", "finished"),
        "error": rest.get("error"),
        "failed_action": rest.get("failed_action"),
    }


def server_entries(
    server: dict[str, Any], actions: list[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """A server's instance actions as entries. Nova's list says an action failed (its
    `message`, "Error") but not whether it is still running: the server's newest action
    is "in progress" while the server has a task (or builds)."""
    target = {
        "kind": "server",
        "label": "instance",  # the dashboard's word for a server
        "id": server["id"],
        "name": server.get("name") or server["id"],
        "url": f"/instances/{server['id']}",
    }
    busy = bool(server.get("OS-EXT-STS:task_state")) or server.get("status") == "BUILD"
    dated = [(parse_api_time(a.get("start_time")), a) for a in actions]
    dated = [(when, a) for when, a in dated if when is not None]
    newest = max(dated, key=lambda pair: pair[0], default=(None, None))[1]
    entries = []
    for when, action in dated:
        if action.get("message"):
            result = "error"
        elif busy and action is newest:
            result = "in progress"
        else:
            result = "finished"
        entries.append(
            _entry(
                when,
                now,
                action_words(action.get("action") or ""),
                target,
                user_id=action.get("user_id"),
                request_id=action.get("request_id"),
                result=result,
                # Filled in from the action's events once the entries shown are known.
                error="Failed." if result == "error" else None,
                failed_action=(server, action) if result == "error" else None,
            )
        )
    return entries


def volume_entries(volume: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """A volume's creation, and its latest change when it came after the volume settled
    (Cinder keeps no log of who changed it: the change has no user)."""
    created, updated = (
        parse_api_time(volume.get("created_at")),
        parse_api_time(volume.get("updated_at")),
    )
    if created is None:
        return []
    target = {
        "kind": "volume",
        "label": "volume",
        "id": volume["id"],
        "name": volume.get("name") or volume["id"],
        "url": "/volumes",
    }
    status = volume.get("status") or ""
    failed = status.startswith("error")
    error = f"The volume is in {status.replace('_', ' ')}." if failed else None
    changed_later = updated is not None and updated - created >= VOLUME_SETTLE
    entries = [
        _entry(
            created,
            now,
            "create volume",
            target,
            user_id=volume.get("user_id"),
            result="error" if failed and not changed_later else "finished",
            error=None if changed_later else error,
        )
    ]
    if changed_later:
        entries.append(
            _entry(
                updated,
                now,
                f"volume changed (now {status or 'unknown'})",
                target,
                result="error" if failed else "finished",
                error=error,
            )
        )
    return entries


def merge_activity(
    servers: list[dict[str, Any]],
    actions_by_server: dict[str, list[dict[str, Any]]],
    volumes: list[dict[str, Any]],
    now: datetime,
    project_id: str,
    limit: int = MAX_ENTRIES,
) -> list[dict[str, Any]]:
    """Every server's actions and every volume's changes, newest first, the first
    `limit`. Only `project_id`'s resources count (an admin's token lists its own
    project's, but the page does not rely on it)."""
    entries: list[dict[str, Any]] = []
    for server in servers:
        if server.get("tenant_id", project_id) != project_id:
            continue
        entries += server_entries(server, actions_by_server.get(server["id"], []), now)
    for volume in volumes:
        owner = volume.get("os-vol-tenant-attr:tenant_id", project_id)
        if owner == project_id:
            entries += volume_entries(volume, now)
    entries.sort(key=lambda e: e["when"], reverse=True)
    return entries[:limit]


def failure_words(server: dict[str, Any], action: dict[str, Any], newest_failure: bool) -> str:
    """A failed action in plain words: the steps that failed and why, from its events
    (their traceback is shown to admins only) or, for the server's latest failure, the
    server's fault (what Compute shows its owner)."""
    failed = [e for e in action.get("events") or [] if e.get("result") == "Error"]
    steps = [STEP_LABELS.get(e.get("event", ""), action_words(e.get("event", ""))) for e in failed]
    why = ""
    for event in failed:
        text = event.get("details") or event.get("traceback") or ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            why = lines[-1][:255]  # a traceback's last line is the exception's message
            break
    fault = (server.get("fault") or {}).get("message") or ""
    if not why and newest_failure and server.get("status") == "ERROR" and fault:
        why = fault
    said = f"Failed at {', '.join(steps)}" if steps else "Failed"
    if why:
        # The usual fix where there is one ("no valid host": a smaller flavor).
        return f"{said}: {ApiFailure('compute', 500, why).explanation}"
    return f"{said}."


def _request_failure(exc: ApiFailure) -> str:
    said = exc.explanation
    return f"{said} (request {exc.request_id})" if exc.request_id else said


async def recent_activity(api: UserApis, project_id: str) -> dict[str, Any]:
    """The section's entries, and in plain words what could not be read (an API's
    failure shows as a message in the section, never as an error page). A 401 is
    raised: the page's wrapper ends the session."""
    problems: list[str] = []

    async def read(call, default, what: str):
        try:
            return await call
        except ApiFailure as exc:
            if exc.status == 401:
                raise
            problems.append(f"{what} could not be read: {_request_failure(exc)}")
            return default

    servers_body, volumes_body = await gather(
        read(
            api.compute.get(f"/v2.1/servers/detail?sort_key=updated_at&limit={MAX_SERVERS}"),
            {"servers": []},
            "The servers",
        ),
        # Block Storage down: the servers' activity still shows, and the other way round.
        read(
            api.volume.get(f"/v3/volumes/detail?sort=updated_at:desc&limit={MAX_VOLUMES}"),
            {"volumes": []},
            "The volumes",
        ),
    )
    servers = servers_body["servers"][:MAX_SERVERS]

    async def actions_of(server: dict[str, Any]) -> list[dict[str, Any]]:
        path = url_path("/v2.1/servers/{}/os-instance-actions", server["id"])
        try:
            return (await api.compute.get(path))["instanceActions"]
        except ApiFailure as exc:
            if exc.status == 401:
                raise
            if exc.status != 404:  # 404: deleted since it was listed, nothing to show
                name = server.get("name") or server["id"]
                problems.append(f"The actions of {name} could not be read: {_request_failure(exc)}")
            return []

    logs = await gather(*(actions_of(s) for s in servers))
    now = datetime.now(UTC)
    entries = merge_activity(
        servers,
        {s["id"]: log for s, log in zip(servers, logs, strict=True)},
        volumes_body["volumes"],
        now,
        project_id,
    )
    await _explain_failures(api, entries)
    return {
        "entries": entries,
        "problems": problems,
        "max_servers": MAX_SERVERS,
        "max_volumes": MAX_VOLUMES,
    }


async def _explain_failures(api: UserApis, entries: list[dict[str, Any]]) -> None:
    """The failed actions shown get their error in words, from their events (one call
    each, in parallel; only those shown, at most MAX_ENTRIES)."""
    failed = [e for e in entries if e["failed_action"] is not None]
    newest_seen: set[str] = set()
    newest: list[bool] = []
    for entry in failed:  # entries are newest first
        newest.append(entry["target"]["id"] not in newest_seen)
        newest_seen.add(entry["target"]["id"])

    async def detail(entry: dict[str, Any]) -> dict[str, Any]:
        server, action = entry["failed_action"]
        path = url_path(
            "/v2.1/servers/{}/os-instance-actions/{}", server["id"], action["request_id"]
        )
        try:
            return (await api.compute.get(path))["instanceAction"]
        except ApiFailure as exc:
            if exc.status == 401:
                raise
            return action  # without events: the words say only that it failed

    details = await gather(*(detail(e) for e in failed))
    for entry, action, is_newest in zip(failed, details, newest, strict=True):
        entry["error"] = failure_words(entry["failed_action"][0], action, is_newest)
    for entry in entries:
        entry.pop("failed_action", None)
