from cumulo.compute.scheduler.host_state import HostState, RequestSpec


class SameHostFilter:
    """Hint same_host: only the hosts the named servers run on (Nova's SameHostFilter)."""

    name = "SameHostFilter"

    def applies(self, spec: RequestSpec) -> bool:
        return spec.same_hosts is not None

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return spec.same_hosts is None or host.host in spec.same_hosts
