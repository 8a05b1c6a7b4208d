from cumulo.compute.scheduler.host_state import HostState


class CPUWeigher:
    """More free vCPUs weighs more (with a positive multiplier: spread)."""

    name = "CPUWeigher"

    def __init__(self, multiplier: float = 1.0) -> None:
        self.multiplier = multiplier

    def raw_weight(self, host: HostState) -> float:
        return host.free_vcpus
