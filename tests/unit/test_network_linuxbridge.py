"""What the linuxbridge driver writes: nftables rules from security groups, router NAT,
dnsmasq's static leases and options, and the names it gives things."""

from __future__ import annotations

import json
from pathlib import Path

from cumulo.network.dataplane.dhcp import (
    dnsmasq_argv,
    hosts_file,
    metadata_nexthops,
    opts_file,
    stale_leases,
)
from cumulo.network.dataplane.firewall import host_ruleset, router_ruleset, rule_match
from cumulo.network.dataplane.linuxbridge import LinuxBridgeDriver, bridge_name, tap_name

NET = "5b1c0f7e-2a3d-4c5e-8f90-1234567890ab"
PORT = "9f8e7d6c-5b4a-4392-8170-fedcba987654"


def rule(**kw):
    base = {
        "direction": "ingress",
        "ethertype": "IPv4",
        "protocol": None,
        "port_range_min": None,
        "port_range_max": None,
        "remote_group_id": None,
        "remote_prefixes": None,
    }
    return {**base, **kw}


def test_rules_match_protocol_ports_and_remote_prefix_in_the_right_direction():
    ssh = rule(
        protocol="tcp", port_range_min=22, port_range_max=22, remote_prefixes=["10.1.2.0/24"]
    )
    assert rule_match(ssh, ingress=True) == (
        "meta nfproto ipv4 ip saddr { 10.1.2.0/24 } meta l4proto 6 th dport 22-22"
    )
    web_out = rule(direction="egress", protocol="6", port_range_min=80, port_range_max=443,
                   remote_prefixes=["192.0.2.7/32"])  # fmt: skip
    assert rule_match(web_out, ingress=False) == (
        "meta nfproto ipv4 ip daddr { 192.0.2.7 } meta l4proto 6 th dport 80-443"
    )
    assert rule_match(rule(remote_prefixes=["0.0.0.0/0"]), True) == "meta nfproto ipv4"


def test_icmp_rules_use_type_and_code_and_mean_icmpv6_on_ipv6():
    echo = rule(protocol="icmp", port_range_min=8, port_range_max=0)
    assert rule_match(echo, True) == "meta nfproto ipv4 meta l4proto 1 icmp type 8 icmp code 0"
    v6 = rule(ethertype="IPv6", protocol="icmp", port_range_min=128)
    assert rule_match(v6, True) == "meta nfproto ipv6 meta l4proto 58 icmpv6 type 128"


def test_remote_groups_are_sets_and_unknown_protocols_match_nothing():
    group = rule(remote_group_id="aaaa-bbbb", remote_prefixes=["10.0.0.5"])
    assert rule_match(group, True) == "meta nfproto ipv4 ip saddr @rg_aaaabbbb_4"
    assert rule_match(rule(protocol="no-such-proto"), True) is None
    assert rule_match(rule(remote_prefixes=["2001:db8::/64"]), True) is None  # IPv4 rule


def port(**kw):
    base = {
        "id": PORT,
        "network_id": NET,
        "mac": "fa:16:3e:00:00:01",
        "addresses": [{"ip": "10.0.0.5", "prefixlen": 24, "subnet_id": "s"}],
        "allowed_address_pairs": [],
        "port_security_enabled": True,
        "rules": [],
    }
    return {**base, **kw}


def test_ports_are_guarded_against_spoofing_with_their_address_pairs():
    pairs = [{"ip_address": "10.0.0.0/28", "mac_address": "fa:16:3e:00:00:99"}]
    text = host_ruleset([{"id": NET}], [port(allowed_address_pairs=pairs)], bridge_name, tap_name)
    assert f'iifname "{tap_name(PORT)}" meta mark set 1 jump spoof_1' in text
    assert "ether saddr != { fa:16:3e:00:00:01, fa:16:3e:00:00:99 } drop" in text
    # the pair's prefix holds the port's own address: merged, or nft refuses the set
    assert "ip saddr != { 10.0.0.0/28 } drop" in text
    assert "arp saddr ip != { 0.0.0.0, 10.0.0.0/28 } drop" in text
    assert f'iifname "{bridge_name(NET)}" ct zone set 1' in text
    assert "jump egress_1" in text and "jump ingress_1" in text


