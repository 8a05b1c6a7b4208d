"""Volumes, images (uploads streamed to the Image API with a progress bar), object
containers and objects."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cumulo.common.service_client import url_path
from cumulo.dashboard.apis import ApiFailure, UserApis, gather, optional
from cumulo.dashboard.web import apis_of, form_of, page, redirect, render, session_of

CHUNK = 1024 * 1024
# 3.57: /volume-transfers (3.55) with the source and destination projects.
VOLUME_TRANSFERS = {"OpenStack-API-Version": "volume 3.57"}


# -- volumes ---------------------------------------------------------------------------


async def _volumes_page(
    request: Request, status: int = 200, where: str = "volume", **context: Any
) -> Response:
    """The volumes page with their snapshots and backups; a refused change's message
    next to the form it came from (`where`)."""
    api = apis_of(request)
    volumes, servers, snapshots, backups, transfers = await gather(
        api.volume.get("/v3/volumes/detail"),
        api.compute.get("/v2.1/servers?limit=200"),
        optional(api.volume.get("/v3/snapshots/detail"), {"snapshots": []}),
        optional(api.volume.get("/v3/backups/detail"), {"backups": []}),
        optional(
            api.volume.get("/v3/volume-transfers/detail", headers=VOLUME_TRANSFERS),
            {"transfers": []},
        ),
    )
    context = {"form": {}, "error": None, "new_transfer": None, **context}
    names = {v["id"]: v["name"] or v["id"][:8] for v in volumes["volumes"]}
    return render(
        request,
        "volumes.html",
        status=status,
        volumes=volumes["volumes"],
        volume_names=names,
        servers=servers["servers"],
        snapshots=snapshots["snapshots"],
        backups=backups["backups"],
        transfers=transfers["transfers"],
        where=where,
        **context,
    )


async def _volume_change(request: Request, where: str, call: Awaitable[Any]) -> Response:
    """A change from the volumes page, then the page again (with the API's message next
    to the form when refused)."""
    try:
        await call
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        form = await form_of(request)
        return await _volumes_page(request, status=exc.status, where=where, form=form, error=exc)
    return redirect(request, "/volumes")


@page
async def volumes(request: Request) -> Response:
    return await _volumes_page(request)


@page
async def create_volume(request: Request) -> Response:
    api, form = apis_of(request), await form_of(request)
    body = {"volume": {"name": form.get("name") or None, "size": form.get("size") or 0}}
    try:
        await api.volume.post("/v3/volumes", body)
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return await _volumes_page(request, status=exc.status, form=form, error=exc)
    return redirect(request, "/volumes")


@page
async def create_snapshot(request: Request) -> Response:
    """A snapshot of a volume (`force` for one attached to a server, as Horizon asks)."""
    api, form = apis_of(request), await form_of(request)
    snapshot = {
        "volume_id": form.get("volume_id", ""),
        "name": form.get("name") or None,
        "description": form.get("description") or None,
        "force": bool(form.get("force")),
    }
    return await _volume_change(
        request, "snapshot", api.volume.post("/v3/snapshots", {"snapshot": snapshot})
    )


@page
async def delete_snapshot(request: Request) -> Response:
    path = url_path("/v3/snapshots/{}", request.path_params["id"])
    return await _volume_change(request, "snapshots", apis_of(request).volume.delete(path))


@page
async def volume_from_snapshot(request: Request) -> Response:
    api, form = apis_of(request), await form_of(request)
    volume = {"snapshot_id": request.path_params["id"], "name": form.get("name") or None}
    return await _volume_change(
        request, "snapshots", api.volume.post("/v3/volumes", {"volume": volume})
    )


@page
async def create_backup(request: Request) -> Response:
    """A backup of a volume into the Object Storage (`force` for one in use)."""
    api, form = apis_of(request), await form_of(request)
    backup = {
        "volume_id": form.get("volume_id", ""),
        "name": form.get("name") or None,
        "description": form.get("description") or None,
        "incremental": bool(form.get("incremental")),
        "force": bool(form.get("force")),
    }
    return await _volume_change(
        request, "backup", api.volume.post("/v3/backups", {"backup": backup})
    )


@page
async def restore_backup(request: Request) -> Response:
    """The backup restored to a new volume (named as asked)."""
    api, form = apis_of(request), await form_of(request)
    path = url_path("/v3/backups/{}/restore", request.path_params["id"])
    return await _volume_change(
        request, "backups", api.volume.post(path, {"restore": {"name": form.get("name") or None}})
    )


@page
async def delete_backup(request: Request) -> Response:
    path = url_path("/v3/backups/{}", request.path_params["id"])
    return await _volume_change(request, "backups", apis_of(request).volume.delete(path))


@page
async def attach_to_server(request: Request) -> Response:
    """Attach a volume from the volumes page (Compute makes the attachment)."""
    api, form = apis_of(request), await form_of(request)
    body = {"volumeAttachment": {"volumeId": request.path_params["id"]}}
    try:
        await api.compute.post(
            url_path("/v2.1/servers/{}/os-volume_attachments", form.get("server_id", "")), body
        )
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return await _volumes_page(request, status=exc.status, where="volumes", error=exc)
    return redirect(request, "/volumes")


@page
async def extend_volume(request: Request) -> Response:
    api, form = apis_of(request), await form_of(request)
    body = {"os-extend": {"new_size": form.get("new_size") or 0}}
    try:
        await api.volume.post(url_path("/v3/volumes/{}/action", request.path_params["id"]), body)
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return await _volumes_page(request, status=exc.status, where="volumes", error=exc)
    return redirect(request, "/volumes")


@page
async def delete_volume(request: Request) -> Response:
    await apis_of(request).volume.delete(url_path("/v3/volumes/{}", request.path_params["id"]))
    return redirect(request, "/volumes")


@page
async def create_transfer(request: Request) -> Response:
    """A transfer of an available volume to another project: its id and auth key are in
    this answer only (Block Storage never shows the key again), so no redirect."""
    api, form = apis_of(request), await form_of(request)
    transfer = {"volume_id": request.path_params["id"], "name": form.get("name") or None}
    try:
        made = await api.volume.post(
            "/v3/volume-transfers", {"transfer": transfer}, headers=VOLUME_TRANSFERS
        )
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return await _volumes_page(request, status=exc.status, where="volumes", error=exc)
    return await _volumes_page(request, new_transfer=made["transfer"])


@page
async def delete_transfer(request: Request) -> Response:
    """Cancel a pending transfer: the volume is available in this project again."""
    path = url_path("/v3/volume-transfers/{}", request.path_params["id"])
    call = apis_of(request).volume.call("DELETE", path, headers=VOLUME_TRANSFERS)
    return await _volume_change(request, "transfers", call)


@page
async def accept_transfer(request: Request) -> Response:
    """This project takes a volume another project offered (transfer id and auth key)."""
    api, form = apis_of(request), await form_of(request)
    transfer_id = str(form.get("transfer_id", "")).strip()
    if not transfer_id:
        failure = ApiFailure("dashboard", 400, "The transfer's id is needed.")
        return await _volumes_page(request, status=400, where="accept", form=form, error=failure)
    path = url_path("/v3/volume-transfers/{}/accept", transfer_id)
    body = {"accept": {"auth_key": str(form.get("auth_key", "")).strip()}}
    return await _volume_change(
        request, "accept", api.volume.post(path, body, headers=VOLUME_TRANSFERS)
    )


# -- images ----------------------------------------------------------------------------


@page
async def images(request: Request) -> Response:
    api = apis_of(request)
    listed, pending = await gather(
        api.image.get("/v2/images?limit=200"),
        optional(api.image.get("/v2/images?visibility=shared&member_status=pending"), {}),
    )
    return render(
        request, "images.html", images=listed["images"], pending=pending.get("images", [])
    )


# An image's attributes that are not custom properties (Glance's schema).
IMAGE_CORE = {
    "id", "name", "status", "visibility", "protected", "checksum", "os_hash_algo",
    "os_hash_value", "owner", "size", "virtual_size", "min_ram", "min_disk", "created_at",
    "updated_at", "tags", "disk_format", "container_format", "direct_url", "locations",
    "file", "schema", "self", "os_hidden", "stores",
}  # fmt: skip
IMAGE_PATCH = "application/openstack-images-v2.1-json-patch"
VISIBILITIES = ("private", "shared", "community", "public")


def _pointer(key: str) -> str:
    """A property name as a JSON pointer (RFC 6901)."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


