"""`cumulo object-server`: the account, container and object servers of a storage host's
devices, over HTTP, for the proxies (and the other hosts' replicators and object
servers) that find them through the ring (remote.py is the client), and the rings for
the hosts that fetch theirs from here (ring/distribution.py).

Every request must carry the backend signature (backend_auth.py): others are refused
401/403 and logged. Every request names a device and partition the ring gave.
The node work is StorageNode's, in worker threads. Errors travel as statuses: 507 for a
device that is not there, 404 with `X-Cumulo-Error: database_missing` or
`object_missing`.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cumulo.object_store.api.responses import ObjectBody, Unsatisfiable, parse_range
from cumulo.object_store.ring import distribution
from cumulo.object_store.storage import diskfile
from cumulo.object_store.storage.backend_auth import RequireBackendSignature
from cumulo.object_store.storage.databases import AccountBroker, ContainerBroker, DatabaseMissing
from cumulo.object_store.storage.diskfile import DeviceUnavailable, ObjectMissing
from cumulo.object_store.storage.node import Location, StorageNode
from cumulo.object_store.storage.remote import location_from, update_from

Op = Callable[[StorageNode, Location, dict[str, Any]], Any]


def _db(node: StorageNode, at: Location, a: dict) -> Any:
    if "container" in a:
        return node.container_broker(at, a["account"], a["container"])
    return node.account_broker(at, a["account"])


def _existing(node: StorageNode, at: Location, a: dict) -> Any:
    broker = _db(node, at, a)
    if not broker.exists():
        raise DatabaseMissing(a.get("container") or a["account"])
    return broker


def _optional(body: list | None) -> Location | None:
    return location_from(body) if body else None


OPS: dict[str, Op] = {
    "account_db_exists": lambda n, at, a: _db(n, at, a).exists(),
    "account_db_info": lambda n, at, a: _existing(n, at, a).info(),
    "account_db_list": lambda n, at, a: _existing(n, at, a).list_containers(**a["query"]),
    "container_db_exists": lambda n, at, a: _db(n, at, a).exists(),
    "container_db_info": lambda n, at, a: _existing(n, at, a).info(),
    "container_db_list": lambda n, at, a: _existing(n, at, a).list_objects(**a["query"]),
    "container_db_update_metadata": lambda n, at, a: _existing(n, at, a).update_metadata(
        a["updates"]
    ),
    "account_put_container": lambda n, at, a: n.account_put_container(
        at, a["account"], a["record"]
    ),
    "account_update_metadata": lambda n, at, a: n.account_update_metadata(
        at, a["account"], a["timestamp"], a["updates"]
    ),
    "container_put": lambda n, at, a: n.container_put(
        at,
        a["account"],
        a["container"],
        a["timestamp"],
        a["policy"],
        a["metadata"],
        _optional(a["account_at"]),
    ),  # fmt: skip
    "container_delete": lambda n, at, a: n.container_delete(
        at, a["account"], a["container"], a["timestamp"], _optional(a["account_at"])
    ),
    "container_put_object": lambda n, at, a: n.container_put_object(update_from(a["update"])),
    "object_state": lambda n, at, a: n.object_state(at, a["policy"], a["name_hash"]),
    "object_post": lambda n, at, a: n.object_post(
        at, a["policy"], a["name_hash"], a["timestamp"], a["metadata"]
    ),
    "object_delete": lambda n, at, a: n.object_delete(
        at, a["policy"], a["name_hash"], a["timestamp"], a["metadata"], update_from(a["update"])
    ),
}


def _error(exc: Exception) -> Response:
    if isinstance(exc, ObjectMissing):
        return Response(status_code=404, headers={"x-cumulo-error": "object_missing"})
    if isinstance(exc, DatabaseMissing):
        return Response(status_code=404, headers={"x-cumulo-error": "database_missing"})
    return Response(str(exc).encode(), status_code=507)


def _node(request: Request) -> StorageNode:
    return request.app.state.node


async def node_op(request: Request) -> Response:
    op = OPS.get(request.path_params["op"])
    if op is None:
        return Response(status_code=404)
    body = await request.json()
    at = location_from(body["at"])
    at = Location(at.device, at.part)  # this host's device
    try:
        result = await run_in_threadpool(op, _node(request), at, body["args"])
    except (OSError, DatabaseMissing, ObjectMissing) as exc:
        return _error(exc)
    return JSONResponse({"result": result})


async def device(request: Request) -> Response:
    try:
        _node(request).device_path(request.path_params["device"])
    except DeviceUnavailable as exc:
        return _error(exc)
    return Response(status_code=200)


def _object_at(request: Request) -> tuple[Location, int, str]:
    p = request.path_params
    return Location(p["device"], int(p["part"])), int(p["policy"]), p["hash"]


async def object_put(request: Request) -> Response:
    """A replica as the proxy streams it: written to a temp file on the device while it
    arrives, its ETag checked against `X-Cumulo-Etag` (the client's; 422, nothing kept),
    then committed with the size and ETag of what arrived, and the container told. A
    body cut short (the proxy dropped the connection: a failed upload) leaves nothing.
    Answers 201 with {"etag", "size"}."""
    node = _node(request)
    at, policy, name_hash = _object_at(request)
    metadata = json.loads(request.headers["x-cumulo-metadata"])
    update = update_from(json.loads(request.headers.get("x-cumulo-update", "null")))
    expected = request.headers.get("x-cumulo-etag")
    try:
        writer = await run_in_threadpool(node.object_writer, at, policy, name_hash)
    except OSError as exc:
        return _error(exc)
    digest = hashlib.md5(usedforsecurity=False)

    def write(chunk: bytes) -> None:
        digest.update(chunk)
        writer.write(chunk)

    try:
        async for chunk in request.stream():
            if chunk:
                await run_in_threadpool(write, chunk)
        etag = digest.hexdigest()
        if expected is not None and expected.strip('"').lower() != etag:
            await run_in_threadpool(writer.abort)
            return Response(b"ETag mismatch", status_code=422)
        metadata.update({"Content-Length": str(writer.size), "ETag": etag})
        if update is not None:
            update = update.with_object(writer.size, etag)
        await run_in_threadpool(node.object_commit, at, writer, metadata, update)
    except ClientDisconnect:
        await run_in_threadpool(writer.abort)
        return Response(status_code=499)
    except BaseException:
        await run_in_threadpool(writer.abort)
        raise
    return JSONResponse({"etag": etag, "size": writer.size}, status_code=201)


async def object_get(request: Request) -> Response:
    """HEAD: the replica's metadata. GET: its bytes (or the `Range` asked), only while it
    holds the version `X-Cumulo-Data-Timestamp` names (404 otherwise); the file is open
    before the answer starts, so it is sent whole even if deleted meanwhile."""
    at, policy, name_hash = _object_at(request)
    try:
        stored = await run_in_threadpool(_node(request).object_open, at, policy, name_hash)
    except (OSError, ObjectMissing) as exc:
        return _error(exc)
    headers = {"x-cumulo-metadata": json.dumps(stored.metadata),
               "x-cumulo-data-timestamp": stored.data_timestamp}  # fmt: skip
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers)
    wanted = request.headers.get("x-cumulo-data-timestamp")
    if wanted is not None and wanted != stored.data_timestamp:
        return _error(ObjectMissing())
    size = int(stored.metadata["Content-Length"])
    try:
        ranges = parse_range(request.headers.get("range"), size)
    except Unsatisfiable:
        return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
    if ranges is not None and len(ranges) > 1:
        return Response(b"one range at a time", status_code=400)
    assert stored.path is not None  # this host's own replica
    return ObjectBody([(stored.path, 0, size)], 206 if ranges else 200, headers, ranges, size,
                      "application/octet-stream", head=False)  # fmt: skip


async def ring_get(request: Request) -> Response:
    """A ring file for the hosts that fetch theirs from here (304 when unchanged)."""
    rings = _node(request).rings
    try:
        text, etag = distribution.read_ring(rings, request.path_params["name"])
    except distribution.RingUnavailable as exc:
        return Response(str(exc).encode(), status_code=404)
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"etag": etag})
    return Response(text, headers={"etag": etag, "content-type": "application/json"})


def _under(device: Path, relative: str) -> Path:
    path = (device / relative).resolve()
    if device.resolve() not in path.parents:
        raise DeviceUnavailable(f"{relative} is outside the device")
    return path


async def replicate_check(request: Request) -> Response:
    """Which of the pusher's newest files this device lacks (and has nothing newer of)."""
    body = await request.json()
    try:
        target = _under(_node(request).device_path(request.path_params["device"]), body["dir"])
    except OSError as exc:
        return _error(exc)
    try:
        present = [n for n in os.listdir(target) if not n.endswith(".json")]
    except FileNotFoundError:
        present = []

    def missing(name: str) -> bool:
        ext = (".meta",) if name.endswith(".meta") else (".data", ".ts")
        return name not in present and not any(n.endswith(ext) and n > name for n in present)

    return JSONResponse({"missing": [n for n in body["names"] if missing(n)]})


async def replicate_file(request: Request) -> Response:
    """One replica file pushed by a peer's replicator: written as _copy_file writes it
    (temp file, metadata, fsync, rename)."""
    try:
        dev = _node(request).device_path(request.path_params["device"])
        target = _under(dev, request.headers["x-cumulo-path"])
    except OSError as exc:
        return _error(exc)
    metadata = json.loads(request.headers["x-cumulo-metadata"])
    tmp = dev / "tmp" / uuid.uuid4().hex
    tmp.parent.mkdir(exist_ok=True)
    with tmp.open("wb") as f:
        async for chunk in request.stream():
            await run_in_threadpool(f.write, chunk)

    def install() -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("rb+") as f:
            diskfile.set_metadata(f.fileno(), Path(f"{target}.json"), metadata)
            os.fsync(f.fileno())
        os.replace(tmp, target)
        diskfile.cleanup_older(target.parent)

    await run_in_threadpool(install)
    return Response(status_code=201)


async def replicate_db(request: Request) -> Response:
    """A peer's database merged into this device's replica; a container's status after
    (the pusher takes its policy when Swift's rules prefer it)."""
    body = await request.json()
    broker = AccountBroker if body["kind"] == "accounts" else ContainerBroker
    try:
        dev = _node(request).device_path(request.path_params["device"])
        path = _under(dev, body["path"])
        merged = await run_in_threadpool(lambda: broker(path).merge(body["dump"]))
    except OSError as exc:
        return _error(exc)
    return JSONResponse({"result": merged})


def create_storage_app(node: StorageNode) -> RequireBackendSignature:
    if node.backend_keys is None:
        raise ValueError("the object server needs the cloud's backend keys (backend_auth)")
    obj = "/object/{device}/{part:int}/{policy:int}/{hash}"
    app = Starlette(routes=[
        Route("/node/{op}", node_op, methods=["POST"]),
        Route("/device/{device}", device, methods=["GET"]),
        Route(obj, object_put, methods=["PUT"]),
        Route(obj, object_get, methods=["GET", "HEAD"]),
        Route("/replicate/check/{device}", replicate_check, methods=["POST"]),
        Route("/replicate/file/{device}", replicate_file, methods=["PUT"]),
        Route("/replicate/db/{device}", replicate_db, methods=["POST"]),
        Route("/ring/{name}", ring_get, methods=["GET"]),
    ])  # fmt: skip
    app.state.node = node
    return RequireBackendSignature(app, node.backend_keys)
