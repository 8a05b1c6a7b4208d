"""Distributed image import (Glance's worker_self_reference_url): data staged on one image
API node is that node's only; an import or a delete asked of another node is sent on to
the node holding it, with the caller's token, and answered as that node answers.

The cloud's own image API is the node that stages; a second node (another ImageService
on the same database, its own staging area and URL) takes the requests, in-process.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from cumulo.image.app import create_image_app
from cumulo.image.core import STAGE_HOST, ImageService
from cumulo.image.models import ImageProperty
from tests.cloudrunner import CloudRunner


@pytest.fixture(scope="module")
def second_node(cloud: CloudRunner, tmp_path_factory):
    """Another image API node of this cloud: same database and identity, its own staging
    area, reached here through an ASGI transport (it serves no port)."""
    main = cloud.cloud.image
    config = main.config.model_copy(deep=True)
    config.image.worker_self_reference_url = "http://image-node-2.invalid:9292"
    state: Path = tmp_path_factory.mktemp("image-node-2")
    # The main node's database, token validator and store: nothing of its own to close
    # (closing an ImageService closes those).
    node = ImageService(config, state, main.db, main.validator, store=main.store)
    app = create_image_app(node)

    async def call(method: str, path: str, token: str, **kwargs) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node-2") as client:
            return await client.request(method, path, headers={"X-Auth-Token": token}, **kwargs)

    return node, lambda *args, **kwargs: cloud.run_async(call(*args, **kwargs))


def _staged(cloud: CloudRunner, api: httpx.Client, data: bytes) -> str:
    made = api.post(
        "/v2/images",
        json={"name": f"staged-{uuid.uuid4().hex[:6]}", "disk_format": "raw",
              "container_format": "bare"},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    image_id = made.json()["id"]
    put = api.put(
        f"/v2/images/{image_id}/stage",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert put.status_code == 204, put.text
    return image_id


def _stage_host(cloud: CloudRunner, image_id: str) -> str | None:
    async def read() -> str | None:
        async with cloud.cloud.image.db.read() as s:
            row = await s.get(ImageProperty, (image_id, STAGE_HOST))
            return row.value if row else None

    return cloud.run_async(read())


def test_an_import_asked_of_another_node_is_done_by_the_node_holding_the_data(
    cloud: CloudRunner, second_node
):
    node, call = second_node
    token = cloud.token("demo", project="demo")
    data = uuid.uuid4().bytes * 4096
    base = f"http://127.0.0.1:{cloud.config.ports.image}"
    with httpx.Client(base_url=base, headers={"X-Auth-Token": token}, timeout=30) as api:
        image_id = _staged(cloud, api, data)
        # The staging node records itself (never shown), the other has no data.
        main_url = cloud.cloud.image.self_url
        assert _stage_host(cloud, image_id) == main_url
        assert STAGE_HOST not in api.get(f"/v2/images/{image_id}").json()
        assert not node.staged_path(image_id).exists()
        body = {"method": {"name": "glance-direct"}}
        answered = call("POST", f"/v2/images/{image_id}/import", token, json=body)
        assert answered.status_code == 202, answered.text
        deadline = time.monotonic() + 30
        while (shown := api.get(f"/v2/images/{image_id}").json())["status"] != "active":
            assert shown["status"] in ("uploading", "importing"), shown
            assert time.monotonic() < deadline, shown
            time.sleep(0.1)
        assert api.get(f"/v2/images/{image_id}/file").content == data
        assert _stage_host(cloud, image_id) is None  # nothing staged any more
        # Imported: a second import is the image's own business again (409 here).
        again = call("POST", f"/v2/images/{image_id}/import", token, json=body)
        assert again.status_code == 409
        api.delete(f"/v2/images/{image_id}")


def test_a_delete_asked_of_another_node_reaches_the_staged_data(cloud: CloudRunner, second_node):
    node, call = second_node
    token = cloud.token("demo", project="demo")
    base = f"http://127.0.0.1:{cloud.config.ports.image}"
    with httpx.Client(base_url=base, headers={"X-Auth-Token": token}, timeout=30) as api:
        image_id = _staged(cloud, api, b"staged bytes" * 100)
        staged = cloud.cloud.image.staged_path(image_id)
        assert staged.exists()
        assert call("DELETE", f"/v2/images/{image_id}", token).status_code == 204
        assert api.get(f"/v2/images/{image_id}").status_code == 404
        assert not staged.exists()  # removed by the node that had it


def test_an_unreachable_stage_host_fails_the_import_and_the_delete_goes_on_here(
    cloud: CloudRunner, second_node
):
    node, call = second_node
    token = cloud.token("demo", project="demo")
    base = f"http://127.0.0.1:{cloud.config.ports.image}"
    with httpx.Client(base_url=base, headers={"X-Auth-Token": token}, timeout=30) as api:
        image_id = _staged(cloud, api, b"lost" * 100)

        async def move_stage_host() -> None:  # as if a node that is gone had staged it
            async with cloud.cloud.image.db.write() as s:
                row = await s.get(ImageProperty, (image_id, STAGE_HOST))
                row.value = "http://127.0.0.1:9"

        cloud.run_async(move_stage_host())
        cloud.cloud.image.staged_path(image_id).unlink()
        body = {"method": {"name": "glance-direct"}}
        refused = call("POST", f"/v2/images/{image_id}/import", token, json=body)
        assert refused.status_code == 503 and "cannot be reached" in refused.text
        assert api.get(f"/v2/images/{image_id}").json()["status"] == "uploading"
        assert call("DELETE", f"/v2/images/{image_id}", token).status_code == 204
        assert api.get(f"/v2/images/{image_id}").status_code == 404
