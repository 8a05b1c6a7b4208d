"""/v3 application_credentials API (being written)."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
