from cumulo.compute.scheduler.host_state import HostState, RequestSpec


class DifferentHostFilter:
    """Hint different_host: none of the hosts the named servers run on (Nova's
    DifferentHostFilter)."""

    name = "DifferentHostFilter"

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.different_hosts)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.host not in spec.different_hosts
