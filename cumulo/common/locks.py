"""Locks keyed by a name (a server's uuid, a volume's id), made when first wanted and
gone when no task holds or awaits them."""

from __future__ import annotations

import asyncio
import weakref


def keyed_lock(locks: weakref.WeakValueDictionary[str, asyncio.Lock], key: str) -> asyncio.Lock:
    """The lock of `key` in a table of weak references: it stays in the table while a
    task holds it (by `async with`, which keeps it referenced) or waits for it, and
    goes by itself once none does, so that the table does not keep a lock per key
    ever seen. A new lock is only made when no task holds or awaits one for `key`:
    mutual exclusion holds across it."""
    lock = locks.get(key)
    if lock is None:
        lock = locks[key] = asyncio.Lock()
    return lock
