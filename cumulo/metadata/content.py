"""What a guest learns about itself: the OpenStack and EC2 metadata documents.

Pure functions of an InstanceMetadata, shared by the config drive (written once at
spawn) and the metadata HTTP service (served at 169.254.169.254), so both always say
the same thing. Formats follow Nova's metadata API (nova/api/metadata/base.py, as
read by cloud-init): OpenStack `meta_data.json`, `network_data.json`, `vendor_data.json`,
`vendor_data2.json`, `user_data`, and the EC2 `/latest/meta-data/` tree. Vendor data is
collected beforehand (cumulo.metadata.vendordata) into the InstanceMetadata.
"""

from __future__ import annotations

import ipaddress
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

# The OpenStack metadata versions a guest may ask for, oldest first ("latest" is the last).
OPENSTACK_VERSIONS = (
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "2020-10-14",
)
# Where each document first appeared.
_VENDOR_DATA_SINCE = "2013-10-17"
_NETWORK_DATA_SINCE = "2015-10-15"
_VENDOR_DATA2_SINCE = "2016-10-06"
# meta_data.json `devices` (Newton), a NIC's `vlan` (Ocata) and `vf_trusted` (Rocky).
_DEVICES_SINCE = "2016-06-30"
_DEVICE_VLAN_SINCE = "2017-02-22"
_DEVICE_VF_TRUSTED_SINCE = "2018-08-27"
_DEVICE_BUSES = ("pci", "usb", "scsi", "ide", "xen")
# Where the personality files are, beside the versions (Nova's CONTENT_DIR).
CONTENT_DIR = "content"
EC2_VERSIONS = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
)


@dataclass(frozen=True)
class InstanceMetadata:
    """Everything the metadata documents are made of (one guest)."""

    uuid: str
    name: str
    hostname: str
    project_id: str
    availability_zone: str = "nova"
    # Key pair name -> public key (OpenSSH format). Nova gives one; more are allowed.
    public_keys: dict[str, str] = field(default_factory=dict)
    user_data: bytes | None = None
    launch_index: int = 0
    # The compute manager's network_info: one entry a port (port_id, mac, network_id,
    # mtu, fixed_ips[{ip_address, version, and when known cidr, gateway,
    # dns_nameservers, host_routes, enable_dhcp}]).
    network_info: tuple[dict[str, Any], ...] = ()
    public_ipv4: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # the server's metadata items
    admin_pass: str | None = None
    flavor_name: str = ""
    image_id: str = ""
    reservation_id: str = ""
    security_groups: tuple[str, ...] = ("default",)
    # Nova's integer instance id, which EC2 ids are made of (i-0000002a).
    internal_id: int = 0
    # Vendor data (see cumulo.metadata.vendordata): vendor_data.json (None: no StaticJSON
    # provider, no file) and vendor_data2.json's documents by source name.
    static_vendor_data: dict[str, Any] | None = field(default_factory=dict)
    vendor_data: dict[str, Any] = field(default_factory=dict)
    boot_roles: str = ""  # the booting user's roles, comma-separated (Nova's sysmeta)
    random_seed: str | None = None  # base64; the caller draws it (these functions are pure)
    # The instance's device metadata: its tagged devices and where the guest finds them
    # (see cumulo.compute.device_metadata).
    devices: tuple[dict[str, Any], ...] = ()
    # Personality files: (path in the guest, contents), served as openstack/content/NNNN.
    files: tuple[tuple[str, bytes], ...] = ()


# -- OpenStack format ------------------------------------------------------------------------


def meta_data(inst: InstanceMetadata, version: str = "latest") -> dict[str, Any]:
    """`openstack/<version>/meta_data.json`."""
    doc: dict[str, Any] = {
        "uuid": inst.uuid,
        "meta": dict(inst.metadata),
        "hostname": inst.hostname,
        "name": inst.name,
        "launch_index": inst.launch_index,
        "availability_zone": inst.availability_zone,
    }
    if inst.files:
        doc["files"] = [
            {"path": path, "content_path": f"/{CONTENT_DIR}/{name}"}
            for name, (path, _) in zip(content_names(inst), inst.files, strict=True)
        ]
    if inst.public_keys:
        doc["public_keys"] = dict(inst.public_keys)
        doc["keys"] = [
            {"name": name, "type": _key_type(key), "data": key}
            for name, key in inst.public_keys.items()
        ]
    if inst.admin_pass is not None:
        doc["admin_pass"] = inst.admin_pass
    if _at_least(version, "2013-04-04") and inst.random_seed is not None:
        doc["random_seed"] = inst.random_seed
    if _at_least(version, "2013-10-17"):
        doc["project_id"] = inst.project_id
    if _at_least(version, _DEVICES_SINCE):
        doc["devices"] = devices(inst, version)
    if _at_least(version, "2020-10-14"):
        doc["dedicated_cpus"] = []
    return doc


