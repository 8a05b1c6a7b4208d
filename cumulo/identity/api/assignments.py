"""/v3 assignments API (being written)."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