def test_ingress_is_dropped_but_for_established_and_the_groups_rules():
    members = rule(remote_group_id="g1", remote_prefixes=[])
    text = host_ruleset([], [port(rules=[members])], bridge_name, tap_name)
    ingress = text[text.index("chain ingress_1") :]
    assert ingress.index("ct state established,related accept") < ingress.index("@rg_g1_4")
    assert ingress.split("\n  }")[0].endswith("    drop")  # everything else
    assert "set rg_g1_4 {" in text and "elements" not in text.split("set rg_g1_4 {")[1][:60]


def test_ports_without_port_security_are_not_filtered():
    text = host_ruleset([], [port(port_security_enabled=False)], bridge_name, tap_name)
    assert "spoof_" not in text and "egress_" not in text


def test_router_nat_for_floating_ips_gateway_snat_and_the_metadata_hook():
    router = {
        "enable_snat": True,
        "gateway": {"addresses": [{"ip": "172.24.4.10", "prefixlen": 24}]},
        "floating_ips": [{"floating_ip": "172.24.4.20", "fixed_ip": "10.0.0.5"}],
    }
    text = router_ruleset(router, "qg-x", 9697)
    assert "ip daddr 172.24.4.20 dnat to 10.0.0.5" in text
    assert 'ip saddr 10.0.0.5 oifname "qg-x" snat to 172.24.4.20' in text
    assert text.index("snat to 172.24.4.20") < text.index('oifname "qg-x" snat to 172.24.4.10')
    assert 'iifname "qr-*" ip daddr 169.254.169.254 tcp dport 80 redirect to :9697' in text
    quiet = router_ruleset({**router, "enable_snat": False}, "qg-x", None)
    assert "snat to 172.24.4.10" not in quiet and "169.254.169.254" not in quiet


NETWORK = {
    "id": NET,
    "mtu": 1450,
    "subnets": [
        {"id": "s4", "cidr": "10.0.0.0/24", "ip_version": 4, "gateway_ip": "10.0.0.1",
         "enable_dhcp": True, "dns_nameservers": ["192.0.2.53"],
         "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.254"}]},
        {"id": "s6", "cidr": "2001:db8::/64", "ip_version": 6, "gateway_ip": "2001:db8::1",
         "enable_dhcp": True, "dns_nameservers": [], "host_routes": []},
    ],
    "dhcp": {"port_id": "d", "mac": "fa:16:3e:00:00:02",
             "addresses": [{"ip": "10.0.0.2", "prefixlen": 24, "subnet_id": "s4"}]},
    "leases": [
        {"port_id": "p", "mac": "fa:16:3e:00:00:01", "ip": "10.0.0.5"},
        {"port_id": "p", "mac": "fa:16:3e:00:00:01", "ip": "2001:db8::5"},
    ],
}  # fmt: skip


def test_dnsmasq_serves_static_leases_with_the_subnet_options():
    assert hosts_file(NETWORK) == "fa:16:3e:00:00:01,host-10-0-0-5,10.0.0.5\n"
    opts = opts_file(NETWORK).splitlines()
    assert "tag:subnet0,option:router,10.0.0.1" in opts
    assert "tag:subnet0,option:dns-server,192.0.2.53" in opts
    # classless routes replace option 3 for the client: the default route is in them
    assert (
        "tag:subnet0,option:classless-static-route,10.9.0.0/16,10.0.0.254,0.0.0.0/0,10.0.0.1"
        in opts
    )
    assert "tag:subnet0,option:mtu,1450" in opts
    argv = dnsmasq_argv(NETWORK, "ns-d", Path("/state/dhcp/n"), "cmlo-x-dhcp-n")
    assert argv[:4] == ("ip", "netns", "exec", "cmlo-x-dhcp-n")
    assert "--dhcp-range=set:subnet0,10.0.0.0,static,255.255.255.0,86400s" in argv
    assert not any("2001:db8" in a for a in argv)


def _two_subnets(routed: bool) -> dict:
    """One network, a subnet with a gateway (routed or not) and one without."""
    return {
        "id": NET,
        "mtu": 1500,
        "subnets": [
            {"id": "a", "cidr": "10.1.0.0/24", "ip_version": 4, "gateway_ip": "10.1.0.1",
             "enable_dhcp": True, "dns_nameservers": [], "host_routes": [], "routed": routed},
            {"id": "b", "cidr": "10.2.0.0/24", "ip_version": 4, "gateway_ip": None,
             "enable_dhcp": True, "dns_nameservers": [], "host_routes": [], "routed": False},
        ],
        "dhcp": {"port_id": "d", "mac": "fa:16:3e:00:00:02", "addresses": [
            {"ip": "10.1.0.2", "prefixlen": 24, "subnet_id": "a"},
            {"ip": "10.2.0.2", "prefixlen": 24, "subnet_id": "b"}]},
        "leases": [],
    }  # fmt: skip


