"""The network topology the server draws: the project's networks, routers and servers as
a graph (from the API's lists), then laid out as a picture the page renders as SVG.

Like Horizon's view: every network is a vertical bar (external ones first), every
router and server a box in the gap just right of the leftmost network it has a port
on, with one horizontal line per port to its network's bar (a dot where it joins,
behind the bars it passes; the fixed IPs written on the line beside the box). Devices
share a row when their lines do not overlap. Everything is sorted by name then id, so
the same graph always gives the same picture (and the page's stream sends it only when
something changed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROUTER_INTERFACE_OWNERS = ("network:router_interface", "network:router_interface_distributed")

# Sizes in SVG user units (pixels at 100 %).
MARGIN = 16  # around the picture
BAR_WIDTH = 28
BAR_TOP = MARGIN
ROWS_TOP = MARGIN + 24  # the first row, below the bars' tops
ROW_GAP = 18
PAD = 14  # between a gap's contents and the bars beside it
EMPTY_GAP = 40  # a gap with no device in it
BOX_MIN_WIDTH = 104
BOX_MAX_NAME = 26  # characters of a name shown in a box (the rest in its tooltip)
BOX_MIN_HEIGHT = 46
PORT_STEP = 20  # between two port lines of one box
NAME_CHAR = 7.4  # a character of a 12px bold name, rounded up
CAPTION_CHAR = 7.0  # a character of the 10px capitals above a name
IP_CHAR = 6.6  # a character of the 11px monospace IP labels (0.6 em)
LABEL_PAD = 8  # between a box and the IP label on its line
BAR_CHAR = 7.4  # a character of a bar's vertical label
SPAN_CLEARANCE = 10  # between two devices sharing a row


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    external: bool
    shared: bool = False
    cidrs: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return " · ".join([self.name or self.id[:8], *self.cidrs])


@dataclass(frozen=True)
class Device:
    id: str
    name: str
    kind: str  # "router" or "server"
    status: str = ""

    @property
    def label(self) -> str:
        return self.name or self.id[:8]

    @property
    def caption(self) -> str:
        """The small line above the name: what it is and its status."""
        return self.kind.upper() + (f" · {self.status}" if self.status else "")


@dataclass(frozen=True)
class Port:
    id: str
    device_id: str
    network_id: str
    ips: tuple[str, ...] = ()
    gateway: bool = False  # a router's leg on its external network
    floating_ips: tuple[str, ...] = ()  # associated with this (server's) port


@dataclass
class Graph:
    networks: list[Network] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    ports: list[Port] = field(default_factory=list)


def _ips(fixed_ips: list[dict[str, Any]] | None) -> tuple[str, ...]:
    return tuple(sorted(ip["ip_address"] for ip in fixed_ips or [] if ip.get("ip_address")))


def build_graph(
    project_id: str,
    networks: list[dict[str, Any]],
    subnets: list[dict[str, Any]],
    routers: list[dict[str, Any]],
    ports: list[dict[str, Any]],
    servers: list[dict[str, Any]],
    floating_ips: list[dict[str, Any]] | None = None,
) -> Graph:
    """The project's graph from Neutron's and Nova's lists (a floating IP written on the
    line of the port it is associated with). An administrator's lists hold
    every project's networks, routers and ports: only the project's own, the shared and
    the external networks are kept, its own routers, and the ports of what is kept."""
    shown = [
        n
        for n in networks
        if n.get("project_id") == project_id or n.get("shared") or n.get("router:external")
    ]
    cidrs: dict[str, list[str]] = {}
    for s in sorted(subnets, key=lambda s: (s.get("ip_version", 4), s.get("cidr", ""))):
        cidrs.setdefault(s["network_id"], []).append(s["cidr"])
    graph = Graph(
        networks=[
            Network(
                id=n["id"],
                name=n.get("name") or "",
                external=bool(n.get("router:external")),
                shared=bool(n.get("shared")),
                cidrs=tuple(cidrs.get(n["id"], ())),
            )
            for n in shown
        ]
    )
    known_networks = {n.id for n in graph.networks}
    own_routers = [r for r in routers if r.get("project_id") == project_id]
    for r in own_routers:
        graph.devices.append(Device(r["id"], r.get("name") or "", "router", r.get("status", "")))
        gateway = r.get("external_gateway_info") or {}
        if gateway.get("network_id") in known_networks:
            graph.ports.append(
                Port(
                    id=f"gw-{r['id']}",
                    device_id=r["id"],
                    network_id=gateway["network_id"],
                    ips=_ips(gateway.get("external_fixed_ips")),
                    gateway=True,
                )
            )
    for s in servers:
        graph.devices.append(Device(s["id"], s.get("name") or "", "server", s.get("status", "")))
    router_ids = {r["id"] for r in own_routers}
    server_ids = {s["id"] for s in servers}
    floating: dict[str, list[str]] = {}
    for f in floating_ips or []:
        if f.get("port_id") and f.get("floating_ip_address"):
            floating.setdefault(f["port_id"], []).append(f["floating_ip_address"])
    for p in ports:
        owner, device = p.get("device_owner") or "", p.get("device_id")
        on_router = owner in ROUTER_INTERFACE_OWNERS and device in router_ids
        on_server = owner.startswith("compute:") and device in server_ids
        if (on_router or on_server) and p.get("network_id") in known_networks:
            graph.ports.append(
                Port(
                    p["id"],
                    device,
                    p["network_id"],
                    _ips(p.get("fixed_ips")),
                    floating_ips=tuple(sorted(floating.get(p["id"], ()))),
                )
            )
    return graph


@dataclass(frozen=True)
class Bar:
    network: Network
    x: float
    y: float
    width: float
    height: float

    @property
    def label_x(self) -> float:
        return _r(self.x + self.width / 2)

    @property
    def label_y(self) -> float:
        return _r(self.y + 12)


@dataclass(frozen=True)
class Line:
    """A port: from its device's box to the near edge of its network's bar (a dot at
    `x_bar`), the IPs written beside the box (`label_x`, anchored at `anchor`)."""

    port: Port
    network: Network
    y: float
    x_box: float
    x_bar: float
    label: str
    label_x: float
    anchor: str  # "start" or "end", SVG's text-anchor

    @property
    def label_y(self) -> float:
        return _r(self.y - 4)


@dataclass(frozen=True)
class Box:
    device: Device
    x: float
    y: float
    width: float
    height: float
    name: str  # as shown: a long name cut (the tooltip has it whole)
    lines: tuple[Line, ...]

    @property
    def text_x(self) -> float:
        return _r(self.x + 10)

    @property
    def caption_y(self) -> float:
        return _r(self.y + 16)

    @property
    def name_y(self) -> float:
        return _r(self.y + 33)


@dataclass(frozen=True)
class Picture:
    width: float
    height: float
    bars: tuple[Bar, ...]
    boxes: tuple[Box, ...]

    @property
    def empty(self) -> bool:
        return not self.bars and not self.boxes


def _r(value: float) -> float:
    """A coordinate as the SVG gets it: to a tenth of a pixel."""
    return round(value, 1)


def _by_name(item: Network | Device) -> tuple[str, str]:
    return (item.name, item.id)


def _shown_name(name: str) -> str:
    return name if len(name) <= BOX_MAX_NAME else name[: BOX_MAX_NAME - 1] + "…"


def _ip_label(port: Port) -> str:
    """The fixed IPs on a port's line, then its floating IPs (`↔ 172.24.4.10`)."""
    return ", ".join([*port.ips, *(f"↔ {ip}" for ip in port.floating_ips)])


