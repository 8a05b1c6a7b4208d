"""Nova's versioned instance notifications (instance.create.*, instance.delete.*): the
payload as an `InstanceActionPayload`-shaped versioned object, from what a compute host
knows of the instance."""

from __future__ import annotations

from typing import Any

from cumulo.common.notifications import VERSIONED_TOPIC, Notifier
from cumulo.compute.states import PowerState

PAYLOAD_VERSIONS = {"InstanceCreatePayload": "1.12", "InstanceActionPayload": "1.8"}


def _power_state(value: int | None) -> str:
    """Nova's names: pending (no state yet), running, paused, shutdown, crashed, suspended."""
    try:
        state = PowerState(value or 0)
    except ValueError:
        return "pending"
    return "pending" if state is PowerState.NOSTATE else state.name.lower()


def instance_payload(
    inst: dict[str, Any], name: str = "InstanceActionPayload", fault: str | None = None
) -> dict[str, Any]:
    flavor = inst.get("flavor") or {}
    data = {
        "uuid": inst["uuid"],
        "display_name": inst.get("name"),
        "host_name": inst.get("hostname"),
        "host": inst.get("host"),
        "node": inst.get("node"),
        "tenant_id": inst.get("project_id"),
        "user_id": inst.get("user_id"),
        "image_uuid": inst.get("image_ref") or "",
        "state": inst.get("vm_state"),
        "task_state": inst.get("task_state"),
        "power_state": _power_state(inst.get("power_state")),
        "availability_zone": inst.get("availability_zone"),
        "key_name": inst.get("key_name"),
        "reservation_id": inst.get("reservation_id"),
        "metadata": inst.get("metadata") or {},
        "launched_at": inst.get("launched_at"),
        "flavor": {
            "nova_object.name": "FlavorPayload",
            "nova_object.namespace": "nova",
            "nova_object.version": "1.4",
            "nova_object.data": {
                "flavorid": flavor.get("id") or flavor.get("flavorid"),
                "name": flavor.get("name"),
                "memory_mb": flavor.get("ram", flavor.get("memory_mb")),
                "vcpus": flavor.get("vcpus"),
                "root_gb": flavor.get("disk", flavor.get("root_gb")),
                "ephemeral_gb": flavor.get("ephemeral", flavor.get("ephemeral_gb")),
                "swap": flavor.get("swap"),
            },
        },
        "ip_addresses": [
            {
                "address": ip["ip_address"],
                "mac": vif["mac"],
                "port_uuid": vif["port_id"],
                "network_id": vif["network_id"],
                "version": 6 if ":" in ip["ip_address"] else 4,
            }
            for vif in inst.get("network_info") or []
            for ip in vif["fixed_ips"]
        ],
        "fault": None if fault is None else {"exception_message": fault},
    }
    return {
        "nova_object.name": name,
        "nova_object.namespace": "nova",
        "nova_object.version": PAYLOAD_VERSIONS.get(name, "1.8"),
        "nova_object.data": data,
    }


async def notify_instance(
    notifier: Notifier | None,
    host: str,
    event_type: str,
    inst: dict[str, Any],
    fault: str | None = None,
) -> None:
    """instance.<action>.<phase> from compute host `host` (nothing without a notifier)."""
    if notifier is None:
        return
    name = "InstanceCreatePayload" if event_type.startswith("instance.create") else None
    payload = instance_payload(inst, name or "InstanceActionPayload", fault)
    publisher = f"nova-compute:{host}"
    if fault is None:
        await notifier.info(publisher, event_type, payload)
    else:
        await notifier.error(publisher, event_type, payload)


def compute_notifier(config, state_dir) -> Notifier:
    return Notifier(config, state_dir, "compute", topic=VERSIONED_TOPIC)
