from cumulo.compute.scheduler.host_state import HostState, RequestSpec


class RamFilter:
    """Enough memory left, counting ram_allocation_ratio and the host's reserve."""

    name = "RamFilter"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.free_ram_mb >= spec.memory_mb
