"""Distributed routers' per-host MACs (Neutron's dvr_host_macs, dvr_mac_db).

Every host that routes for distributed routers puts its own MAC on the frames its
routers send into the tunnels (the gateway's MAC is on every such host: sent as it is,
the other hosts' switches would learn it from the tunnel). One per host, unique across
the cloud, made from `[network] dvr_base_mac` as Neutron's: its first three octets (four
when the fourth is not 00) kept, the rest random; allocated when the host's agent first
reports a DVR agent mode, kept while the host lives.
"""

from __future__ import annotations

import random

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.network.models import DvrHostMac

# Neutron's L3 agent modes that route distributed routers on the host.
DVR_MODES = ("dvr", "dvr_snat", "dvr_no_external")
_ATTEMPTS = 16


def random_mac(base_mac: str) -> str:
    """A MAC from the base (Neutron's get_random_mac): fixed octets kept, others random."""
    base = [int(octet, 16) for octet in base_mac.split(":")]
    kept = 4 if base[3] else 3
    octets = base[:kept] + [random.randrange(256) for _ in range(6 - kept)]
    return ":".join(f"{o:02x}" for o in octets)


async def ensure_host_mac(session: AsyncSession, host: str, base_mac: str) -> str:
    """The host's DVR MAC, allocated the first time (a clash with another host's, or a
    concurrent first report of the same host, retried in a savepoint)."""
    for _ in range(_ATTEMPTS):
        found = await session.scalar(select(DvrHostMac.mac_address).where(DvrHostMac.host == host))
        if found:
            return found
        try:
            async with session.begin_nested():
                session.add(DvrHostMac(host=host, mac_address=random_mac(base_mac)))
        except IntegrityError:
            continue
    raise RuntimeError(f"no free DVR MAC for host {host} from base {base_mac}")
