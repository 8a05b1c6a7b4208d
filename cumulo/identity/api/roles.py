"""/v3 roles API (being written)."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
