"""OpenStack request ids: the local one of each API request, and the global one that
follows a user's request across services (oslo.context's `request_id` and
`global_request_id`).

- Every API request gets a local id `req-<uuid>` (the `x-openstack-request-id` answer).
- A caller may send `X-OpenStack-Request-ID: req-<uuid>`: it becomes the request's
  global id. As oslo.middleware does, only a valid `req-` + lowercase UUID is taken;
  anything else is ignored (never echoed into logs).
- Messages on the bus carry both in their context (cumulo.common.rpc.base.envelope); the
  receiving side works under them again (dispatch), so the conductor's, scheduler's and
  compute host's log lines of a request carry the API's ids.
- Calls to another service's API send the global id, or the local one when there is
  none (oslo.context's `global_id`), as `X-OpenStack-Request-ID`: that service's lines
  carry it as their global id.

Both live in context variables, which asyncio tasks inherit; the logging filter
(cumulo.common.logs) prints them on every line.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import random
import re
import uuid
from collections.abc import Iterator
from typing import Any

HEADER = "X-OpenStack-Request-ID"
NONE = "-"

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default=NONE)
global_request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "global_request_id", default=None
)

# oslo.middleware's ID_FORMAT: "req-" and a UUID in lowercase hex, nothing around it.
_GLOBAL_ID = re.compile(r"req-[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}")


# Ids are unique, not secret: drawn without a system call. uuid4 reads urandom, which lets
# go of the GIL on the event loop's thread, and the loop then waits for it behind the
# worker threads (storage I/O) on every request.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)  # API workers forked: ids of their own


def new_request_id() -> str:
    return f"req-{uuid.UUID(int=_ids.getrandbits(128), version=4)}"


def valid_global_request_id(value: object) -> str | None:
    """`value` when it is a global request id a caller may give, else None (ignored)."""
    if isinstance(value, str) and _GLOBAL_ID.fullmatch(value):
        return value
    return None


def global_id() -> str | None:
    """The id to send to another service: the global one, else this request's own."""
    found = global_request_id_var.get() or request_id_var.get()
    return None if found == NONE else found


@contextlib.contextmanager
def working_for(request_id: str | None, global_request_id: str | None) -> Iterator[None]:
    """Run the block under these request ids (log lines, bus messages, outgoing calls)."""
    local = request_id_var.set(request_id or NONE)
    shared = global_request_id_var.set(valid_global_request_id(global_request_id))
    try:
        yield
    finally:
        global_request_id_var.reset(shared)
        request_id_var.reset(local)


def working_for_message(context: dict[str, Any]) -> contextlib.AbstractContextManager[None]:
    """The request ids a bus message's context carries."""
    return working_for(context.get("request_id"), context.get("global_request_id"))


def message_context(context: dict[str, Any]) -> dict[str, Any]:
    """The context a bus message carries: the caller's, with the request ids it is working
    for filled in where the caller's dict has none (a service's own `{}` context sent
    while handling a request still names that request)."""
    carried = dict(context)
    if "request_id" not in carried and request_id_var.get() != NONE:
        carried["request_id"] = request_id_var.get()
    if carried.get("global_request_id") is None and global_request_id_var.get() is not None:
        carried["global_request_id"] = global_request_id_var.get()
    return carried


async def inject_http(request: Any) -> None:
    """httpx request hook: a call to another service's API names the request it is for."""
    found = global_id()
    if found is not None and HEADER not in request.headers:
        request.headers[HEADER] = found
