"""Swift's bulk middleware. Bulk delete: POST or DELETE on the account with
?bulk-delete and a text/plain body of URL-encoded `container/object` or `container`
lines; objects go first, then containers (its answer is also SLO deletes' answer).
Bulk extract: PUT a tar archive (?extract-archive=tar, tar.gz or tar.bz2) on the
account, a container or a container/prefix: every file becomes an object, missing
containers are created."""

from __future__ import annotations

import json
import mimetypes
import tarfile
import tempfile
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from cumulo.object_store.api.common import Caller, store_of
from cumulo.object_store.api.object_common import container_policy
from cumulo.object_store.errors import SwiftError

MAX_DELETES_PER_REQUEST = 10000
MAX_FAILED_DELETES = 1000


def info() -> dict:
    return {
        "max_deletes_per_request": MAX_DELETES_PER_REQUEST,
        "max_failed_deletes": MAX_FAILED_DELETES,
    }


MAX_CONTAINERS_PER_EXTRACTION = 10000
ARCHIVE_MODES = {"tar": "r|", "tar.gz": "r|gz", "tar.bz2": "r|bz2"}


def _answer(request: Request, result: dict, errors: list[list[str]]) -> Response:
    """The bulk middleware's answer: 200, the real status inside, text or JSON."""
    result = {**result, "Errors": errors}
    if "application/json" in request.headers.get("accept", ""):
        content, ctype = json.dumps(result).encode(), "application/json; charset=utf-8"
    else:
        text = "".join(f"{k}: {v}\n" for k, v in result.items() if k != "Errors")
        text += "Errors:\n" + "".join(f"{p}, {s}\n" for p, s in errors)
        content, ctype = text.encode(), "text/plain"
    return Response(content, 200, headers={"Content-Type": ctype})


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
    }
    return _answer(request, result, errors)


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
        if not caller.writes_account:
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


async def extract_archive(request: Request, caller: Caller, account: str, base: str) -> Response:
    """Unpack a tar upload into objects under `base` ("", "container" or
    "container/prefix"), creating the containers it names."""
    store = store_of(request)
    mode = ARCHIVE_MODES.get(request.query_params["extract-archive"].lower())
    if mode is None:
        raise SwiftError(400, "Unsupported archive format")
    spool = tempfile.SpooledTemporaryFile(max_size=16 << 20)
    async for chunk in request.stream():
        spool.write(chunk)
        if spool.tell() > store.config.max_file_size:
            raise SwiftError(413, "Your request is too large.")
    spool.seek(0)
    created, errors = 0, []
    containers: set[str] = set()
    result = {"Number Files Created": 0, "Response Body": "", "Response Status": "201 Created"}
    try:
        archive = tarfile.open(fileobj=spool, mode=mode)
        for member in archive:
            if not member.isfile():
                continue
            path = member.name.removeprefix("./").lstrip("/")
            path = f"{base.rstrip('/')}/{path}" if base else path
            container, _, name = path.partition("/")
            if not name:
                continue
            try:
                if container not in containers:
                    info = await store.proxy.container_info(account, container)
                    if info.status != 200:
                        full = len(containers) >= MAX_CONTAINERS_PER_EXTRACTION
                        if full or not caller.writes_account:
                            raise SwiftError(403 if caller.ctx else 401)
                        await store.proxy.container_put(
                            account, container, store.policies.default, {}
                        )
                    containers.add(container)
                policy = await container_policy(
                    request, caller, account, container, "X-Container-Write"
                )
                data = archive.extractfile(member)
                assert data is not None

                async def body(f=data):
                    while chunk := f.read(1 << 20):
                        yield chunk

                await store.proxy.object_put(
                    policy,
                    account,
                    container,
                    name,
                    {"Content-Type": mimetypes.guess_type(name)[0] or "application/octet-stream"},
                    body(),
                    max_size=store.config.max_file_size,
                    expected_etag=None,
                    content_length=member.size,
                )
                created += 1
            except SwiftError as exc:
                errors.append([f"/{path}", f"{exc.status} {exc.title}"])
    except tarfile.TarError:
        result["Response Status"] = "400 Bad Request"
        result["Response Body"] = "Invalid Tar File: bad archive"
    result["Number Files Created"] = created
    if errors:
        result["Response Status"] = "400 Bad Request"
    elif not created and result["Response Status"] == "201 Created":
        result["Response Status"] = "400 Bad Request"
        result["Response Body"] = "Invalid Tar File: No Valid Files"
    return _answer(request, result, errors)