def test_a_ports_extra_dhcp_options_go_to_that_port_only():
    opts = [{"opt_name": "bootfile-name", "opt_value": "pxelinux.0", "ip_version": 4},
            {"opt_name": "150", "opt_value": "192.0.2.9", "ip_version": 4}]  # fmt: skip
    net = {**NETWORK, "leases": [{**lease, "dhcp_opts": opts} for lease in NETWORK["leases"]]}
    assert hosts_file(net) == "fa:16:3e:00:00:01,set:port-p,host-10-0-0-5,10.0.0.5\n"
    lines = opts_file(net).splitlines()
    assert "tag:port-p,option:bootfile-name,pxelinux.0" in lines
    assert "tag:port-p,150,192.0.2.9" in lines
    assert len([line for line in lines if line.startswith("tag:port-p,")]) == 2
    # A port dnsmasq does not serve (no address on a DHCP subnet) gets no options.
    away = {**net, "leases": [{**net["leases"][1], "port_id": "q", "mac": "fa:16:3e:00:00:09"}]}
    assert "tag:port-q" not in opts_file(away)


def test_isolated_subnets_route_metadata_to_the_dhcp_port_routed_ones_to_the_gateway():
    isolated, routed = _two_subnets(routed=False), _two_subnets(routed=True)
    # enable_isolated_metadata: the DHCP port where no router serves the subnet...
    assert metadata_nexthops(isolated, True, False) == {"a": "10.1.0.2", "b": "10.2.0.2"}
    # ...the gateway (its router answers 169.254.169.254) where one does.
    assert metadata_nexthops(routed, True, False) == {"a": "10.1.0.1", "b": "10.2.0.2"}
    # force_metadata: always the DHCP port; neither option: no metadata route at all.
    assert metadata_nexthops(routed, False, True) == {"a": "10.1.0.2", "b": "10.2.0.2"}
    assert metadata_nexthops(routed, True, True) == {"a": "10.1.0.2", "b": "10.2.0.2"}
    assert metadata_nexthops(isolated, False, False) == {}


def test_the_metadata_route_comes_with_the_default_route_as_option_121():
    net = _two_subnets(routed=False)
    opts = opts_file(net, metadata_nexthops(net, True, False)).splitlines()
    # Option 121 replaces option 3 for the client: the default route goes in the list.
    assert (
        "tag:subnet0,option:classless-static-route,169.254.169.254/32,10.1.0.2,0.0.0.0/0,10.1.0.1"
        in opts
    )
    assert "tag:subnet0,option:router,10.1.0.1" in opts
    # Without a gateway: the metadata route alone, and no router.
    assert "tag:subnet1,option:classless-static-route,169.254.169.254/32,10.2.0.2" in opts
    assert "tag:subnet1,option:router" in opts
    # Host routes first, then metadata, then the default route.
    net["subnets"][0]["host_routes"] = [{"destination": "10.9.0.0/16", "nexthop": "10.1.0.254"}]
    routed = opts_file(net, {"a": "10.1.0.1"}).splitlines()
    assert (
        "tag:subnet0,option:classless-static-route,"
        "10.9.0.0/16,10.1.0.254,169.254.169.254/32,10.1.0.1,0.0.0.0/0,10.1.0.1"
    ) in routed
    # No metadata and no host routes: option 3 alone, no option 121.
    plain = opts_file(_two_subnets(routed=True))
    assert "classless-static-route" not in plain and "169.254.169.254" not in plain


def test_leases_no_port_holds_any_more_are_stale():
    leases = (
        "1764100000 fa:16:3e:00:00:01 10.0.0.5 host-10-0-0-5 *\n"
        "1764100000 fa:16:3e:00:00:02 10.0.0.6 host-10-0-0-6 01:fa:16:3e:00:00:02\n"
        "1764100000 fa:16:3e:00:00:03 10.0.0.7 * *\n"
    )
    served = {
        ("FA:16:3E:00:00:01", "10.0.0.5"),  # still this port's: the MAC's case is not a change
        ("fa:16:3e:00:00:09", "10.0.0.6"),  # the address went to a new port (new MAC)
    }
    assert stale_leases(leases, served) == [
        ("fa:16:3e:00:00:02", "10.0.0.6"),
        ("fa:16:3e:00:00:03", "10.0.0.7"),
    ]
    assert stale_leases("", served) == []


