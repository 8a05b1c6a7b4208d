"""Key/value metadata of volumes and snapshots: one set of routes for both
(`/{collection}/{id}/metadata[/{key}]`, the api-ref's volume and snapshot metadata)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import BadRequest, NotFound
from cumulo.volume.api.common import json, service_of

MAX_KEY = 255

# Given the request and the owner's id: checks policy and existence (404), returns the
# owner's project id. `write` says whether the caller means to change the metadata.
Loader = Callable[[Request, str, bool], Awaitable[str]]


def check_metadata(raw: Any, field: str = "metadata") -> dict[str, str]:
    if not isinstance(raw, dict):
        raise BadRequest(f"Invalid input for field/attribute {field}. Value: {raw}.")
    for key, value in raw.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY:
            raise BadRequest(f"Invalid input received: metadata key {key!r} is invalid.")
        if not isinstance(value, str) or len(value) > MAX_KEY:
            raise BadRequest(
                f"Invalid input for field/attribute {field}. Value: {raw}. "
                f"{value!r} is not a string of at most {MAX_KEY} characters"
            )
    return raw


class MetadataRoutes:
    """Metadata rows of one model: `owner` the foreign key column, `scope` extra equalities."""

    def __init__(self, collection: str, model: Any, owner: str, load: Loader, **scope: str) -> None:
        self.collection, self.model, self.owner, self.load, self.scope = (
            collection,
            model,
            owner,
            load,
            scope,
        )

    def _where(self, owner_id: str) -> list[Any]:
        cols = [getattr(self.model, self.owner) == owner_id]
        return cols + [getattr(self.model, k) == v for k, v in self.scope.items()]

    async def read(self, session: Any, owner_id: str) -> dict[str, str]:
        rows = await session.scalars(select(self.model).where(*self._where(owner_id)))
        return {r.key: r.value for r in rows}

    async def write(
        self, session: Any, owner_id: str, items: dict[str, str], replace: bool
    ) -> None:
        where = self._where(owner_id)
        if replace:
            await session.execute(delete(self.model).where(*where))
        else:
            await session.execute(delete(self.model).where(*where, self.model.key.in_(items)))
        for key, value in items.items():
            session.add(
                self.model(**{self.owner: owner_id, **self.scope, "key": key, "value": value})
            )

    async def _metadata(self, request: Request, item: str | None) -> Any:
        body = await json_body(request)
        field = "meta" if item is not None else "metadata"
        if not isinstance(body, dict) or field not in body:
            raise BadRequest(f"Malformed request body: '{field}' is required.")
        items = check_metadata(body[field], field)
        if item is not None and (len(items) != 1 or item not in items):
            raise BadRequest("Request body and URI mismatch")
        return items

    async def index(self, request: Request) -> Response:
        owner_id = request.path_params["id"]
        await self.load(request, owner_id, False)
        async with service_of(request).db.read() as session:
            return json({"metadata": await self.read(session, owner_id)})

    async def update(self, request: Request) -> Response:
        owner_id = request.path_params["id"]
        items = await self._metadata(request, None)
        await self.load(request, owner_id, True)
        async with service_of(request).db.write() as session:
            await self.write(session, owner_id, items, replace=request.method == "PUT")
            await session.flush()
            return json({"metadata": await self.read(session, owner_id)})

    async def show_item(self, request: Request) -> Response:
        owner_id, key = request.path_params["id"], request.path_params["key"]
        await self.load(request, owner_id, False)
        async with service_of(request).db.read() as session:
            value = (await self.read(session, owner_id)).get(key)
        if value is None:
            raise NotFound(f"Metadata key: {key} could not be found.")
        return json({"meta": {key: value}})

    async def update_item(self, request: Request) -> Response:
        owner_id, key = request.path_params["id"], request.path_params["key"]
        items = await self._metadata(request, key)
        await self.load(request, owner_id, True)
        async with service_of(request).db.write() as session:
            await self.write(session, owner_id, items, replace=False)
        return json({"meta": items})

    async def delete_item(self, request: Request) -> Response:
        owner_id, key = request.path_params["id"], request.path_params["key"]
        await self.load(request, owner_id, True)
        async with service_of(request).db.write() as session:
            result = await session.execute(
                delete(self.model).where(*self._where(owner_id), self.model.key == key)
            )
            if result.rowcount == 0:
                raise NotFound(f"Metadata key: {key} could not be found.")
        return Response(status_code=200)

    def routes(self) -> list[Route]:
        base = f"/v3/{self.collection}/{{id}}/metadata"
        return [
            Route(base, self.index, methods=["GET"]),
            Route(base, self.update, methods=["POST", "PUT"]),
            Route(base + "/{key}", self.show_item, methods=["GET"]),
            Route(base + "/{key}", self.update_item, methods=["PUT"]),
            Route(base + "/{key}", self.delete_item, methods=["DELETE"]),
        ]
