from cumulo.compute.scheduler.host_state import HostState, RequestSpec


class ServerGroupAffinityFilter:
    """Members of an affinity group all land on the host the group already uses."""

    name = "ServerGroupAffinityFilter"

    def applies(self, spec: RequestSpec) -> bool:
        return spec.group_policy == "affinity" and bool(spec.group_hosts)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        if spec.group_policy != "affinity" or not spec.group_hosts:
            return True
        return host.host in spec.group_hosts


class ServerGroupAntiAffinityFilter:
    """Members of an anti-affinity group never share a host."""

    name = "ServerGroupAntiAffinityFilter"

    def applies(self, spec: RequestSpec) -> bool:
        return spec.group_policy == "anti-affinity"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        if spec.group_policy != "anti-affinity":
            return True
        return host.host not in spec.group_hosts
