"""The ring builder (Swift's swift-ring-builder as the model).

A ring has 2**part_power partitions, each kept `replicas` times. `rebalance` assigns
every (partition, replica) to a device: replicas of one partition as far apart as the
devices allow (another region, then another zone, then another device), and each
device getting partitions in proportion to its weight. A partition that moved is not
moved again before `min_part_hours` (its data is still being copied), and only one of
its replicas moves per rebalance, so two of three copies always stay where they were.

The builder (devices, assignment, move times) is kept in `<name>.builder.json`; what
the servers read is the ring file `<name>.ring.json` that `write_ring` produces.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

NONE = -1  # a replica with no device yet


class RingError(ValueError):
    pass


@dataclass
class Device:
    id: int
    region: int
    zone: int
    ip: str
    port: int
    device: str
    weight: float
    meta: str = ""

    @property
    def tiers(self) -> tuple[tuple, tuple, tuple]:
        return (self.region,), (self.region, self.zone), (self.region, self.zone, self.id)


def _hours_now() -> int:
    return int(time.time() // 3600)


@dataclass
class RingBuilder:
    part_power: int
    replicas: int
    min_part_hours: int
    devs: list[Device | None] = field(default_factory=list)
    # replica2part2dev[r][p]: the device id holding replica r of partition p.
    replica2part2dev: list[list[int]] = field(default_factory=list)
    # The hour each partition last moved (hours since the epoch).
    last_part_moves: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    version: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.part_power <= 24:
            raise RingError("part_power must be between 0 and 24")
        if self.replicas < 1:
            raise RingError("replicas must be at least 1")
        if self.min_part_hours < 0:
            raise RingError("min_part_hours must not be negative")

    @property
    def parts(self) -> int:
        return 1 << self.part_power

    # -- devices ----------------------------------------------------------------------

    def live_devs(self) -> list[Device]:
        return [d for d in self.devs if d is not None and d.id not in self.removed]

    def device(self, dev_id: int) -> Device:
        if dev_id < 0 or dev_id >= len(self.devs) or self.devs[dev_id] is None:
            raise RingError(f"no device with id {dev_id}")
        return self.devs[dev_id]  # type: ignore[return-value]

    def add_device(
        self, *, region: int, zone: int, ip: str, port: int, device: str, weight: float
    ) -> Device:
        if weight < 0:
            raise RingError("weight must not be negative")
        for d in self.live_devs():
            if (d.ip, d.port, d.device) == (ip, port, device):
                raise RingError(f"device {ip}:{port}/{device} is already in the ring (id {d.id})")
        dev = Device(len(self.devs), region, zone, ip, port, device, float(weight))
        self.devs.append(dev)
        return dev

    def set_weight(self, dev_id: int, weight: float) -> None:
        if weight < 0:
            raise RingError("weight must not be negative")
        self.device(dev_id).weight = float(weight)

    def remove_device(self, dev_id: int) -> None:
        """The device's partitions go elsewhere at the next rebalance; then it is gone."""
        self.device(dev_id).weight = 0.0
        if dev_id not in self.removed:
            self.removed.append(dev_id)

    # -- figures ----------------------------------------------------------------------

    def _weighted(self) -> list[Device]:
        return [d for d in self.live_devs() if d.weight > 0]

    def desired_parts(self) -> dict[int, float]:
        devs = self._weighted()
        total = sum(d.weight for d in devs)
        return {d.id: self.parts * self.replicas * d.weight / total for d in devs}

    def assigned_parts(self) -> dict[int, int]:
        counts = {d.id: 0 for d in self.live_devs()}
        for row in self.replica2part2dev:
            for dev_id in row:
                if dev_id in counts:
                    counts[dev_id] += 1
        return counts

    def balance(self) -> float:
        """The largest gap (percent) between a device's partitions and its weight's share."""
        if not self.replica2part2dev:
            return 0.0
        desired = self.desired_parts()
        assigned = self.assigned_parts()
        return max(
            (abs(assigned.get(d, 0) / want - 1) * 100 for d, want in desired.items()),
            default=0.0,
        )

    def _best_spread(self) -> tuple[int, int, int]:
        devs = self._weighted()
        regions = {d.tiers[0] for d in devs}
        zones = {d.tiers[1] for d in devs}
        return (
            min(self.replicas, len(regions)),
            min(self.replicas, len(zones)),
            min(self.replicas, len(devs)),
        )

    def dispersion(self) -> float:
        """Percent of partitions whose replicas are closer together than the devices allow."""
        if not self.replica2part2dev:
            return 0.0
        best = self._best_spread()
        bad = 0
        for part in range(self.parts):
            devs = [self.devs[row[part]] for row in self.replica2part2dev if row[part] != NONE]
            spread = tuple(len({d.tiers[t] for d in devs if d}) for t in range(3))
            if any(s < b for s, b in zip(spread, best, strict=True)):
                bad += 1
        return 100.0 * bad / self.parts

    # -- rebalance --------------------------------------------------------------------

    def rebalance(self, seed: int | None = None) -> int:
        """Assign what is unassigned or misplaced, move what is over its weight's share
        (when allowed by min_part_hours). Returns how many partition-replicas moved."""
        devs = self._weighted()
        if len(devs) < 1:
            raise RingError("the ring has no device with a weight")
        rng = random.Random(seed)
        now = _hours_now()
        if not self.replica2part2dev:
            self.replica2part2dev = [[NONE] * self.parts for _ in range(self.replicas)]
            self.last_part_moves = [0] * self.parts
        desired = self.desired_parts()
        counts = {d.id: 0 for d in devs}
        live = {d.id for d in devs}
        moved_parts: set[int] = set()
        todo: list[tuple[int, int]] = []
        for r, row in enumerate(self.replica2part2dev):
            for p, dev_id in enumerate(row):
                if dev_id in live and self._placement_ok(p, r):
                    counts[dev_id] += 1
                else:
                    if dev_id != NONE:
                        moved_parts.add(p)
                    row[p] = NONE
                    todo.append((p, r))
        # Devices over their share give up partitions that may move, one replica each.
        for dev_id in sorted(counts, key=lambda d: counts[d] - desired[d], reverse=True):
            excess = counts[dev_id] - int(desired[dev_id] + 0.999)
            if excess <= 0:
                continue
            slots = [
                (p, r)
                for r, row in enumerate(self.replica2part2dev)
                for p, d in enumerate(row)
                if d == dev_id
            ]
            rng.shuffle(slots)
            for p, r in slots:
                if excess <= 0:
                    break
                if p in moved_parts or now - self.last_part_moves[p] < self.min_part_hours:
                    continue
                self.replica2part2dev[r][p] = NONE
                counts[dev_id] -= 1
                moved_parts.add(p)
                todo.append((p, r))
                excess -= 1
        rng.shuffle(todo)
        by_id = {d.id: d for d in devs}
        for p, r in todo:
            dev = self._choose_device(p, by_id, counts, desired, rng)
            self.replica2part2dev[r][p] = dev.id
            counts[dev.id] += 1
            self.last_part_moves[p] = now
        self.devs = [None if d is not None and d.id in self.removed else d for d in self.devs]
        self.removed = []
        self.version += 1
        return len(todo)

    def pretend_min_part_hours_passed(self) -> None:
        """Let every partition move at the next rebalance (swift-ring-builder's command
        of the same name: after a failed device's data is known to be gone)."""
        self.last_part_moves = [0] * len(self.last_part_moves)

    def _placement_ok(self, part: int, replica: int) -> bool:
        """A replica stays unless another replica of the partition shares its device."""
        dev_id = self.replica2part2dev[replica][part]
        return all(
            row[part] != dev_id for r, row in enumerate(self.replica2part2dev) if r < replica
        )

    def _choose_device(self, part, by_id, counts, desired, rng) -> Device:
        others = [by_id[row[part]] for row in self.replica2part2dev if row[part] in by_id]
        taken = {d.id for d in others}

        def score(d: Device) -> tuple:
            region, zone, _ = d.tiers
            return (
                sum(o.tiers[0] == region for o in others),
                sum(o.tiers[1] == zone for o in others),
                sum(o.ip == d.ip for o in others),
                -(desired[d.id] - counts[d.id]) / desired[d.id],
                rng.random(),
            )

        candidates = [d for d in by_id.values() if d.id not in taken] or list(by_id.values())
        return min(candidates, key=score)

    # -- files ------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "part_power": self.part_power,
            "replicas": self.replicas,
            "min_part_hours": self.min_part_hours,
            "devs": [asdict(d) if d else None for d in self.devs],
            "replica2part2dev": self.replica2part2dev,
            "last_part_moves": self.last_part_moves,
            "removed": self.removed,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict) -> RingBuilder:
        devs = [Device(**d) if d else None for d in data.pop("devs")]
        return cls(devs=devs, **data)

    @classmethod
    def load(cls, path: Path) -> RingBuilder:
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise RingError(f"no ring builder at {path}") from None

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(self.to_dict()))

    def ring_data(self) -> dict:
        """What servers read: devices and the assignment (no builder history)."""
        if not self.replica2part2dev or any(NONE in row for row in self.replica2part2dev):
            raise RingError("the ring is not balanced yet: run rebalance")
        return {
            "part_power": self.part_power,
            "replicas": self.replicas,
            "version": self.version,
            "devs": [asdict(d) if d else None for d in self.devs],
            "replica2part2dev": self.replica2part2dev,
        }

    def write_ring(self, path: Path) -> None:
        atomic_write(path, json.dumps(self.ring_data()))


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a ring file whole or not at all (readers reload it when it changes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
