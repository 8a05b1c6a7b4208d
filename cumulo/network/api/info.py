"""Version discovery (`/`, `/v2.0`) and /v2.0/extensions: only what is implemented."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.faults import NotFound
from cumulo.network.api.common import caller, json, list_response, service_of

UPDATED = "2026-01-01T00:00:00-00:00"
# alias -> (name, description)
EXTENSIONS = {
    "agent": ("agent", "The agent management extension."),
    "dhcp_agent_scheduler": ("DHCP Agent Scheduler", "Schedule networks among dhcp agents"),
    "dvr": ("Distributed Virtual Router", "Enables configuration of Distributed Virtual Routers."),
    "l3_agent_scheduler": ("L3 Agent Scheduler", "Schedule routers among l3 agents"),
    "l3-ha": ("HA Router extension", "Adds HA capability to routers."),
    "auto-allocated-topology": (
        "Auto Allocated Topology Services",
        "Auto Allocated Topology Services.",
    ),
    "allowed-address-pairs": ("Allowed Address Pairs", "Provides allowed address pairs"),
    "binding": ("Port Binding", "Expose port bindings of a virtual port"),
    "binding-extended": (
        "Port Bindings Extended",
        "Expose port bindings of a virtual port to external application",
    ),
    "external-net": ("Neutron external network", "Adds external network attribute"),
    "ext-gw-mode": ("Configurable external gateway mode", "SNAT on the external gateway"),
    "extra_dhcp_opt": ("Neutron Extra DHCP options", "Extra DHCP options on ports"),
    "extraroute": ("Neutron Extra Route", "Extra routes configuration for L3 router"),
    "extraroute-atomic": ("Atomically add/remove extra routes", "Edit extra routes atomically"),
    "metering": ("Neutron Metering", "Neutron Metering extension."),
    "metering_source_and_destination_fields": (
        "Neutron Metering with source and destination filtering",
        "Source and destination IP prefixes on metering label rules.",
    ),
    "ip-substring-filtering": ("IP address substring filtering", "ip_address_substr filter"),
    "network-ip-availability": ("Network IP Availability", "IP availability and usage stats"),
    "net-mtu": ("Network MTU", "Provides MTU attribute for a network resource."),
    "pagination": ("Pagination support", "Pagination is enabled."),
    "port-security": ("Port Security", "Provides port security"),
    "project-id": ("project_id field enabled", "The project_id field is enabled."),
    "provider": ("Provider Network", "Mapping of virtual networks to physical networks"),
    "quotas": ("Quota management support", "Quotas management per project"),
    "quota_details": ("Quota details management support", "Quota usage per project"),
    "rbac-policies": ("RBAC Policies", "Allows creation and modification of policies"),
    "rbac-security-groups": ("Add security_group type to network RBAC", "Shared groups"),
    "rbac-subnetpool": ("Add subnetpool type to network RBAC", "Shared subnet pools"),
    "router": ("Neutron L3 Router", "Routers between networks and to external networks"),
    "router-admin-state-down-before-update": (
        "Enforce Router's Admin State Down Before Update Extension",
        "Ensure that the admin state of a router is down (admin_state_up=False) before "
        "updating the distributed attribute",
    ),
    "security-group": ("security-group", "The security groups extension."),
    "service-type": ("Neutron Service Type Management", "API for retrieving service providers"),
    "sorting": ("Sorting support", "Sorting is enabled."),
    "standard-attr-description": ("standard-attr-description", "Descriptions on resources"),
    "standard-attr-revisions": ("Resource revision numbers", "Revision numbers on resources"),
    "standard-attr-tag": ("Tag support", "Tags on resources with standard attributes"),
    "tag": ("Tag support", "Enables to set tag on resources."),
    "standard-attr-timestamp": ("Resource timestamps", "created_at and updated_at fields"),
    "stateful-security-group": ("Stateful security group", "Stateful or stateless groups"),
    "subnet_allocation": ("Subnet Allocation", "Allocation of subnets from a subnet pool"),
}
# Offered only with [network] enable_dvr, as Neutron's L3 plugin drops both without it.
DVR_EXTENSIONS = ("dvr", "router-admin-state-down-before-update")
RESOURCES = (
    ("network", "networks"), ("subnet", "subnets"), ("subnetpool", "subnetpools"),
    ("port", "ports"), ("router", "routers"), ("floatingip", "floatingips"),
    ("security_group", "security-groups"), ("security_group_rule", "security-group-rules"),
    ("quota", "quotas"), ("rbac_policy", "rbac-policies"),
    ("metering_label", "metering/metering-labels"), ("service_provider", "service-providers"),
    ("agent", "agents"), ("network_ip_availability", "network-ip-availabilities"),
    ("metering_label_rule", "metering/metering-label-rules"),
)  # fmt: skip


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _extension(alias: str) -> dict:
    name, description = EXTENSIONS[alias]
    return {
        "alias": alias,
        "name": name,
        "description": description,
        "updated": UPDATED,
        "links": [],
    }


async def versions(request: Request) -> Response:
    link = {"href": f"{_base(request)}/v2.0/", "rel": "self"}
    return json({"versions": [{"id": "v2.0", "status": "CURRENT", "links": [link]}]})


async def resources(request: Request) -> Response:
    base = _base(request)
    return json(
        {
            "resources": [
                {
                    "name": name,
                    "collection": coll,
                    "links": [{"href": f"{base}/v2.0/{coll}", "rel": "self"}],
                }
                for name, coll in RESOURCES
            ]
        }
    )


async def list_service_providers(request: Request) -> Response:
    """Neutron's service-type extension: the drivers of advanced services (load
    balancers, VPN, ...). cumulo has none, so the list is empty."""
    await caller(request)
    return list_response(request, "service_providers", [])


def offered(request: Request) -> list[str]:
    """The aliases of the extensions this cloud's configuration offers."""
    enable_dvr = service_of(request).config.network.enable_dvr
    return sorted(a for a in EXTENSIONS if enable_dvr or a not in DVR_EXTENSIONS)


async def list_extensions(request: Request) -> Response:
    await caller(request)
    return json({"extensions": [_extension(a) for a in offered(request)]})


async def show_extension(request: Request) -> Response:
    await caller(request)
    alias = request.path_params["alias"]
    if alias not in offered(request):
        raise NotFound(f"Extension with alias {alias} does not exist")
    return json({"extension": _extension(alias)})


routes = [
    Route("/", versions, methods=["GET"]),
    Route("/v2.0", resources, methods=["GET"]),
    Route("/v2.0/", resources, methods=["GET"]),
    Route("/v2.0/extensions", list_extensions, methods=["GET"]),
    Route("/v2.0/service-providers", list_service_providers, methods=["GET"]),
    Route("/v2.0/extensions/{alias}", show_extension, methods=["GET"]),
]
