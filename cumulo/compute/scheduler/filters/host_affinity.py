from cumulo.compute.scheduler.host_state import HostState, RequestSpec


class SameHostFilter:
    """Scheduler hint same_host: only a host running one of the servers named."""

    name = "SameHostFilter"

    def applies(self, spec: RequestSpec) -> bool:
        return spec.same_hosts is not None

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return spec.same_hosts is None or host.host in spec.same_hosts


class DifferentHostFilter:
    """Scheduler hint different_host: no host running one of the servers named."""

    name = "DifferentHostFilter"

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.different_hosts)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return not spec.different_hosts or host.host not in spec.different_hosts
