from cumulo.compute.scheduler.host_state import HostState


class DiskWeigher:
    """More free disk weighs more (with a positive multiplier: spread)."""

    name = "DiskWeigher"

    def __init__(self, multiplier: float = 1.0) -> None:
        self.multiplier = multiplier

    def raw_weight(self, host: HostState) -> float:
        return host.free_disk_gb
