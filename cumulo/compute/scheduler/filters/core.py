from cumulo.compute.scheduler.host_state import HostState, RequestSpec


class CoreFilter:
    """Enough vCPUs left, counting cpu_allocation_ratio."""

    name = "CoreFilter"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.free_vcpus >= spec.vcpus
