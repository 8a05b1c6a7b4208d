from cumulo.compute.scheduler.host_state import HostState


class RAMWeigher:
    """More free memory weighs more (with a positive multiplier: spread)."""

    name = "RAMWeigher"

    def __init__(self, multiplier: float = 1.0) -> None:
        self.multiplier = multiplier

    def raw_weight(self, host: HostState) -> float:
        return host.free_ram_mb
