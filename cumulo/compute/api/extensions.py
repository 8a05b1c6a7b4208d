"""/extensions: the legacy v2 extension list Nova still answers, naming the extensions
whose APIs this cloud serves (api-ref: Extensions (extensions) (DEPRECATED))."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.faults import NotFound
from cumulo.compute.api.common import authorize, json

# (name, alias, description), as Nova's extension_info lists them.
EXTENSIONS = (
    ("AdminActions", "os-admin-actions", "Enable admin-only server actions."),
    ("Aggregates", "os-aggregates", "Admin-only aggregate administration."),
    ("AssistedVolumeSnapshots", "os-assisted-volume-snapshots", "Assisted volume snapshots."),
    ("AvailabilityZone", "os-availability-zone", "Availability zones of servers."),
    ("ConsoleOutput", "os-console-output", "Console log output support."),
    ("Consoles", "os-consoles", "Interactive Console support."),
    ("DiskConfig", "OS-DCF", "Disk Management Extension."),
    ("ExtendedAvailabilityZone", "OS-EXT-AZ", "Extended Availability Zone support."),
    ("ExtendedIps", "OS-EXT-IPS", "Adds type parameter to the ip list."),
    ("ExtendedIpsMac", "OS-EXT-IPS-MAC", "Adds mac address parameter to the ip list."),
    ("ExtendedServerAttributes", "OS-EXT-SRV-ATTR", "Extended Server Attributes support."),
    ("ExtendedStatus", "OS-EXT-STS", "Extended Status support."),
    ("ExtendedVolumes", "os-extended-volumes", "Extended Volumes support."),
    ("FlavorAccess", "os-flavor-access", "Flavor access support."),
    ("FlavorExtraSpecs", "os-flavor-extra-specs", "Flavors extra specs support."),
    ("FlavorManage", "os-flavor-manage", "Flavor create/delete API support."),
    ("FloatingIpPools", "os-floating-ip-pools", "Floating IPs support."),
    ("FloatingIps", "os-floating-ips", "Floating IPs support."),
    ("Hosts", "os-hosts", "Admin-only host administration."),
    ("Hypervisors", "os-hypervisors", "Admin-only hypervisor administration."),
    ("InstanceActions", "os-instance-actions", "A log of actions taken on a server."),
    ("Keypairs", "os-keypairs", "Keypair Support."),
    ("Networks", "os-networks", "Admin-only Network Management Extension."),
    ("Quotas", "os-quota-sets", "Quotas management support."),
    ("SecurityGroups", "os-security-groups", "Security group support."),
    ("ServerDiagnostics", "os-server-diagnostics", "Server diagnostics for admins."),
    ("ServerExternalEvents", "os-server-external-events", "Server External Event Triggers."),
    ("ServerGroups", "os-server-groups", "Server group support."),
    ("ServerPassword", "os-server-password", "Server password support."),
    ("ServerUsage", "OS-SRV-USG", "Adds launched_at and terminated_at on Servers."),
    ("Services", "os-services", "Services support."),
    ("SimpleTenantUsage", "os-simple-tenant-usage", "Simple tenant usage extension."),
    ("TenantNetworks", "os-tenant-networks", "Tenant-based Network Management Extension."),
    ("UsedLimits", "os-used-limits", "Provide data on limited resources that are being used."),
    ("Volumes", "os-volumes", "Volumes support."),
)  # fmt: skip


def _view(name: str, alias: str, description: str) -> dict:
    return {
        "name": name,
        "alias": alias,
        "description": description,
        "links": [],
        "namespace": "http://docs.openstack.org/compute/ext/fake_xml",
        "updated": "2014-12-03T00:00:00Z",
    }


async def list_extensions(request: Request) -> Response:
    await authorize(request, "compute:extensions")
    return json({"extensions": [_view(*ext) for ext in EXTENSIONS]})


async def show_extension(request: Request) -> Response:
    await authorize(request, "compute:extensions")
    alias = request.path_params["alias"]
    for ext in EXTENSIONS:
        if ext[1] == alias:
            return json({"extension": _view(*ext)})
    raise NotFound("The resource could not be found.")


routes = [
    Route("/v2.1/extensions", list_extensions, methods=["GET"]),
    Route("/v2.1/extensions/{alias}", show_extension, methods=["GET"]),
]
