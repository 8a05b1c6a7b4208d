from cumulo.compute.scheduler.host_state import HostState, RequestSpec


class ComputeFilter:
    """The host's compute service is enabled and has reported in recently."""

    name = "ComputeFilter"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.enabled and host.up
