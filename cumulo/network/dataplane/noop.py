"""The `noop` driver: records the desired state, touches nothing on the host.

For control-plane-only deployments and tests without root; a real, supported backend.
"""

from __future__ import annotations

from typing import Any

from cumulo.network.dataplane.driver import NetworkDriver, Wired


class NoopDriver(NetworkDriver):
    name = "noop"
    agent_mode = "dvr_snat"  # records any router it is given, distributed ones too

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"networks": [], "ports": [], "routers": []}
        self.applied = 0

    async def apply(
        self, state: dict[str, Any], wired: Wired | None = None, generation: int | None = None
    ) -> None:
        self.state = state
        self.applied += 1

    async def ha_states(self) -> dict[str, str]:
        """Nothing elects among hosts here: this host is active for each HA router it runs."""
        return {r["id"]: "active" for r in self.state["routers"] if r.get("ha")}

    async def teardown(self) -> None:
        self.state = {"networks": [], "ports": [], "routers": []}
