"""The ring as servers read it: partition of a path, its primary and handoff devices.

The file is reloaded when it changes (checked at most once a second), so a rebalance
reaches a running proxy and its storage nodes without a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Node:
    """One device of the ring, as a proxy addresses it."""

    id: int
    region: int
    zone: int
    ip: str
    port: int
    device: str
    weight: float
    index: int = 0  # which replica (primaries) or handoff number


def hash_path(prefix: str, suffix: str, account: str, container: str = "", obj: str = "") -> str:
    """md5 of the path, salted with the cluster's secret prefix and suffix (as Swift)."""
    path = "/" + "/".join(p for p in (account, container, obj) if p)
    digest = hashlib.md5(f"{prefix}{path}{suffix}".encode(), usedforsecurity=False)
    return digest.hexdigest()


class Ring:
    CHECK_INTERVAL = 1.0

    def __init__(self, path: Path, hash_prefix: str, hash_suffix: str) -> None:
        self.path = path
        self.hash_prefix = hash_prefix
        self.hash_suffix = hash_suffix
        self._mtime = 0.0
        self._checked = 0.0
        self._data: dict[str, Any] = {}
        self._nodes: list[Node | None] = []
        self._load()

    def _load(self) -> None:
        stat = os.stat(self.path)
        data = json.loads(self.path.read_text())
        self._data = data
        self._nodes = [
            Node(d["id"], d["region"], d["zone"], d["ip"], d["port"], d["device"], d["weight"])
            if d
            else None
            for d in data["devs"]
        ]
        self._mtime = stat.st_mtime

    def reload_if_changed(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.CHECK_INTERVAL:
            return
        self._checked = now
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            self._load()

    @property
    def part_power(self) -> int:
        return self._data["part_power"]

    @property
    def replica_count(self) -> int:
        self.reload_if_changed()
        return self._data["replicas"]

    @property
    def partition_count(self) -> int:
        return 1 << self.part_power

    @property
    def devices(self) -> list[Node]:
        self.reload_if_changed()
        return [n for n in self._nodes if n is not None]

    def hash_of(self, account: str, container: str = "", obj: str = "") -> str:
        return hash_path(self.hash_prefix, self.hash_suffix, account, container, obj)

    def partition_of_hash(self, name_hash: str) -> int:
        return int(name_hash[:8], 16) >> (32 - self.part_power)

    def get_part(self, account: str, container: str = "", obj: str = "") -> int:
        return self.partition_of_hash(self.hash_of(account, container, obj))

    def get_part_nodes(self, part: int) -> list[Node]:
        self.reload_if_changed()
        nodes = []
        for r, row in enumerate(self._data["replica2part2dev"]):
            node = self._nodes[row[part]]
            if node is not None:
                nodes.append(_with_index(node, r))
        return nodes

    def get_nodes(self, account: str, container: str = "", obj: str = "") -> tuple[int, list[Node]]:
        part = self.get_part(account, container, obj)
        return part, self.get_part_nodes(part)

    def get_more_nodes(self, part: int) -> list[Node]:
        """Handoffs for a partition: the other devices, other zones first, in an order
        fixed by the partition (every proxy picks the same handoffs)."""
        primaries = self.get_part_nodes(part)
        used_zones = {(n.region, n.zone) for n in primaries}
        used_ids = {n.id for n in primaries}
        others = [n for n in self._nodes if n is not None and n.id not in used_ids]

        def order(n: Node) -> tuple[bool, str]:
            key = hashlib.md5(f"{part}:{n.id}".encode(), usedforsecurity=False).hexdigest()
            return ((n.region, n.zone) in used_zones, key)

        return [_with_index(n, len(primaries) + i) for i, n in enumerate(sorted(others, key=order))]


def _with_index(node: Node, index: int) -> Node:
    return Node(
        node.id, node.region, node.zone, node.ip, node.port, node.device, node.weight, index
    )
