"""The object store's ring: placement, balance, min_part_hours, handoffs, reloads."""

from __future__ import annotations

import os
import time

import pytest

from cumulo.object_store.ring import Ring, RingBuilder, RingError


def _builder(zones=(1, 2, 3), regions=None, replicas=3, weights=None, part_power=8):
    b = RingBuilder(part_power, replicas, 1)
    for i, zone in enumerate(zones):
        b.add_device(
            region=(regions or [1] * len(zones))[i],
            zone=zone,
            ip=f"10.0.0.{i}",
            port=6200,
            device=f"d{i}",
            weight=(weights or [100] * len(zones))[i],
        )
    return b


def _replica_devs(b, part):
    return [b.devs[row[part]] for row in b.replica2part2dev]


def test_every_partition_has_its_replicas_in_different_zones():
    b = _builder(zones=(1, 1, 2, 2, 3, 3))
    b.rebalance(seed=1)
    for part in range(b.parts):
        devs = _replica_devs(b, part)
        assert len({d.zone for d in devs}) == 3
    assert b.dispersion() == 0.0
    assert b.balance() < 5


def test_replicas_go_to_another_region_before_another_zone():
    b = _builder(zones=(1, 2, 1, 2), regions=[1, 1, 2, 2], replicas=2)
    b.rebalance(seed=1)
    for part in range(b.parts):
        assert {d.region for d in _replica_devs(b, part)} == {1, 2}


def test_partitions_follow_weights():
    b = _builder(zones=(1, 2, 3, 4), weights=[100, 100, 100, 200], replicas=2)
    b.rebalance(seed=3)
    counts = b.assigned_parts()
    assert counts[3] == pytest.approx(2 * counts[0], rel=0.1)
    assert b.balance() < 5


def test_min_part_hours_keeps_partitions_from_moving_twice():
    b = _builder(zones=(1, 2, 3, 4))
    b.rebalance(seed=1)
    b.set_weight(3, 300)
    assert b.rebalance(seed=2) == 0
    b.pretend_min_part_hours_passed()
    assert b.rebalance(seed=2) > 0
    # Only one replica of a partition moves per rebalance.
    assert b.dispersion() == 0.0


def test_removed_device_loses_every_partition_at_once(tmp_path):
    b = _builder(zones=(1, 2, 3, 4))
    b.rebalance(seed=1)
    b.remove_device(0)
    moved = b.rebalance(seed=2)
    assert moved > 0
    assert all(0 not in row for row in b.replica2part2dev)
    assert b.devs[0] is None
    b.save(tmp_path / "x.builder.json")
    again = RingBuilder.load(tmp_path / "x.builder.json")
    assert again.replica2part2dev == b.replica2part2dev


def test_ring_needs_a_weighted_device():
    b = RingBuilder(4, 3, 1)
    with pytest.raises(RingError):
        b.rebalance()
    with pytest.raises(RingError):
        b.write_ring(__import__("pathlib").Path("/nonexistent"))


def test_ring_file_gives_nodes_and_handoffs_and_reloads(tmp_path):
    b = _builder(zones=(1, 2, 3, 4, 5))
    b.rebalance(seed=1)
    path = tmp_path / "object.ring.json"
    b.write_ring(path)
    ring = Ring(path, "pre", "suf")
    part, nodes = ring.get_nodes("AUTH_a", "c", "o")
    assert len(nodes) == 3 and len({n.zone for n in nodes}) == 3
    handoffs = ring.get_more_nodes(part)
    assert {n.id for n in handoffs}.isdisjoint({n.id for n in nodes})
    assert len(handoffs) == 2
    assert ring.get_part("AUTH_a", "c", "o") == part
    # Another salt puts names elsewhere (the hash is salted per cluster).
    others = {Ring(path, "x", "y").get_part("AUTH_a", "c", f"o{i}") for i in range(50)}
    mine = {ring.get_part("AUTH_a", "c", f"o{i}") for i in range(50)}
    assert others != mine
    # A rebalance written to the file reaches the running ring.
    b.remove_device(nodes[0].id)
    b.rebalance(seed=2)
    b.write_ring(path)
    os.utime(path, (time.time() + 5, time.time() + 5))
    ring._checked = 0
    assert nodes[0].id not in {n.id for n in ring.get_part_nodes(part)}
