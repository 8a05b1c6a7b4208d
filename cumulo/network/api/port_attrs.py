"""The list-valued attributes of a port, checked as Neutron checks them:
`allowed_address_pairs` and `extra_dhcp_opts` (api-ref: Ports)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from cumulo.network import ipam
from cumulo.network.api.common import to_int, to_list, to_str
from cumulo.network.errors import InvalidInput

# A dnsmasq option name or number (it is written into dnsmasq's options file).
OPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def address_pairs(value: Any) -> list[dict[str, str]]:
    pairs = []
    for pair in to_list("allowed_address_pairs", value):
        if not isinstance(pair, dict) or "ip_address" not in pair:
            raise InvalidInput("Invalid input for allowed_address_pairs: ip_address is required.")
        if not set(pair) <= {"ip_address", "mac_address"}:
            raise InvalidInput("Unrecognized attribute(s) in allowed_address_pairs.")
        raw = str(pair["ip_address"])
        try:
            ip = (
                str(ipaddress.ip_network(raw, strict=False))
                if "/" in raw
                else str(ipaddress.ip_address(raw))
            )
        except ValueError:
            raise InvalidInput(f"'{raw}' is not a valid IP address or CIDR.") from None
        entry = {"ip_address": ip}
        if pair.get("mac_address") is not None:
            if not ipam.valid_mac(pair["mac_address"]):
                raise InvalidInput(f"'{pair['mac_address']}' is not a valid MAC address.")
            entry["mac_address"] = pair["mac_address"].lower()
        pairs.append(entry)
    return pairs


def dhcp_opts(current: list[dict[str, Any]], value: Any) -> list[dict[str, Any]]:
    """Neutron's extra_dhcp_opt: options given are set by (opt_name, ip_version), the
    rest kept; an `opt_value` of null removes that option."""
    opts = {(o["opt_name"], o["ip_version"]): o for o in current}
    for opt in to_list("extra_dhcp_opts", value):
        if not isinstance(opt, dict) or not set(opt) <= {"opt_name", "opt_value", "ip_version"}:
            raise InvalidInput(
                "Invalid input for extra_dhcp_opts. Reason: each option has opt_name, "
                "opt_value and optionally ip_version."
            )
        name = to_str("opt_name", opt.get("opt_name"), 64)
        if not OPT_NAME.fullmatch(name) or "opt_value" not in opt:
            raise InvalidInput(
                f"Invalid input for extra_dhcp_opts. Reason: '{opt}' needs opt_name and opt_value."
            )
        version = to_int("ip_version", opt.get("ip_version", 4))
        if version not in (4, 6):
            raise InvalidInput(
                f"Invalid input for ip_version. Reason: '{version}' is not in [4, 6]."
            )
        if opt["opt_value"] is None:
            opts.pop((name, version), None)
            continue
        text = to_str("opt_value", opt["opt_value"])
        if any(c in text for c in "\n\r\0"):
            raise InvalidInput(f"Invalid input for opt_value. Reason: '{text}' spans lines.")
        opts[(name, version)] = {"opt_name": name, "opt_value": text, "ip_version": version}
    return list(opts.values())