async def _image_page(
    request: Request, status: int = 200, where: str = "", error: ApiFailure | None = None
) -> Response:
    api, image_id = apis_of(request), request.path_params["id"]
    image = await api.image.get(url_path("/v2/images/{}", image_id))
    members: dict[str, Any] = {"members": []}
    if image.get("visibility") == "shared":
        members = await optional(
            api.image.get(url_path("/v2/images/{}/members", image_id)), members
        )
    return render(
        request,
        "image.html",
        status=status,
        image=image,
        properties={k: v for k, v in sorted(image.items()) if k not in IMAGE_CORE},
        members=members["members"],
        visibilities=VISIBILITIES,
        mine=image.get("owner") == session_of(request).project_id,
        where=where,
        error=error,
    )


async def _image_change(request: Request, where: str, call: Awaitable[Any]) -> Response:
    try:
        await call
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return await _image_page(request, exc.status, where, exc)
    return redirect(request, f"/images/{quote(request.path_params['id'])}")


@page
async def image(request: Request) -> Response:
    return await _image_page(request)


def _image_patch(image: dict[str, Any], form: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch from the edit form: changed attributes replaced, properties
    removed, changed or added (one `key=value` a line)."""
    patch: list[dict[str, Any]] = []
    if form.get("name", image.get("name")) != image.get("name"):
        patch.append({"op": "replace", "path": "/name", "value": form["name"]})
    if form.get("visibility") and form["visibility"] != image.get("visibility"):
        patch.append({"op": "replace", "path": "/visibility", "value": form["visibility"]})
    for key in ("min_disk", "min_ram"):
        value = (form.get(key) or "0").strip()
        number = int(value) if value.lstrip("-").isdecimal() else value
        if number != image.get(key):
            patch.append({"op": "replace", "path": f"/{key}", "value": number})
    removed = form.get("remove") or []
    removed = set(removed if isinstance(removed, list) else [removed])
    for key in sorted(removed):
        patch.append({"op": "remove", "path": _pointer(key)})
    for name, value in form.items():
        key = name.removeprefix("property:")
        if name.startswith("property:") and key not in removed and value != image.get(key):
            patch.append({"op": "replace", "path": _pointer(key), "value": value})
    for line in (form.get("add_properties") or "").splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ApiFailure("dashboard", 400, f"Write each property as key=value: {line!r}.")
        op = "replace" if key.strip() in image else "add"
        patch.append({"op": op, "path": _pointer(key.strip()), "value": value.strip()})
    return patch


@page
async def update_image(request: Request) -> Response:
    """The edit form as one Glance v2 JSON-patch PATCH."""
    api, form = apis_of(request), await form_of(request)
    path = url_path("/v2/images/{}", request.path_params["id"])

    async def change() -> None:
        patch = _image_patch(await api.image.get(path), form)
        if patch:
            await api.image.patch(path, patch, IMAGE_PATCH)

    return await _image_change(request, "properties", change())


@page
async def add_image_member(request: Request) -> Response:
    """Share with a project: the image made `shared` first when it is private."""
    api, form = apis_of(request), await form_of(request)
    image_id = request.path_params["id"]

    async def share() -> None:
        path = url_path("/v2/images/{}", image_id)
        if (await api.image.get(path)).get("visibility") == "private":
            patch = [{"op": "replace", "path": "/visibility", "value": "shared"}]
            await api.image.patch(path, patch, IMAGE_PATCH)
        member = {"member": form.get("member", "").strip()}
        await api.image.post(url_path("/v2/images/{}/members", image_id), member)

    return await _image_change(request, "members", share())


@page
async def remove_image_member(request: Request) -> Response:
    path = url_path(
        "/v2/images/{}/members/{}", request.path_params["id"], request.path_params["member"]
    )
    return await _image_change(request, "members", apis_of(request).image.delete(path))


@page
async def answer_image_share(request: Request) -> Response:
    """Accept or reject an image another project shares with this one."""
    status = (await form_of(request)).get("status", "")
    path = url_path(
        "/v2/images/{}/members/{}", request.path_params["id"], session_of(request).project_id
    )
    await apis_of(request).image.put(path, {"status": status})
    return redirect(request, "/images")


@page
async def create_image(request: Request) -> Response:
    """The image record (JSON answer: the page's script then streams the file)."""
    form = await form_of(request)
    body = {
        "name": form.get("name", ""),
        "disk_format": form.get("disk_format") or "raw",
        "container_format": form.get("container_format") or "bare",
        "visibility": "private",
    }
    try:
        image = await apis_of(request).image.post("/v2/images", body)
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return JSONResponse(
            {"error": exc.message, "request_id": exc.request_id}, status_code=exc.status
        )
    return JSONResponse({"id": image["id"]}, status_code=201)


@page(read_form=False)
async def upload_image_data(request: Request) -> Response:
    """The browser's PUT streamed on to the Image API chunk by chunk: the dashboard never
    holds the file (nor writes it to disk)."""
    image_id = request.path_params["id"]
    try:
        await apis_of(request).image.call(
            "PUT",
            url_path("/v2/images/{}/file", image_id),
            content=request.stream(),
            headers={"Content-Type": "application/octet-stream"},
        )
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return JSONResponse(
            {"error": exc.message, "request_id": exc.request_id}, status_code=exc.status
        )
    return JSONResponse({"id": image_id})


@page
async def delete_image(request: Request) -> Response:
    await apis_of(request).image.delete(url_path("/v2/images/{}", request.path_params["id"]))
    return redirect(request, "/images")


# -- object containers and objects -------------------------------------------------------


def _account(request: Request) -> str:
    return url_path("/v1/AUTH_{}", session_of(request).project_id)


@page
async def containers(request: Request) -> Response:
    body = await apis_of(request).object_store.get(f"{_account(request)}?format=json")
    return render(request, "containers.html", containers=body or [], error=None)


@page
async def create_container(request: Request) -> Response:
    name = (await form_of(request)).get("name", "")
    await apis_of(request).object_store.put(f"{_account(request)}/{quote(name)}")
    return redirect(request, f"/containers/{quote(name)}")


PUBLIC_READ = ".r:*,.rlistings"
# The TempURL lifetimes offered (seconds).
TEMP_URL_LIFETIMES = {3600: "1 hour", 86400: "1 day", 604800: "7 days", 2592000: "30 days"}


async def _object_store_url(api: UserApis, account: str) -> str:
    """The account's public URL from the token's catalog (what a browser opens)."""
    catalog = (await api.identity.get("/v3/auth/catalog"))["catalog"]
    for service in catalog:
        if service["type"] == "object-store":
            for endpoint in service["endpoints"]:
                if endpoint["interface"] == "public":
                    base = endpoint["url"].split("/v1/", 1)[0]
                    return base + account
    raise ApiFailure("dashboard", 404, "The catalog has no public Object Storage endpoint.")


async def _container_page(
    request: Request,
    status: int = 200,
    temp_url: str = "",
    error: ApiFailure | None = None,
) -> Response:
    api = apis_of(request)
    name, prefix = request.path_params["name"], request.query_params.get("prefix", "")
    query = urlencode({"format": "json", "delimiter": "/", "prefix": prefix})
    path = f"{_account(request)}/{quote(name)}"
    listing, head, base = await gather(
        api.object_store.get(f"{path}?{query}"),
        api.object_store.call("HEAD", path),
        optional(_object_store_url(api, _account(request)), ""),
    )
    read_acl = head.headers.get("x-container-read", "")
    public = ".r:*" in [part.strip() for part in read_acl.split(",")]
    return render(
        request,
        "container.html",
        status=status,
        name=name,
        prefix=prefix,
        folders=[o["subdir"] for o in listing or [] if "subdir" in o],
        objects=[o for o in listing or [] if "name" in o],
        public=public,
        public_url=f"{base}/{quote(name)}/" if base and public else "",
        lifetimes=TEMP_URL_LIFETIMES,
        temp_url=temp_url,
        error=error,
    )


@page
async def container(request: Request) -> Response:
    return await _container_page(request)


@page
async def container_access(request: Request) -> Response:
    """Public (anyone reads the objects and lists them: `.r:*,.rlistings`) or private
    (the read ACL removed)."""
    name = request.path_params["name"]
    public = (await form_of(request)).get("public") == "1"
    headers = {"X-Container-Read": PUBLIC_READ} if public else {"X-Remove-Container-Read": "x"}
    await apis_of(request).object_store.call(
        "POST", f"{_account(request)}/{quote(name)}", headers=headers
    )
    return redirect(request, f"/containers/{quote(name)}")


def temp_url_signature(key: str, method: str, expires: int, path: str) -> str:
    """Swift's tempurl middleware's HMAC-SHA256 of `METHOD\nexpires\npath`, in hex."""
    message = f"{method}\n{expires}\n{path}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


async def _temp_url_key(api: UserApis, account: str) -> str:
    """The account's Temp-URL-Key, set (a new random one) when it has none."""
    head = await api.object_store.call("HEAD", account)
    key = head.headers.get("x-account-meta-temp-url-key")
    if not key:
        key = secrets.token_hex(32)
        await api.object_store.call("POST", account, headers={"X-Account-Meta-Temp-URL-Key": key})
    return key


@page
async def make_temp_url(request: Request) -> Response:
    """A link to one object that works without a token until it expires (GET only)."""
    api, form = apis_of(request), await form_of(request)
    name, account = request.path_params["name"], _account(request)
    try:
        lifetime = int(form.get("expires_in") or 0)
        if lifetime not in TEMP_URL_LIFETIMES:
            raise ApiFailure("dashboard", 400, "Choose how long the link works.")
        object_name = form.get("object", "")
        object_path = f"{account}/{quote(name)}/{quote(object_name)}"
        await api.object_store.call("HEAD", object_path)  # the object exists (404 otherwise)
        key = await _temp_url_key(api, account)
        base = await _object_store_url(api, account)
        expires = int(time.time()) + lifetime
        # Signed as the object server sees the path: percent-decoded.
        signature = temp_url_signature(key, "GET", expires, f"{account}/{name}/{object_name}")
        query = urlencode({"temp_url_sig": signature, "temp_url_expires": expires})
        link = f"{base.removesuffix(account)}{object_path}?{query}"
    except ApiFailure as exc:
        if exc.status == 401:
            raise
        return await _container_page(request, exc.status, error=exc)
    return await _container_page(request, temp_url=link)


@page
async def upload_object(request: Request) -> Response:
    name = request.path_params["name"]
    form = await form_of(request)
    upload = form.get("file")
    if upload is None or not getattr(upload, "filename", ""):
        raise ApiFailure("dashboard", 400, "Choose a file to upload.")
    object_name = form.get("prefix", "") + upload.filename

    async def chunks():
        while data := await upload.read(CHUNK):
            yield data

    await apis_of(request).object_store.call(
        "PUT",
        f"{_account(request)}/{quote(name)}/{quote(object_name)}",
        content=chunks(),
        headers={"Content-Type": upload.content_type or "application/octet-stream"},
    )
    back = urlencode({"prefix": form.get("prefix", "")})
    return redirect(request, f"/containers/{quote(name)}?{back}")


@page
async def delete_object(request: Request) -> Response:
    name, path = request.path_params["name"], request.path_params["object"]
    await apis_of(request).object_store.delete(f"{_account(request)}/{quote(name)}/{quote(path)}")
    prefix = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    return redirect(request, f"/containers/{quote(name)}?{urlencode({'prefix': prefix})}")


@page
async def delete_container(request: Request) -> Response:
    await apis_of(request).object_store.delete(
        f"{_account(request)}/{quote(request.path_params['name'])}"
    )
    return redirect(request, "/containers")


@page
async def download_object(request: Request) -> Response:
    name, path = request.path_params["name"], request.path_params["object"]
    api = apis_of(request).object_store
    url = f"{_account(request)}/{quote(name)}/{quote(path)}"
    stream = api.stream(url)
    response = await stream.__aenter__()

    async def body():
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await stream.__aexit__(None, None, None)

    filename = path.rsplit("/", 1)[-1]
    return StreamingResponse(
        body(),
        media_type=response.headers.get("content-type", "application/octet-stream"),
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


routes = [
    Route("/volumes", volumes, methods=["GET"]),
    Route("/volumes", create_volume, methods=["POST"]),
    Route("/volumes/{id}/delete", delete_volume, methods=["POST"]),
    Route("/volumes/{id}/attach", attach_to_server, methods=["POST"]),
    Route("/volumes/{id}/extend", extend_volume, methods=["POST"]),
    Route("/volumes/{id}/transfer", create_transfer, methods=["POST"]),
    Route("/volume-transfers/accept", accept_transfer, methods=["POST"]),
    Route("/volume-transfers/{id}/delete", delete_transfer, methods=["POST"]),
    Route("/volume-snapshots", create_snapshot, methods=["POST"]),
    Route("/volume-snapshots/{id}/delete", delete_snapshot, methods=["POST"]),
    Route("/volume-snapshots/{id}/volume", volume_from_snapshot, methods=["POST"]),
    Route("/volume-backups", create_backup, methods=["POST"]),
    Route("/volume-backups/{id}/restore", restore_backup, methods=["POST"]),
    Route("/volume-backups/{id}/delete", delete_backup, methods=["POST"]),
    Route("/images", images, methods=["GET"]),
    Route("/images", create_image, methods=["POST"]),
    Route("/images/{id}/file", upload_image_data, methods=["PUT"]),
    Route("/images/{id}/delete", delete_image, methods=["POST"]),
    Route("/images/{id}", image, methods=["GET"]),
    Route("/images/{id}", update_image, methods=["POST"]),
    Route("/images/{id}/members", add_image_member, methods=["POST"]),
    Route("/images/{id}/members/{member}/delete", remove_image_member, methods=["POST"]),
    Route("/images/{id}/share", answer_image_share, methods=["POST"]),
    Route("/containers", containers, methods=["GET"]),
    Route("/containers", create_container, methods=["POST"]),
    Route("/containers/{name}", container, methods=["GET"]),
    Route("/containers/{name}/upload", upload_object, methods=["POST"]),
    Route("/containers/{name}/access", container_access, methods=["POST"]),
    Route("/containers/{name}/temp-url", make_temp_url, methods=["POST"]),
    Route("/containers/{name}/delete", delete_container, methods=["POST"]),
    Route("/containers/{name}/delete/{object:path}", delete_object, methods=["POST"]),
    Route("/containers/{name}/objects/{object:path}", download_object, methods=["GET"]),
]
