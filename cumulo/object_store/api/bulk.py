"""Bulk delete (Swift's bulk middleware): POST or DELETE on the account with
?bulk-delete and a text/plain body of URL-encoded `container/object` or `container`
lines; objects go first, then containers. Its answer is also SLO deletes' answer."""

from __future__ import annotations

import json
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from cumulo.object_store.api.common import Caller, store_of, trans_headers
from cumulo.object_store.api.object_common import container_policy
from cumulo.object_store.errors import SwiftError

MAX_DELETES_PER_REQUEST = 10000
MAX_FAILED_DELETES = 1000


def info() -> dict:
    return {
        "max_deletes_per_request": MAX_DELETES_PER_REQUEST,
        "max_failed_deletes": MAX_FAILED_DELETES,
    }


def bulk_result(
    request: Request, deleted: int, not_found: int, errors: list[list[str]], body: str = ""
) -> Response:
    """The answer of a bulk delete: 200, its status inside, as text or JSON (Accept)."""
    status = "400 Bad Request" if errors or body else "200 OK"
    result = {
        "Number Deleted": deleted,
        "Number Not Found": not_found,
        "Response Body": body,
        "Response Status": status,
        "Errors": errors,
    }
    if "application/json" in request.headers.get("accept", ""):
        content, ctype = json.dumps(result).encode(), "application/json; charset=utf-8"
    else:
        text = "".join(f"{k}: {v}\n" for k, v in result.items() if k != "Errors")
        text += "Errors:\n" + "".join(f"{p}, {s}\n" for p, s in errors)
        content, ctype = text.encode(), "text/plain"
    return Response(content, 200, headers={"Content-Type": ctype, **trans_headers(request)})


async def bulk_delete(request: Request, caller: Caller, account: str) -> Response:
    store = store_of(request)
    lines = [unquote(x.strip()) for x in (await request.body()).decode().splitlines()]
    names = [x.lstrip("/") for x in lines if x.strip("/")]
    if len(names) > MAX_DELETES_PER_REQUEST:
        raise SwiftError(413, f"Maximum Bulk Deletes: {MAX_DELETES_PER_REQUEST} per request")
    if not names:
        return bulk_result(request, 0, 0, [], "Invalid bulk delete.")
    deleted = not_found = 0
    errors: list[list[str]] = []
    objects = [n for n in names if "/" in n.rstrip("/")]
    containers = [n.rstrip("/") for n in names if "/" not in n.rstrip("/")]
    for name in objects:
        container, _, obj = name.partition("/")
        try:
            policy = await container_policy(
                request, caller, account, container, "X-Container-Write"
            )
            if await store.proxy.object_delete(policy, account, container, obj):
                deleted += 1
            else:
                not_found += 1
        except SwiftError as exc:
            if exc.status == 404:
                not_found += 1
            else:
                errors.append([f"/{name}", f"{exc.status} {exc.title}"])
    for container in containers:
        if not caller.owner:
            errors.append([f"/{container}", "403 Forbidden" if caller.ctx else "401 Unauthorized"])
            continue
        try:
            await store.proxy.container_delete(account, container)
            deleted += 1
        except SwiftError as exc:
            if exc.status == 404:
                not_found += 1
            else:
                errors.append([f"/{container}", f"{exc.status} {exc.title}"])
    return bulk_result(request, deleted, not_found, errors)
