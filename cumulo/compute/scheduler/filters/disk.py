from cumulo.compute.scheduler.host_state import HostState, RequestSpec


class DiskFilter:
    """Enough local disk left for root + ephemeral + swap, counting disk_allocation_ratio."""

    name = "DiskFilter"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.free_disk_gb >= spec.disk_gb