def devices(inst: InstanceMetadata, version: str = "latest") -> list[dict[str, Any]]:
    """meta_data.json's `devices`: the device metadata as Nova's metadata API shows it
    (nova/api/metadata/base.py _get_device_metadata), each key from its version on."""
    shown = []
    for device in inst.devices:
        bus = device.get("bus") or "none"
        if bus not in (*_DEVICE_BUSES, "none"):
            continue  # Nova leaves out a device on a bus it does not know
        entry: dict[str, Any] = {}
        if device.get("type") == "nic":
            if _at_least(version, _DEVICE_VLAN_SINCE) and device.get("vlan") is not None:
                entry["vlan"] = device["vlan"]
            if _at_least(version, _DEVICE_VF_TRUSTED_SINCE):
                entry["vf_trusted"] = bool(device.get("vf_trusted", False))
            entry["type"] = "nic"
            entry["mac"] = device["mac"]
            if not ("tags" in device or "vlan" in entry or "vf_trusted" in entry):
                continue
        elif device.get("type") == "disk":
            entry["type"] = "disk"
            entry.update({k: device[k] for k in ("serial", "path") if k in device})
        else:
            continue
        entry["bus"] = bus
        entry["address"] = (device.get("address") or "none") if bus != "none" else "none"
        if "tags" in device:
            entry["tags"] = list(device["tags"])
        shown.append(entry)
    return shown


def network_data(inst: InstanceMetadata) -> dict[str, Any]:
    """`openstack/<version>/network_data.json`: links (ports), networks (addresses), DNS."""
    links, networks, dns = [], [], []
    for port in inst.network_info:
        link_id = f"tap{port['port_id'][:11]}"
        links.append(
            {
                "id": link_id,
                "vif_id": port["port_id"],
                "type": "bridge" if port.get("bridge") else "tap",
                "mtu": port.get("mtu") or 1500,
                "ethernet_mac_address": port["mac"],
            }
        )
        for ip in port.get("fixed_ips", []):
            version = ip.get("version") or (6 if ":" in ip["ip_address"] else 4)
            family = f"ipv{version}"
            entry: dict[str, Any] = {
                "id": f"network{len(networks)}",
                "type": f"{family}_dhcp" if ip.get("enable_dhcp") else family,
                "link": link_id,
                "network_id": port["network_id"],
            }
            if not ip.get("enable_dhcp"):
                entry["ip_address"] = ip["ip_address"]
                if ip.get("cidr"):
                    net = ipaddress.ip_network(ip["cidr"], strict=False)
                    entry["netmask"] = str(net.netmask) if version == 4 else str(net.prefixlen)
                entry["routes"] = _routes(ip, version)
            entry["services"] = [
                {"type": "dns", "address": a} for a in ip.get("dns_nameservers", [])
            ]
            dns += [a for a in ip.get("dns_nameservers", []) if a not in dns]
            networks.append(entry)
    return {
        "links": links,
        "networks": networks,
        "services": [{"type": "dns", "address": a} for a in dns],
    }


def _routes(ip: dict[str, Any], version: int) -> list[dict[str, str]]:
    routes = []
    if ip.get("gateway"):
        any_net = "0.0.0.0" if version == 4 else "::"
        routes.append(
            {
                "network": any_net,
                "netmask": "0.0.0.0" if version == 4 else "::",
                "gateway": ip["gateway"],
            }
        )
    for route in ip.get("host_routes", []):
        net = ipaddress.ip_network(route["destination"], strict=False)
        routes.append(
            {
                "network": str(net.network_address),
                "netmask": str(net.netmask),
                "gateway": route["nexthop"],
            }
        )
    return routes


def vendor_data2(inst: InstanceMetadata) -> dict[str, Any]:
    """`openstack/<version>/vendor_data2.json`: one document per source (`static`, then
    each dynamic target by its name)."""
    return dict(inst.vendor_data)


def openstack_files(inst: InstanceMetadata, version: str) -> dict[str, bytes]:
    """The files under openstack/<version>/ (also what the HTTP service lists there)."""
    files = {"meta_data.json": _json(meta_data(inst, version))}
    if _at_least(version, _VENDOR_DATA_SINCE) and inst.static_vendor_data is not None:
        files["vendor_data.json"] = _json(inst.static_vendor_data)
    if inst.user_data is not None:
        files["user_data"] = inst.user_data
    if _at_least(version, _NETWORK_DATA_SINCE):
        files["network_data.json"] = _json(network_data(inst))
    if _at_least(version, _VENDOR_DATA2_SINCE):
        files["vendor_data2.json"] = _json(vendor_data2(inst))
    return files


