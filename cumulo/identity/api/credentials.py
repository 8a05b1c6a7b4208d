"""/v3 credentials API (being written)."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
