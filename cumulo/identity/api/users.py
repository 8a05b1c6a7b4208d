"""/v3 users API (being written)."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
