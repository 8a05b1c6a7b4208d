"""Which storage policy a container's replicas agree on, when they disagree.

A container deleted and re-created with another policy while one replica's device was
down, or two creates racing, leaves replicas naming different policies. Swift's rules
(swift.container.reconciler.cmp_policy_info) settle it from each replica's status:
a live replica beats a deleted one; of two live ones a re-created one (put after a
delete) beats one that never was, and of two re-created ones the one not outdated by
the other's later delete; otherwise the oldest status change wins (the first create).

A replica's info here: put_timestamp, delete_timestamp, status_changed_at,
object_count (of its own policy) and storage_policy_index.
"""

from __future__ import annotations

import functools
from typing import Any

ZERO = "0"


def is_deleted(info: dict[str, Any]) -> bool:
    return info["delete_timestamp"] > info["put_timestamp"] and not info["object_count"]


def _recreated(info: dict[str, Any]) -> bool:
    return info["put_timestamp"] > info["delete_timestamp"] > ZERO


def _compare(a: str, b: str) -> int:
    return (a > b) - (a < b)


def compare(info: dict[str, Any], other: dict[str, Any]) -> int:
    """-1 when info's policy is the one to keep, 1 when other's, 0 when neither."""
    deleted, other_deleted = is_deleted(info), is_deleted(other)
    if deleted or other_deleted:
        if not deleted:
            return -1
        if not other_deleted:
            return 1
        # Both deleted: the latest status change (the last delete) speaks.
        return _compare(other["status_changed_at"], info["status_changed_at"])
    recreated, other_recreated = _recreated(info), _recreated(other)
    if recreated or other_recreated:
        if not recreated:
            return 1
        if not other_recreated:
            return -1
        last_delete = max(info["delete_timestamp"], other["delete_timestamp"])
        if info["put_timestamp"] < last_delete:
            return 1
        if other["put_timestamp"] < last_delete:
            return -1
    return _compare(info["status_changed_at"], other["status_changed_at"])


def other_policy_wins(info: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether a replica with `info` should take the policy of the one with `other`."""
    if other["storage_policy_index"] == info["storage_policy_index"]:
        return False
    return compare(info, other) > 0


def agreed_policy(infos: list[dict[str, Any]]) -> int:
    """The policy the replicas converge on, from the infos of (a quorum of) them."""
    return min(infos, key=functools.cmp_to_key(compare))["storage_policy_index"]