def _label_width(ports: list[Port]) -> float:
    widest = max((len(_ip_label(p)) for p in ports), default=0)
    return widest * IP_CHAR + LABEL_PAD if widest else 0.0


@dataclass
class _Placed:
    """A device on its way to a box: its gap, its ports left and right of it, its size."""

    device: Device
    gap: int
    left: list[Port]
    right: list[Port]
    width: float
    height: float
    row: int = 0


def _fits(start: float, end: float, taken: list[tuple[float, float]]) -> bool:
    for s, e in taken:
        if end + SPAN_CLEARANCE >= s and start <= e + SPAN_CLEARANCE:
            return False
    return True


def layout(graph: Graph) -> Picture:
    """Where every bar, box and line goes (a pure function of the graph)."""
    networks = sorted((n for n in graph.networks if n.external), key=_by_name) + sorted(
        (n for n in graph.networks if not n.external), key=_by_name
    )
    column = {n.id: i for i, n in enumerate(networks)}
    ports_of: dict[str, list[Port]] = {}
    for p in graph.ports:
        if p.network_id in column:
            ports_of.setdefault(p.device_id, []).append(p)
    devices = sorted((d for d in graph.devices if d.kind == "router"), key=_by_name) + sorted(
        (d for d in graph.devices if d.kind != "router"), key=_by_name
    )
    placed: list[_Placed] = []
    for d in devices:
        ports = sorted(ports_of.get(d.id, []), key=lambda p: (column[p.network_id], p.ips, p.id))
        # The box sits right of its leftmost network (gap i + 1 lies right of column i);
        # a device without ports, in the gap before the first network.
        leftmost = column[ports[0].network_id] if ports else -1
        left = [p for p in ports if column[p.network_id] == leftmost]
        right = [p for p in ports if column[p.network_id] != leftmost]
        text = max(len(_shown_name(d.label)) * NAME_CHAR, len(d.caption) * CAPTION_CHAR)
        width = max(BOX_MIN_WIDTH, text + 2 * PAD)
        height = max(BOX_MIN_HEIGHT, PORT_STEP * (len(ports) + 1))
        placed.append(_Placed(d, leftmost + 1, left, right, width, height))

    # Each gap as wide as its widest box with the IP labels either side of it.
    gaps = len(networks) + 1
    left_labels = [0.0] * gaps
    right_labels = [0.0] * gaps
    box_widths = [0.0] * gaps
    for p in placed:
        left_labels[p.gap] = max(left_labels[p.gap], _label_width(p.left))
        right_labels[p.gap] = max(right_labels[p.gap], _label_width(p.right))
        box_widths[p.gap] = max(box_widths[p.gap], p.width)
    gap_x: list[float] = []
    bar_x: list[float] = []
    x = float(MARGIN)
    for g in range(gaps):
        gap_x.append(x)
        if box_widths[g]:
            x += PAD + left_labels[g] + box_widths[g] + right_labels[g] + PAD
        elif 0 < g < gaps - 1:
            x += EMPTY_GAP
        if g < len(networks):
            bar_x.append(x)
            x += BAR_WIDTH
    width = x + MARGIN

    def box_x(p: _Placed) -> float:
        return gap_x[p.gap] + PAD + left_labels[p.gap]

    def span(p: _Placed) -> tuple[float, float]:
        """How far the device's box and lines reach, left to right."""
        start = bar_x[p.gap - 1] if p.left else box_x(p)
        end = box_x(p) + p.width
        if p.right:
            end = max(end, bar_x[max(column[q.network_id] for q in p.right)] + BAR_WIDTH)
        return start, end

    # Rows: a device goes in the first row where its span meets no other's.
    rows: list[list[tuple[float, float]]] = []
    row_heights: list[float] = []
    for p in placed:
        start, end = span(p)
        p.row = next((i for i, taken in enumerate(rows) if _fits(start, end, taken)), len(rows))
        if p.row == len(rows):
            rows.append([])
            row_heights.append(0.0)
        rows[p.row].append((start, end))
        row_heights[p.row] = max(row_heights[p.row], p.height)
    row_y = []
    y = float(ROWS_TOP)
    for h in row_heights:
        row_y.append(y)
        y += h + ROW_GAP
    content_bottom = y - ROW_GAP if rows else ROWS_TOP

    boxes = []
    for p in placed:
        bx = box_x(p)
        by = row_y[p.row] + (row_heights[p.row] - p.height) / 2
        lines = []
        ports = [*p.left, *p.right]
        for k, port in enumerate(ports):
            network = networks[column[port.network_id]]
            going_left = k < len(p.left)
            # The line ends on the near edge of its bar (passing behind the bars between).
            bar_edge = bar_x[column[port.network_id]] + (BAR_WIDTH if going_left else 0)
            lines.append(
                Line(
                    port=port,
                    network=network,
                    # Spread evenly over the box's height.
                    y=_r(by + p.height * (k + 1) / (len(ports) + 1)),
                    x_box=_r(bx if going_left else bx + p.width),
                    x_bar=_r(bar_edge),
                    label=_ip_label(port),
                    label_x=_r(bx - LABEL_PAD / 2 if going_left else bx + p.width + LABEL_PAD / 2),
                    anchor="end" if going_left else "start",
                )
            )
        name = _shown_name(p.device.label)
        boxes.append(Box(p.device, _r(bx), _r(by), _r(p.width), _r(p.height), name, tuple(lines)))

    # The bars run from the top to below the last row, long enough for their labels.
    longest_label = max((len(n.label) * BAR_CHAR + 2 * PAD for n in networks), default=0)
    bar_bottom = max(content_bottom + PAD, BAR_TOP + longest_label)
    bars = tuple(
        Bar(n, _r(bar_x[i]), BAR_TOP, BAR_WIDTH, _r(bar_bottom - BAR_TOP))
        for i, n in enumerate(networks)
    )
    if not bars and not boxes:
        return Picture(0.0, 0.0, (), ())
    return Picture(_r(width), _r(bar_bottom + MARGIN), bars, tuple(boxes))


def graph_json(graph: Graph) -> dict[str, Any]:
    """The graph as /topology.json gives it: nodes and edges, each under "data" (the
    shape graph libraries such as cytoscape read)."""
    nodes = [
        {
            "data": {
                "id": n.id,
                "label": n.name or n.id[:8],
                "kind": "external" if n.external else "network",
                "cidrs": list(n.cidrs),
                "href": f"/networks#network-{n.id}",
            }
        }
        for n in graph.networks
    ]
    for d in graph.devices:
        href = f"/instances/{d.id}" if d.kind == "server" else f"/networks#router-{d.id}"
        data = {"id": d.id, "label": d.label, "kind": d.kind, "href": href}
        nodes.append({"data": data})
    edges = [
        {
            "data": {
                "id": p.id,
                "source": p.device_id,
                "target": p.network_id,
                "ips": list(p.ips),
                "floating_ips": list(p.floating_ips),
                "gateway": p.gateway,
            }
        }
        for p in graph.ports
    ]
    return {"nodes": nodes, "edges": edges}
