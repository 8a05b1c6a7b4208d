"""The data plane driver interface, and choosing a driver for this host."""

from __future__ import annotations

import abc
import logging
import os
from typing import Any

LOG = logging.getLogger(__name__)

CAP_NET_ADMIN = 12


class NetworkDriver(abc.ABC):
    """Converges one host on a desired state (see cumulo.network.dataplane.state)."""

    name = "abstract"

    @abc.abstractmethod
    async def apply(self, state: dict[str, Any]) -> None:
        """Make the host match `state`: create what is missing, remove what is not wanted."""

    @abc.abstractmethod
    async def teardown(self) -> None:
        """Remove everything this driver built on the host."""


def has_net_admin() -> bool:
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return False


def select_driver(name: str) -> NetworkDriver:
    from cumulo.network.dataplane.noop import NoopDriver

    if name == "linuxbridge":
        raise NotImplementedError(
            "the linuxbridge data plane driver is not implemented yet; use driver = 'noop'"
        )
    if name == "auto" and has_net_admin():
        LOG.info("network data plane: linuxbridge is not available yet, using noop")
    return NoopDriver()
