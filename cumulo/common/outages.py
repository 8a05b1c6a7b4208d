"""Errors that mean a backing server is away just now (the database or the message
broker restarting, failing over, the network cut): the APIs answer them 503 with
Retry-After instead of 500, and the client tries again."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError


def _chain(exc: BaseException | None):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


# Driver errors (by class name: asyncpg's, aiomysql's) that say the server went away.
_GONE = frozenset(
    {"CannotConnectNowError", "ConnectionDoesNotExistError", "AdminShutdownError",
     "ConnectionFailureError", "InterfaceError"}
)  # fmt: skip


def database_unreachable(exc: BaseException | None) -> bool:
    """Whether an error means the database server cannot be reached just now (restarting,
    failing over, the network cut): the API answers 503 and the client tries again."""
    for e in _chain(exc):
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, (OperationalError, SATimeoutError, ConnectionError)):
            return True
        if type(e).__name__ in _GONE:
            return True
    return False


# aio-pika's and aiormq's errors (by class name) that say the broker is away just now.
_BUS_GONE = frozenset(
    {"AMQPConnectionError", "ChannelInvalidStateError", "ConnectionClosed", "ChannelClosed",
     "IncompatibleProtocolError", "CONNECTION_FORCED"}
)  # fmt: skip


def bus_unreachable(exc: BaseException | None) -> bool:
    """Whether an error means the message broker cannot be reached just now (restarting,
    the network cut): the API answers 503 and the client tries again."""
    return any(type(e).__name__ in _BUS_GONE for e in _chain(exc))
