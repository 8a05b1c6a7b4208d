"""Tasks (api-ref: Tasks, and Show image tasks 2.12): what image imports did."""

from __future__ import annotations

import json as jsonlib
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, NotFound
from cumulo.image import imports
from cumulo.image.api.common import authorize, isotime, json, service_of
from cumulo.image.api.images import add_image
from cumulo.image.models import ImageTask


def render_task(task: ImageTask, *, full: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": task.id,
        "type": task.type,
        "status": task.status,
        "owner": task.owner,
        "created_at": isotime(task.created_at),
        "updated_at": isotime(task.updated_at),
        "expires_at": isotime(task.expires_at),
        "self": f"/v2/tasks/{task.id}",
        "schema": "/schemas/task",
        "image_id": task.image_id,
        "request_id": task.request_id,
        "user_id": task.user_id,
    }
    if full:  # lists leave out input, result and message, as Glance's do
        body["input"] = jsonlib.loads(task.input)
        body["result"] = jsonlib.loads(task.result) if task.result else None
        body["message"] = task.message
    return body


async def image_tasks(request: Request) -> Response:
    """GET /v2/images/{id}/tasks: the image's import tasks, oldest first."""
    service = service_of(request)
    ctx = await authorize(request, "image:get_image")
    image = await service.get_visible(ctx, request.path_params["image_id"])
    await authorize(request, "image:get_image_tasks", image.owner)
    tasks = await imports.image_tasks(service, image.id)
    return json({"tasks": [render_task(t) for t in tasks]})


async def list_tasks(request: Request) -> Response:
    """GET /v2/tasks (admin): newest first, `status` and `type` filters."""
    service = service_of(request)
    await authorize(request, "image:get_tasks")
    await imports.forget_tasks(service)
    query = select(ImageTask).order_by(ImageTask.created_at.desc(), ImageTask.id)
    for name in ("status", "type"):
        if name in request.query_params:
            query = query.where(getattr(ImageTask, name) == request.query_params[name])
    async with service.db.read() as session:
        tasks = list(await session.scalars(query))
    return json(
        {
            "tasks": [render_task(t, full=False) for t in tasks],
            "first": "/v2/tasks",
            "schema": "/v2/schemas/tasks",
        }
    )


async def create_task(request: Request) -> Response:
    """POST /v2/tasks (admin): the legacy `import` task type, `input` with `import_from`
    (a URL the web-download filters allow), `import_from_format`, `image_properties`."""
    body = await json_body(request)
    if not isinstance(body, dict) or body.get("type") != "import":
        raise BadRequest("Invalid type value: the type value must be one of: import")
    input_ = body.get("input")
    if not isinstance(input_, dict) or not isinstance(input_.get("image_properties"), dict):
        raise BadRequest("Input must contain 'image_properties', 'import_from' and "
                         "'import_from_format'.")  # fmt: skip
    if not isinstance(input_.get("import_from_format"), str):
        raise BadRequest("Input does not contain 'import_from_format' field")
    ctx = await authorize(request, "image:add_task")
    service = service_of(request)
    imports.check_url(service, input_.get("import_from"))
    image, _, _ = await add_image(request, dict(input_["image_properties"]))
    task = await imports.start_legacy_import(service, ctx, image, input_)
    return json(render_task(task), status=201)


async def show_task(request: Request) -> Response:
    """GET /v2/tasks/{id} (admin)."""
    service = service_of(request)
    await authorize(request, "image:get_task")
    async with service.db.read() as session:
        task = await session.get(ImageTask, request.path_params["task_id"])
    if task is None:
        raise NotFound(f"Task with identifier {request.path_params['task_id']} not found")
    return json(render_task(task))


routes = [
    Route("/v2/images/{image_id}/tasks", image_tasks, methods=["GET"]),
    Route("/v2/tasks", list_tasks, methods=["GET"]),
    Route("/v2/tasks", create_task, methods=["POST"]),
    Route("/v2/tasks/{task_id}", show_task, methods=["GET"]),
]
