"""First-run content of Compute: the flavors DevStack users expect."""

from __future__ import annotations

from sqlalchemy import select

from cumulo.common.db import Database
from cumulo.compute.models import Flavor

# (flavorid, name, vcpus, memory_mb, root_gb) — Nova's classic m1 set, plus m1.nano.
DEFAULT_FLAVORS = [
    ("0", "m1.nano", 1, 128, 1),
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("5", "m1.xlarge", 8, 16384, 160),
]


async def bootstrap_compute(db: Database) -> None:
    async with db.write() as s:
        existing = set(await s.scalars(select(Flavor.flavorid)))
        names = set(await s.scalars(select(Flavor.name)))
        for flavorid, name, vcpus, ram, disk in DEFAULT_FLAVORS:
            if flavorid in existing or name in names:
                continue
            s.add(
                Flavor(
                    flavorid=flavorid,
                    name=name,
                    vcpus=vcpus,
                    memory_mb=ram,
                    root_gb=disk,
                    ephemeral_gb=0,
                    swap=0,
                    rxtx_factor=1.0,
                    is_public=True,
                    disabled=False,
                    extra_specs={},
                )
            )
