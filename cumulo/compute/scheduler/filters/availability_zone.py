from cumulo.compute.scheduler.host_state import HostState, RequestSpec


class AvailabilityZoneFilter:
    """The host is in the availability zone the request names (any zone when none)."""

    name = "AvailabilityZoneFilter"

    def applies(self, spec: RequestSpec) -> bool:
        return spec.availability_zone is not None

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return spec.availability_zone is None or host.availability_zone == spec.availability_zone
