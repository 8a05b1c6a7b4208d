"""What the scheduler knows of a host, and what one instance asks of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class HostState:
    host: str
    node: str
    vcpus: int
    memory_mb: int
    local_gb: int
    vcpus_used: int = 0
    memory_mb_used: int = 0
    local_gb_used: int = 0
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    # Memory and disk kept back for the host itself.
    reserved_host_memory_mb: int = 0
    reserved_host_disk_gb: int = 0
    availability_zone: str = "nova"
    enabled: bool = True
    up: bool = True
    hypervisor_type: str = "fake"
    cpu_arch: str = "x86_64"
    # The capability traits the host reports (Nova's os-traits names).
    traits: frozenset[str] = frozenset()
    instance_uuids: set[str] = field(default_factory=set)

    @property
    def free_vcpus(self) -> float:
        return self.vcpus * self.cpu_allocation_ratio - self.vcpus_used

    @property
    def free_ram_mb(self) -> float:
        usable = (self.memory_mb - self.reserved_host_memory_mb) * self.ram_allocation_ratio
        return usable - self.memory_mb_used

    @property
    def free_disk_gb(self) -> float:
        usable = (self.local_gb - self.reserved_host_disk_gb) * self.disk_allocation_ratio
        return usable - self.local_gb_used

    def consume(self, spec: RequestSpec, instance_uuid: str | None = None) -> None:
        """Account for an instance placed here (the scheduler's view within one request)."""
        self.vcpus_used += spec.vcpus
        self.memory_mb_used += spec.memory_mb
        self.local_gb_used += spec.disk_gb
        if instance_uuid:
            self.instance_uuids.add(instance_uuid)


@dataclass
class RequestSpec:
    vcpus: int
    memory_mb: int
    disk_gb: int  # root + ephemeral + swap (rounded up to GiB); 0 when booting from volume
    num_instances: int = 1
    availability_zone: str | None = None
    image_properties: dict[str, Any] = field(default_factory=dict)
    # Traits every chosen host must report (e.g. an emulated TPM's).
    required_traits: frozenset[str] = frozenset()
    # Server group: policy "affinity" / "anti-affinity" and where its members run now.
    group_policy: str | None = None
    group_hosts: set[str] = field(default_factory=set)
    # Admin-only: restrict to these hosts; hosts already tried (retries) are ignored.
    force_hosts: list[str] = field(default_factory=list)
    ignore_hosts: set[str] = field(default_factory=set)
    # Scheduler hints same_host / different_host: the hosts of the servers they name
    # (None: no same_host hint).
    same_hosts: set[str] | None = None
    different_hosts: set[str] = field(default_factory=set)
