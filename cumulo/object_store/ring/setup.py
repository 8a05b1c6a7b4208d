"""Where a cloud's rings live, and the rings `cumulo up` creates when there are none."""

from __future__ import annotations

from pathlib import Path

from cumulo.common.config import CumuloConfig
from cumulo.object_store.policies import object_ring_name
from cumulo.object_store.ring.builder import RingBuilder


def rings_dir(config: CumuloConfig, state_dir: Path) -> Path:
    return Path(config.object_store.rings or state_dir / "object-store" / "rings")


def devices_dir(config: CumuloConfig, state_dir: Path) -> Path:
    return Path(config.object_store.devices or state_dir / "object-store" / "devices")


def ring_names(config: CumuloConfig) -> list[str]:
    return ["account", "container"] + [
        object_ring_name(p.index) for p in config.object_store.policies
    ]


def ensure_default_rings(config: CumuloConfig, state_dir: Path) -> None:
    """All-in-one: device directories d0..dN-1 (one zone each) and a balanced ring for
    accounts, containers and every policy that has none yet."""
    osc = config.object_store
    devices = devices_dir(config, state_dir)
    names = [f"d{i}" for i in range(osc.device_count)]
    replicas = {object_ring_name(p.index): p.replicas for p in osc.policies}
    for ring in ring_names(config):
        ring_file = rings_dir(config, state_dir) / f"{ring}.ring.json"
        if ring_file.exists():
            continue
        for name in names:
            (devices / name).mkdir(parents=True, exist_ok=True)
        builder = RingBuilder(
            osc.part_power, min(replicas.get(ring, 3), len(names)), osc.min_part_hours
        )
        for zone, name in enumerate(names, start=1):
            builder.add_device(
                region=1,
                zone=zone,
                ip=config.catalog_host,
                port=config.ports.object_store,
                device=name,
                weight=100,
            )
        builder.rebalance(seed=0)
        builder.save(ring_file.with_name(f"{ring}.builder.json"))
        builder.write_ring(ring_file)
