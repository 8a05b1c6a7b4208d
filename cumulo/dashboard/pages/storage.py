"""Volumes, images (uploads streamed to the Image API with a progress bar), object
containers and objects."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cumulo.common.service_client import url_path
from cumulo.dashboard.apis import ApiFailure, gather
from cumulo.dashboard.web import apis_of, form_of, page, redirect, render, session_of

CHUNK = 1024 * 1024


# -- volumes ---------------------------------------------------------------------------


async def _volumes_page(request: Request, status: int = 200, **context: Any) -> Response:
    api = apis_of(request)
    volumes, servers = await gather(
        api.volume.get("/v3/volumes/detail"), api.compute.get("/v2.1/servers?limit=200")
    )
    context = {"form": {}, "error": None, **context}
    return render(
        request,
        "volumes.html",
        status=status,
        volumes=volumes["volumes"],
        servers=servers["servers"],
        **context,
    )


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
        return await _volumes_page(request, status=exc.status, error=exc)
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
        return await _volumes_page(request, status=exc.status, error=exc)
    return redirect(request, "/volumes")


@page
async def delete_volume(request: Request) -> Response:
    await apis_of(request).volume.delete(url_path("/v3/volumes/{}", request.path_params["id"]))
    return redirect(request, "/volumes")


# -- images ----------------------------------------------------------------------------


@page
async def images(request: Request) -> Response:
    body = await apis_of(request).image.get("/v2/images?limit=200")
    return render(request, "images.html", images=body["images"])


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


@page
async def container(request: Request) -> Response:
    name, prefix = request.path_params["name"], request.query_params.get("prefix", "")
    query = urlencode({"format": "json", "delimiter": "/", "prefix": prefix})
    listing = await apis_of(request).object_store.get(f"{_account(request)}/{quote(name)}?{query}")
    return render(
        request,
        "container.html",
        name=name,
        prefix=prefix,
        folders=[o["subdir"] for o in listing or [] if "subdir" in o],
        objects=[o for o in listing or [] if "name" in o],
    )


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
    Route("/images", images, methods=["GET"]),
    Route("/images", create_image, methods=["POST"]),
    Route("/images/{id}/file", upload_image_data, methods=["PUT"]),
    Route("/images/{id}/delete", delete_image, methods=["POST"]),
    Route("/containers", containers, methods=["GET"]),
    Route("/containers", create_container, methods=["POST"]),
    Route("/containers/{name}", container, methods=["GET"]),
    Route("/containers/{name}/upload", upload_object, methods=["POST"]),
    Route("/containers/{name}/delete", delete_container, methods=["POST"]),
    Route("/containers/{name}/delete/{object:path}", delete_object, methods=["POST"]),
    Route("/containers/{name}/objects/{object:path}", download_object, methods=["GET"]),
]
