"""A network's segment (provider:network_type, physical_network, segmentation_id), checked
and allocated as Neutron's ML2 type drivers do.

- flat: on a physical network listed in `[network] flat_networks` (`*`: any), no
  segmentation id, one flat network per physical network (409 FlatNetworkInUse).
- vlan: on a physical network of `[network] network_vlan_ranges` ("physnet" or
  "physnet:first:last"), VLAN ids 1-4094 (an admin may take one outside the ranges),
  each id once per physical network (409 VlanIdInUse). Without a segmentation id, or
  for tenant networks when `tenant_network_types` starts with vlan, the lowest free id of
  the ranges is allocated (503 NoNetworkAvailable when they are used up).
- vxlan: a VNI 1-16777215 (an admin may take one outside the ranges), no physical
  network. Without one, a VNI of `[network] vni_ranges` ("first:last") is allocated
  (503 NoNetworkAvailable when they are used up); with no ranges configured it stays
  unset and the data planes derive it from the network id (every host agrees without
  a table).
- local: neither.

Each segment is held by a unique key on the network row, so two concurrent creates of
the same VLAN or VNI cannot both win (the loser's retry sees it taken). VNIs are picked
at random among the first free ones, as ML2 does, so concurrent creates seldom collide.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.network.errors import (
    FlatNetworkInUse,
    InvalidInput,
    NoNetworkAvailable,
    TunnelIdInUse,
    VlanIdInUse,
)
from cumulo.network.models import Network

TYPES = ("flat", "vlan", "vxlan", "local")
MAX_VLAN = 4094
MAX_VNI = (1 << 24) - 1
RANGE_FORM = "physnet[:first:last]"
# How many of the lowest free VNIs a new network picks from (ML2's IDPOOL_SELECT_SIZE).
VNI_CHOICES = 100


@dataclass(frozen=True)
class VlanRange:
    physnet: str
    first: int | None = None  # None: the physical network, no tenant range
    last: int | None = None


def parse_vlan_ranges(entries: list[str]) -> list[VlanRange]:
    """`[network] network_vlan_ranges` ("physnet1:100:199", or "physnet2" alone)."""
    ranges = []
    for entry in entries:
        parts = entry.split(":")
        if len(parts) == 1 and parts[0]:
            ranges.append(VlanRange(parts[0]))
            continue
        try:
            physnet, first, last = parts[0], int(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            raise ValueError(f"network_vlan_ranges: {entry!r} is not {RANGE_FORM}") from None
        if len(parts) != 3 or not physnet or not 1 <= first <= last <= MAX_VLAN:
            raise ValueError(f"network_vlan_ranges: {entry!r} is not {RANGE_FORM}")
        ranges.append(VlanRange(physnet, first, last))
    return ranges


def parse_vni_ranges(entries: list[str]) -> list[tuple[int, int]]:
    """`[network] vni_ranges` ("1001:2000"): (first, last) pairs."""
    ranges = []
    for entry in entries:
        try:
            first, last = (int(part) for part in entry.split(":"))
        except ValueError:
            raise ValueError(f"vni_ranges: {entry!r} is not first:last") from None
        if not 1 <= first <= last <= MAX_VNI:
            raise ValueError(f"vni_ranges: {entry!r} is not within 1-{MAX_VNI}")
        ranges.append((first, last))
    return ranges


def free_ids(ranges: list[tuple[int, int]], used: set[int], wanted: int) -> list[int]:
    """Up to `wanted` of the lowest ids of `ranges` not in `used`."""
    found: list[int] = []
    for first, last in ranges:
        for candidate in range(first, last + 1):
            if candidate not in used:
                found.append(candidate)
                if len(found) == wanted:
                    return found
    return found


def segment_key(network_type: str, physnet: str | None, segmentation_id: int | None) -> str | None:
    """What the unique key holds: one flat network per physnet, one VLAN id per physnet,
    one VNI per cloud (unset VNIs are derived per network: no key)."""
    if network_type == "flat":
        return f"flat:{physnet}"
    if network_type == "vlan":
        return f"vlan:{physnet}:{segmentation_id}"
    if network_type == "vxlan" and segmentation_id is not None:
        return f"vxlan:{segmentation_id}"
    return None


class Segments:
    def __init__(self, config: Any) -> None:
        self.flat_networks: list[str] = list(config.flat_networks)
        self.vlan_ranges = parse_vlan_ranges(config.network_vlan_ranges)
        self.tenant_types: list[str] = list(config.tenant_network_types)
        self.vni_ranges = parse_vni_ranges(config.vni_ranges)

    def _vlan_physnets(self) -> set[str]:
        return {r.physnet for r in self.vlan_ranges}

    def check(self, attrs: dict[str, Any]) -> tuple[str | None, str | None, int | None]:
        """The provider attributes given (an admin's) checked as ML2 does; a vlan without
        an id comes back with None, to be allocated in the transaction."""
        kind = attrs.get("provider:network_type")
        physnet = attrs.get("provider:physical_network")
        seg = attrs.get("provider:segmentation_id")
        if kind is None:
            if physnet is not None or seg is not None:
                raise InvalidInput("provider:network_type required")
            return None, None, None  # all null: nothing asked for, a tenant network
        if not isinstance(kind, str) or kind not in TYPES:
            raise InvalidInput(f"network_type value '{kind}' not supported")
        if physnet is not None and (not isinstance(physnet, str) or len(physnet) > 64):
            raise InvalidInput(f"Invalid input for provider:physical_network: '{physnet}'.")
        if seg is not None:
            try:
                seg = int(seg)
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"Invalid input for provider:segmentation_id: '{seg}'."
                ) from None
        if kind == "flat":
            if seg is not None:
                raise InvalidInput("segmentation_id prohibited for flat provider network")
            if not physnet:
                raise InvalidInput("physical_network required for flat provider network")
            if not self.flat_networks:
                raise InvalidInput("Flat provider networks are disabled")
            if "*" not in self.flat_networks and physnet not in self.flat_networks:
                raise InvalidInput(
                    f"physical_network '{physnet}' unknown for flat provider network"
                )
        elif kind == "vlan":
            if physnet is None and seg is not None:
                raise InvalidInput(
                    "segmentation_id requires physical_network for VLAN provider network"
                )
            if physnet is not None and physnet not in self._vlan_physnets():
                raise InvalidInput(
                    f"physical_network '{physnet}' unknown for VLAN provider network"
                )
            if seg is not None and not 1 <= seg <= MAX_VLAN:
                raise InvalidInput(f"segmentation_id out of range (1 through {MAX_VLAN})")
        elif kind == "vxlan":
            if physnet is not None:
                raise InvalidInput("provider:physical_network specified for VXLAN network")
            if seg is not None and not 1 <= seg <= MAX_VNI:
                raise InvalidInput(f"segmentation_id out of range (1 through {MAX_VNI})")
        elif physnet is not None or seg is not None:  # local
            raise InvalidInput(
                "provider:physical_network and segmentation_id prohibited for local "
                "provider network"
            )
        return kind, physnet, seg

    def tenant_type(self) -> str:
        """A new tenant network's type: the first of tenant_network_types."""
        return self.tenant_types[0] if self.tenant_types else "local"

    async def claim(self, session: AsyncSession, net: Network) -> None:
        """Allocate what is left to allocate and check the segment is free, in the
        network's own transaction; sets net.segment_key (the unique key)."""
        if net.network_type == "vlan" and net.segmentation_id is None:
            net.physical_network, net.segmentation_id = await self._free_vlan(
                session, net.physical_network
            )
        if net.network_type == "vxlan" and net.segmentation_id is None and self.vni_ranges:
            net.segmentation_id = await self._free_vni(session)
        key = segment_key(net.network_type, net.physical_network, net.segmentation_id)
        if key is not None:
            taken = await session.scalar(
                select(Network.id).where(Network.segment_key == key, Network.id != net.id)
            )
            if taken:
                if net.network_type == "flat":
                    raise FlatNetworkInUse(
                        "Unable to create the flat network. Physical network "
                        f"{net.physical_network} is in use."
                    )
                if net.network_type == "vlan":
                    raise VlanIdInUse(
                        f"Unable to create the network. The VLAN {net.segmentation_id} on "
                        f"physical network {net.physical_network} is in use."
                    )
                raise TunnelIdInUse(
                    f"Unable to create the network. The tunnel ID {net.segmentation_id} is in use."
                )
        net.segment_key = key

    async def _free_vlan(self, session: AsyncSession, physnet: str | None) -> tuple[str, int]:
        ranges = [r for r in self.vlan_ranges if r.first is not None]
        if physnet is not None:
            ranges = [r for r in ranges if r.physnet == physnet]
        for r in ranges:
            assert r.first is not None and r.last is not None
            used = set(
                await session.scalars(
                    select(Network.segmentation_id).where(
                        Network.network_type == "vlan",
                        Network.physical_network == r.physnet,
                        Network.segmentation_id.between(r.first, r.last),
                    )
                )
            )
            for vid in range(r.first, r.last + 1):
                if vid not in used:
                    return r.physnet, vid
        raise NoNetworkAvailable(
            "Unable to create the network. No tenant network is available for allocation."
        )

    async def _free_vni(self, session: AsyncSession) -> int:
        """A VNI of the ranges no network holds: one of the lowest free ones at random."""
        used: set[int] = set()
        for first, last in self.vni_ranges:
            used.update(
                await session.scalars(
                    select(Network.segmentation_id).where(
                        Network.network_type == "vxlan",
                        Network.segmentation_id.between(first, last),
                    )
                )
            )
        candidates = free_ids(self.vni_ranges, used, VNI_CHOICES)
        if not candidates:
            raise NoNetworkAvailable(
                "Unable to create the network. No tenant network is available for allocation."
            )
        return random.choice(candidates)