def content_names(inst: InstanceMetadata) -> list[str]:
    """The names of the personality files under openstack/content/ (0000, 0001, ...)."""
    return [f"{i:04d}" for i in range(len(inst.files))]


def content_files(inst: InstanceMetadata) -> dict[str, bytes]:
    """openstack/content/<name> -> contents: the personality files (not versioned)."""
    return {
        name: contents for name, (_, contents) in zip(content_names(inst), inst.files, strict=True)
    }


# -- EC2 format ---------------------------------------------------------------------------


def ec2_instance_id(inst: InstanceMetadata) -> str:
    return f"i-{inst.internal_id:08x}"


def fixed_ipv4(inst: InstanceMetadata) -> str | None:
    for port in inst.network_info:
        for ip in port.get("fixed_ips", []):
            if ":" not in ip["ip_address"]:
                return ip["ip_address"]
    return None


def ec2_meta_data(inst: InstanceMetadata) -> dict[str, Any]:
    """The `/<version>/meta-data/` tree: dicts are directories, strings are values."""
    local_ip = fixed_ipv4(inst) or ""
    tree: dict[str, Any] = {
        "ami-id": f"ami-{_short_id(inst.image_id)}" if inst.image_id else "",
        "ami-launch-index": str(inst.launch_index),
        "ami-manifest-path": "FIXME",
        "block-device-mapping": {"ami": "vda", "root": "/dev/vda"},
        "hostname": inst.hostname,
        "instance-action": "none",
        "instance-id": ec2_instance_id(inst),
        "instance-type": inst.flavor_name,
        "local-hostname": inst.hostname,
        "local-ipv4": local_ip,
        "placement": {"availability-zone": inst.availability_zone},
        "public-hostname": inst.hostname,
        "public-ipv4": inst.public_ipv4 or "",
        "reservation-id": inst.reservation_id,
        "security-groups": "\n".join(inst.security_groups),
    }
    if inst.public_keys:
        # Listed as "0=name"; read as public-keys/0/openssh-key.
        tree["public-keys"] = {
            f"{i}={name}": {"openssh-key": key}
            for i, (name, key) in enumerate(inst.public_keys.items())
        }
    return tree


def ec2_lookup(tree: dict[str, Any], path: str) -> str | None:
    """What GET /<version>/meta-data/<path> answers: a listing, a value, or None (404)."""
    node: Any = tree
    for part in [p for p in path.split("/") if p]:
        if not isinstance(node, dict):
            return None
        if part in node:
            node = node[part]
            continue
        # public-keys/0 names the entry listed as "0=name".
        node = next((v for k, v in node.items() if k.split("=", 1)[0] == part and "=" in k), None)
        if node is None:
            return None
    if isinstance(node, dict):
        return "\n".join(
            k if not isinstance(v, dict) or "=" in k else f"{k}/" for k, v in node.items()
        )
    return str(node)


def ec2_files(inst: InstanceMetadata) -> dict[str, bytes]:
    """The files under ec2/<version>/ on the config drive."""
    files = {"meta-data.json": _json(ec2_meta_data(inst))}
    if inst.user_data is not None:
        files["user-data"] = inst.user_data
    return files


# -- the config drive ------------------------------------------------------------------------


def config_drive_files(inst: InstanceMetadata) -> dict[str, bytes]:
    """Every file of the config drive (path -> content), laid out as Nova's."""
    files: dict[str, bytes] = {}
    for version in (*OPENSTACK_VERSIONS, "latest"):
        for name, data in openstack_files(inst, version).items():
            files[f"openstack/{version}/{name}"] = data
    for name, data in content_files(inst).items():
        files[f"openstack/{CONTENT_DIR}/{name}"] = data
    for version in ("2009-04-04", "latest"):
        for name, data in ec2_files(inst).items():
            files[f"ec2/{version}/{name}"] = data
    return files


def _at_least(version: str, since: str) -> bool:
    return version == "latest" or version >= since


def _key_type(key: str) -> str:
    return "x509" if key.startswith("-----BEGIN CERTIFICATE") else "ssh"


def _short_id(image_id: str) -> str:
    # Nova maps image UUIDs to EC2 integers in a table; a stable hash serves the same purpose.
    return f"{zlib.crc32(image_id.encode()):08x}"


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()
