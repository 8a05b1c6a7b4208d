"""Glance's notifications (exchange `glance`): image.create, image.update, image.upload,
image.activate and image.delete, with the image as the v2 API shows it. Taken from the
API's successful answers by one middleware, so every handler is covered by one rule.
Interoperable imports, which activate in the background, send no image.activate yet."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cumulo.common import metrics
from cumulo.image.api.common import extras, located, render_image
from cumulo.image.models import Image

PUBLISHER = "image.cumulo"


async def image_payload(service: Any, image_id: str) -> dict[str, Any] | None:
    async with service.db.read() as session:
        image = await session.get(Image, image_id)
        if image is None:
            return None
        props, tags, held = await session.run_sync(extras, [image_id])
    # Where the data is, as anyone may see it: no locations in notifications.
    shown = located(service, image, held[image_id], None)
    return render_image(image, props[image_id], tags[image_id], shown)


async def notify_image(service: Any, event_type: str, payload: dict[str, Any] | None) -> None:
    if service.notifier is not None and payload is not None:
        await service.notifier.info(PUBLISHER, event_type, payload)


class ImageNotifications:
    def __init__(self, app: ASGIApp, service: Any) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method")
        if (
            scope["type"] != "http"
            or method not in ("POST", "PATCH", "PUT", "DELETE")
            or self.service.notifier is None
        ):
            await self.app(scope, receive, send)
            return
        status = 500
        body: list[bytes] = []
        # A deleted image can only be described before it goes.
        image_id = _image_id(scope["path"])
        before = None
        if method == "DELETE" and image_id and scope["path"].count("/") == 3:
            before = await image_payload(self.service, image_id)

        async def keep(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and method == "POST":
                body.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, keep)
        if not 200 <= status < 300:
            return
        route = metrics.route_template(scope)
        if route == "/v2/images" and method == "POST":
            await notify_image(self.service, "image.create", json.loads(b"".join(body)))
        elif route == "/v2/images/{image_id}" and method == "PATCH":
            await notify_image(
                self.service, "image.update", await image_payload(self.service, image_id)
            )
        elif route == "/v2/images/{image_id}" and method == "DELETE" and before is not None:
            await notify_image(self.service, "image.delete", {**before, "status": "deleted"})
        elif route == "/v2/images/{image_id}/file" and method == "PUT":
            payload = await image_payload(self.service, image_id)
            await notify_image(self.service, "image.upload", payload)
            await notify_image(self.service, "image.activate", payload)


def _image_id(path: str) -> str | None:
    parts = path.strip("/").split("/")
    return parts[2] if len(parts) >= 3 and parts[:2] == ["v2", "images"] else None
