"""Host filters: one per module, each a `host_passes(host, spec)`.

`DEFAULT_FILTERS` is the pipeline the scheduler runs, in this order (cheap first).
"""

from __future__ import annotations

from typing import Protocol

from cumulo.compute.scheduler.filters.affinity import (
    ServerGroupAffinityFilter,
    ServerGroupAntiAffinityFilter,
)
from cumulo.compute.scheduler.filters.availability_zone import AvailabilityZoneFilter
from cumulo.compute.scheduler.filters.compute import ComputeFilter
from cumulo.compute.scheduler.filters.core import CoreFilter
from cumulo.compute.scheduler.filters.different_host import DifferentHostFilter
from cumulo.compute.scheduler.filters.disk import DiskFilter
from cumulo.compute.scheduler.filters.image_properties import ImagePropertiesFilter
from cumulo.compute.scheduler.filters.ram import RamFilter
from cumulo.compute.scheduler.filters.same_host import SameHostFilter
from cumulo.compute.scheduler.filters.traits import RequiredTraitsFilter
from cumulo.compute.scheduler.host_state import HostState, RequestSpec


class HostFilter(Protocol):
    name: str

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool: ...


DEFAULT_FILTERS: list[HostFilter] = [
    ComputeFilter(),
    AvailabilityZoneFilter(),
    RamFilter(),
    CoreFilter(),
    DiskFilter(),
    ImagePropertiesFilter(),
    RequiredTraitsFilter(),
    ServerGroupAffinityFilter(),
    ServerGroupAntiAffinityFilter(),
    SameHostFilter(),
    DifferentHostFilter(),
]