def test_everything_is_named_with_the_prefix_and_fits_interface_names(tmp_path: Path):
    driver = LinuxBridgeDriver(tmp_path)
    assert driver.host_ns.startswith("cmlo-") and driver.host_ns.endswith("-host")
    assert driver.dhcp_ns(NET).startswith(driver.prefix)
    assert driver.router_ns(NET).startswith(driver.prefix)
    assert LinuxBridgeDriver(tmp_path).prefix == driver.prefix  # stable across restarts
    assert len(bridge_name(NET)) <= 15 and bridge_name(NET).startswith("cmlo-")
    assert driver.vif_details(NET) == {
        "port_filter": True,
        "bridge_name": bridge_name(NET),
        "netns": driver.host_ns,
    }


def test_a_floating_ip_on_an_applied_router_is_an_address_and_its_nat_only(
    tmp_path: Path, monkeypatch
):
    """Neutron's L3 agent updates a router in place: a floating IP added or removed is
    the gateway leg's /32 and the NAT ruleset, not the namespace and its legs again."""
    import asyncio

    from cumulo.network.dataplane import commands

    ran: list[tuple[str, ...]] = []
    held: dict[str, set[str]] = {}  # the router namespace's addresses, by device

    async def run(*argv: str, stdin: str | None = None, check: bool = True, env=None) -> str:
        ran.append(argv)
        if argv[3:5] == ("addr", "add"):
            held.setdefault(argv[7], set()).add(argv[5])
        if argv[3:5] == ("addr", "del"):
            held[argv[7]].discard(argv[5])
        if "-json" in argv and argv[-2:] == ("addr", "show"):
            return json.dumps([
                {"ifname": dev, "addr_info": [
                    {"local": a.split("/")[0], "prefixlen": int(a.split("/")[1])} for a in addrs
                ]} for dev, addrs in held.items()
            ])  # fmt: skip
        return "[]" if "-json" in argv else ""

    monkeypatch.setattr(commands, "run", run)
    driver = LinuxBridgeDriver(tmp_path, scope="t")
    router = {
        "id": "r1", "ha": None, "enable_snat": True, "routes": [],
        "interfaces": [{"port_id": "r0000000001", "network_id": NET, "mac": "fa:16:3e:00:00:10",
                        "addresses": [{"ip": "10.0.0.1", "prefixlen": 24}]}],
        "gateway": {"port_id": "g0000000001", "network_id": "ext", "mac": "fa:16:3e:00:00:11",
                    "gateway_ip": "172.24.4.1",
                    "addresses": [{"ip": "172.24.4.10", "prefixlen": 24}]},
        "floating_ips": [],
    }  # fmt: skip
    networks = {NET: {"mtu": 1450}, "ext": {"mtu": 1500}}
    ns = driver.router_ns("r1")

    def apply(router: dict) -> list[tuple[str, ...]]:
        ran.clear()
        asyncio.run(driver._router_steps(router, networks, {ns}))
        return list(ran)

    first = apply(router)
    assert ("ip", "-n", ns, "addr", "add", "172.24.4.10/24", "dev", "qg-g0000000001") in first
    assert len(first) > 15  # the namespace, its legs, addresses, NAT, routes
    assert apply(router) == []  # nothing changed: nothing run

    fip = {"floating_ip": "172.24.4.20", "fixed_ip": "10.0.0.5"}
    added = apply({**router, "floating_ips": [fip]})
    assert added == [
        ("ip", "-n", ns, "-json", "addr", "show"),
        ("ip", "-n", ns, "addr", "add", "172.24.4.20/32", "dev", "qg-g0000000001"),
        ("ip", "netns", "exec", ns, "nft", "-f", "-"),
    ]
    removed = apply(router)
    assert removed[1] == ("ip", "-n", ns, "addr", "del", "172.24.4.20/32", "dev", "qg-g0000000001")
    assert len(removed) == 3

    # A new interface is a change of the legs: they are checked again, and so is the rest.
    second = {"port_id": "r0000000002", "network_id": NET, "mac": "fa:16:3e:00:00:12",
              "addresses": [{"ip": "10.0.1.1", "prefixlen": 24}]}  # fmt: skip
    grown = apply({**router, "interfaces": [*router["interfaces"], second]})
    assert ("ip", "-n", ns, "addr", "add", "10.0.1.1/24", "dev", "qr-r0000000002") in grown
    assert ("ip", "netns", "exec", ns, "nft", "-f", "-") in grown
