"""The EC2 actions, one module per kind of resource; each registers its handlers.

A handler takes the request context and the action's parameters as boto3 writes them
(`{"InstanceIds": [...], "Filters": [...]}`) and returns the dict boto3 would return."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[..., Awaitable[dict[str, Any]]]
HANDLERS: dict[str, Handler] = {}


def action(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


def load() -> dict[str, Handler]:
    """Every handler (importing the modules registers them)."""
    from cumulo.ec2.api import (  # noqa: F401 - registration
        addresses,
        images,
        imports,
        instances,
        keypairs,
        regions,
        security_groups,
        tags,
        volumes,
        vpc,
    )

    return HANDLERS
