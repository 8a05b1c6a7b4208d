"""/v3 groups API (being written)."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
