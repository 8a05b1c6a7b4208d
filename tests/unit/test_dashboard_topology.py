"""The dashboard's topology picture without a cloud: the graph from the API's lists (one
project's only), its layout (a pure function: bars, boxes, lines) and the SVG."""

from __future__ import annotations

import random
import re

from cumulo.dashboard.topology import (
    BAR_WIDTH,
    Device,
    Graph,
    Network,
    build_graph,
    graph_json,
    layout,
)
from cumulo.dashboard.web import fragment

PROJECT = "p-demo"


def _lists() -> dict:
    """Neutron's and Nova's lists as an administrator of PROJECT gets them (every
    project's networks, routers and ports)."""
    return {
        "networks": [
            {"id": "ext", "name": "public", "router:external": True, "project_id": "p-admin"},
            {"id": "web", "name": "web-net", "project_id": PROJECT},
            {"id": "db", "name": "db-net", "project_id": PROJECT},
            {"id": "shared", "name": "shared-net", "shared": True, "project_id": "p-admin"},
            {"id": "beta", "name": "beta-secret-net", "project_id": "p-beta"},
        ],
        "subnets": [
            {"network_id": "web", "cidr": "10.1.0.0/24", "ip_version": 4},
            {"network_id": "db", "cidr": "fd00:2::/64", "ip_version": 6},
            {"network_id": "db", "cidr": "10.2.0.0/24", "ip_version": 4},
            {"network_id": "beta", "cidr": "10.9.0.0/24", "ip_version": 4},
        ],
        "routers": [
            {
                "id": "r1",
                "name": "edge",
                "project_id": PROJECT,
                "status": "ACTIVE",
                "external_gateway_info": {
                    "network_id": "ext",
                    "external_fixed_ips": [{"ip_address": "172.24.4.5"}],
                },
            },
            {"id": "rb", "name": "beta-secret-router", "project_id": "p-beta"},
        ],
        "ports": [
            _port("pr1", "r1", "network:router_interface", "web", "10.1.0.1"),
            _port("pr2", "r1", "network:router_interface", "db", "10.2.0.1"),
            _port("ps1", "s1", "compute:nova", "web", "10.1.0.5"),
            _port("ps2", "s2", "compute:nova", "db", "10.2.0.7"),
            _port("pdhcp", "dhcp-web", "network:dhcp", "web", "10.1.0.2"),
            _port("pgw", "r1", "network:router_gateway", "ext", "172.24.4.5"),
            _port("pb", "sb", "compute:nova", "beta", "10.9.0.4"),
            _port("pbr", "rb", "network:router_interface", "beta", "10.9.0.1"),
        ],
        "servers": [
            {"id": "s1", "name": "web1", "status": "ACTIVE"},
            {"id": "s2", "name": "db1", "status": "BUILD"},
        ],
    }


def _port(port_id: str, device: str, owner: str, network: str, ip: str) -> dict:
    return {
        "id": port_id,
        "device_id": device,
        "device_owner": owner,
        "network_id": network,
        "fixed_ips": [{"ip_address": ip, "subnet_id": "x"}],
    }


def _graph() -> Graph:
    lists = _lists()
    return build_graph(
        PROJECT,
        lists["networks"],
        lists["subnets"],
        lists["routers"],
        lists["ports"],
        lists["servers"],
    )


def test_the_graph_holds_the_project_s_own_shared_and_external_networks_only():
    graph = _graph()
    assert {n.name for n in graph.networks} == {"public", "web-net", "db-net", "shared-net"}
    assert {d.name for d in graph.devices} == {"edge", "web1", "db1"}
    # The gateway from the router's external_gateway_info; no DHCP port, no other
    # project's ports, no router_gateway port twice.
    assert sorted((p.device_id, p.network_id, p.ips, p.gateway) for p in graph.ports) == [
        ("r1", "db", ("10.2.0.1",), False),
        ("r1", "ext", ("172.24.4.5",), True),
        ("r1", "web", ("10.1.0.1",), False),
        ("s1", "web", ("10.1.0.5",), False),
        ("s2", "db", ("10.2.0.7",), False),
    ]
    db = next(n for n in graph.networks if n.id == "db")
    assert db.cidrs == ("10.2.0.0/24", "fd00:2::/64")  # IPv4 first
    assert db.label == "db-net · 10.2.0.0/24 · fd00:2::/64"


def test_the_layout_puts_external_networks_first_and_each_box_right_of_its_first_network():
    picture = layout(_graph())
    assert [b.network.name for b in picture.bars] == ["public", "db-net", "shared-net", "web-net"]
    bar = {b.network.id: b for b in picture.bars}
    assert [b.x for b in picture.bars] == sorted(b.x for b in picture.bars)
    box = {b.device.id: b for b in picture.boxes}
    # The router between the external network and the next bar; its lines: the gateway
    # to the left, its interfaces to the right (the one to web-net behind two bars).
    edge = box["r1"]
    assert bar["ext"].x + BAR_WIDTH < edge.x and edge.x + edge.width < bar["db"].x
    lines = {line.network.id: line for line in edge.lines}
    assert lines["ext"].x_bar == bar["ext"].x + BAR_WIDTH and lines["ext"].x_box == edge.x
    assert lines["ext"].label == "172.24.4.5" and lines["ext"].anchor == "end"
    assert lines["web"].x_box == edge.x + edge.width and lines["web"].x_bar == bar["web"].x
    assert len({line.y for line in edge.lines}) == 3
    assert all(edge.y < line.y < edge.y + edge.height for line in edge.lines)
    # Each server right of its network's bar.
    assert box["s1"].x > bar["web"].x + BAR_WIDTH
    assert bar["db"].x + BAR_WIDTH < box["s2"].x < bar["shared"].x
    assert box["s1"].lines[0].label == "10.1.0.5"


