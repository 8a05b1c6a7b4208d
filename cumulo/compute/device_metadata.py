"""Device role tagging (Nova's virt-device-role-tagging): the tags a user gave a server's
NICs (`networks[].tag` at boot, `tag` on interface attach) and volumes
(`block_device_mapping_v2[].tag`, `tag` on volume attach), joined to where the hypervisor
put those devices. The result is the instance's device metadata (Nova's
InstanceDeviceMetadata, kept on the instance and rebuilt by the compute host after every
spawn, attach and detach); the metadata service and the config drive show it as
meta_data.json's `devices` (cumulo.metadata.content).

A device is one dict: a NIC `{"type": "nic", "bus", "address", "mac", "tags",
"vf_trusted"}`, a disk `{"type": "disk", "bus", "address", "serial", "tags"}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cumulo.compute.virt.driver import DeviceAddress


def build_device_metadata(
    addresses: Iterable[DeviceAddress],
    network_info: Iterable[Mapping[str, Any]],
    volume_tags: Mapping[str, str],
) -> list[dict[str, Any]]:
    """The tagged devices among `addresses` (Nova's _build_device_metadata): a NIC by its
    port's MAC in `network_info` (each entry's `tag`), a disk by its volume id in
    `volume_tags`. Nova also lists untagged NICs on a VLAN; no port here has one."""
    nic_tags = {entry["mac"]: entry.get("tag") for entry in network_info}
    devices: list[dict[str, Any]] = []
    for where in addresses:
        if where.kind == "nic" and nic_tags.get(where.id):
            devices.append(
                {
                    "type": "nic",
                    "bus": where.bus,
                    "address": where.address,
                    "mac": where.id,
                    "tags": [nic_tags[where.id]],
                    "vf_trusted": False,  # no SR-IOV virtual functions here
                }
            )
        elif where.kind == "disk" and volume_tags.get(where.id):
            devices.append(
                {
                    "type": "disk",
                    "bus": where.bus,
                    "address": where.address,
                    # Nova's serial is the volume id: it finds the disk again at detach.
                    "serial": where.id,
                    "tags": [volume_tags[where.id]],
                }
            )
    return devices