def test_devices_share_a_row_only_when_their_lines_do_not_overlap():
    picture = layout(_graph())
    box = {b.device.id: b for b in picture.boxes}
    # The router's lines reach web-net: both servers are below it. db1 (right of
    # db-net) and web1 (right of web-net) do not meet: one row.
    assert box["s1"].y > box["r1"].y + box["r1"].height
    assert box["s2"].y > box["r1"].y + box["r1"].height
    assert box["s1"].y == box["s2"].y
    for one in picture.boxes:
        for other in picture.boxes:
            if one is not other:
                apart_x = one.x + one.width < other.x or other.x + other.width < one.x
                apart_y = one.y + one.height < other.y or other.y + other.height < one.y
                assert apart_x or apart_y, (one.device.name, other.device.name)
    # Everything inside the picture; the bars reach below the last box.
    for b in picture.boxes:
        assert 0 < b.x and b.x + b.width < picture.width
        assert 0 < b.y and b.y + b.height < picture.height
    assert all(
        bar.y + bar.height > max(b.y + b.height for b in picture.boxes) for bar in picture.bars
    )
    assert max(bar.x + bar.width for bar in picture.bars) < picture.width


def test_the_layout_depends_on_the_graph_only_not_on_the_order_of_the_lists():
    graph = _graph()
    first = layout(graph)
    for seed in range(5):
        shuffled = Graph(list(graph.networks), list(graph.devices), list(graph.ports))
        rng = random.Random(seed)
        rng.shuffle(shuffled.networks)
        rng.shuffle(shuffled.devices)
        rng.shuffle(shuffled.ports)
        assert layout(shuffled) == first


def test_a_device_without_ports_goes_left_of_the_networks_and_a_long_name_is_cut():
    name = "a-server-with-a-name-much-too-long-for-its-box"
    graph = Graph(
        networks=[Network("n", "net", external=False)],
        devices=[Device("s", name, "server", "ACTIVE")],
    )
    picture = layout(graph)
    (box,) = picture.boxes
    assert box.x + box.width < picture.bars[0].x and box.lines == ()
    assert box.name.endswith("…") and len(box.name) < len(name)
    assert name in fragment("topology_parts.html:picture", p=picture)  # whole in the tooltip


def test_an_empty_project_draws_nothing_and_says_so():
    picture = layout(Graph())
    assert picture.empty and picture.width == picture.height == 0
    html = fragment("topology_parts.html:picture", p=picture)
    assert "<svg" not in html and "no networks, routers or servers" in html


def test_the_svg_links_every_item_to_its_page_with_a_title():
    graph = _graph()
    graph.networks.append(Network("evil", '<script>alert("x")</script>', external=False))
    html = str(fragment("topology_parts.html:picture", p=layout(graph)))
    assert 'id="topology"' in html and 'sse-swap="topology"' in html
    assert 'href="/instances/s1"' in html and 'href="/networks#router-r1"' in html
    assert 'href="/networks#network-web"' in html and 'href="/networks#network-ext"' in html
    links = re.findall(r"<a [^>]*>\s*<title>([^<]*)</title>", html)
    assert "Server web1 (ACTIVE)" in links and "Router edge (ACTIVE)" in links
    assert "External network public" in links
    gateway = re.search(r'<g class="topo-port"[^>]*data-gateway="true"[^>]*>', html)[0]
    assert 'data-device="r1"' in gateway and 'data-network="ext"' in gateway
    assert "<script>" not in html and "&lt;script&gt;" in html  # names are escaped


def test_the_json_keeps_the_nodes_and_edges_shape():
    body = graph_json(_graph())
    kinds = {n["data"]["label"]: n["data"]["kind"] for n in body["nodes"]}
    assert kinds == {
        "public": "external",
        "web-net": "network",
        "db-net": "network",
        "shared-net": "network",
        "edge": "router",
        "web1": "server",
        "db1": "server",
    }
    edges = {(e["data"]["source"], e["data"]["target"]) for e in body["edges"]}
    assert ("r1", "ext") in edges and ("s2", "db") in edges and len(edges) == 5
    assert all("ips" in e["data"] for e in body["edges"])


def test_a_floating_ip_is_written_on_the_line_of_its_port():
    lists = _lists()
    floating = [
        {"floating_ip_address": "172.24.4.10", "port_id": "ps1"},
        {"floating_ip_address": "172.24.4.11", "port_id": None},  # not associated
        {"floating_ip_address": "172.24.4.12", "port_id": "elsewhere"},
    ]
    args = (PROJECT, lists["networks"], lists["subnets"], lists["routers"], lists["ports"])
    graph = build_graph(*args, lists["servers"], floating)
    web1 = next(p for p in graph.ports if p.device_id == "s1")
    assert web1.floating_ips == ("172.24.4.10",)
    assert all(not p.floating_ips for p in graph.ports if p is not web1)
    [line] = {b.device.id: b for b in layout(graph).boxes}["s1"].lines
    assert line.label == "10.1.0.5, ↔ 172.24.4.10"
    svg = fragment("topology_parts.html:picture", p=layout(graph))
    assert 'data-floating-ips="172.24.4.10"' in svg and "↔ 172.24.4.10" in svg
    edge = next(e for e in graph_json(graph)["edges"] if e["data"]["id"] == "ps1")
    assert edge["data"]["floating_ips"] == ["172.24.4.10"]
