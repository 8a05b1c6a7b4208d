"""Pre-provisioned Tempest accounts, the way a hardened cloud is tested.

Tempest's dynamic credentials make a test's admin by giving it the admin role on a new
project; cumulo (as Keystone's `admin_project_name` prescribes) makes only the `admin`
project's admins and system-scoped admins cloud admins, and that default is kept. So
the accounts are made beforehand and listed in accounts.yaml (`[auth]
test_accounts_file`, `use_dynamic_credentials = false`):

- admins: users with the admin role on the `admin` project (Tempest's `os_admin`);
- system accounts: admin, member and reader on the system (`system: all`);
- projects: each with a member (holding the project's network, behind a router to the
  public network), a manager and a reader (Tempest's project personas).

Member accounts come first in the file: Tempest gives `alt` the first free non-admin
account, which must be another project's member, not a persona of the primary's project.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import httpx


@dataclass
class AdminSession:
    """An admin-project token and the catalog's public URLs, over plain REST."""

    client: httpx.Client
    urls: dict[str, str]

    @classmethod
    def login(cls, auth_url: str, password: str) -> AdminSession:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": "admin", "domain": {"id": "default"}, "password": password}
                    },
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        }
        resp = httpx.post(f"{auth_url}/auth/tokens", json=body, timeout=60)
        resp.raise_for_status()
        catalog = resp.json()["token"]["catalog"]
        urls = {
            entry["type"]: ep["url"]
            for entry in catalog
            for ep in entry["endpoints"]
            if ep["interface"] == "public"
        }
        client = httpx.Client(
            headers={"X-Auth-Token": resp.headers["X-Subject-Token"]}, timeout=120
        )
        return cls(client, urls)

    def call(self, method: str, service: str, path: str, **kwargs) -> dict:
        resp = self.client.request(method, self.urls[service].rstrip("/") + path, **kwargs)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {service}{path}: {resp.status_code} {resp.text}")
        return resp.json() if resp.content else {}

    def find(self, service: str, path: str, key: str, name: str) -> dict:
        found = self.call("GET", service, path, params={"name": name})[key]
        if not found:
            raise RuntimeError(f"no {key} named {name!r}")
        return found[0]


# Glance's own attributes: not copied as properties to the alternate image.
_IMAGE_ATTRIBUTES = {
    "id", "name", "status", "visibility", "protected", "checksum", "os_hash_algo",
    "os_hash_value", "owner", "size", "virtual_size", "min_ram", "min_disk", "created_at",
    "updated_at", "tags", "self", "file", "schema", "direct_url", "locations", "stores",
    "os_hidden", "disk_format", "container_format",
}  # fmt: skip


def alternate_image(
    s: AdminSession,
    image_id: str,
    name: str = "tiny-alt",
    extra: Callable[[bytes], dict[str, str]] | None = None,
) -> str:
    """A second public image with the same bytes and properties (kernel, ramdisk...):
    Tempest's `image_ref_alt`, which its filter and rebuild tests want distinct. extra:
    more properties, made from the data (a signature)."""
    source = s.call("GET", "image", f"/v2/images/{image_id}")
    data = s.client.get(s.urls["image"].rstrip("/") + f"/v2/images/{image_id}/file")
    data.raise_for_status()
    props = {k: v for k, v in source.items() if k not in _IMAGE_ATTRIBUTES and not
             k.startswith("os_glance")}  # fmt: skip
    body = {
        "name": name,
        "disk_format": source["disk_format"],
        "container_format": source["container_format"],
        "visibility": "public",
        **props,
        **(extra(data.content) if extra else {}),
    }
    image = s.call("POST", "image", "/v2/images", json=body)
    resp = s.client.put(
        s.urls["image"].rstrip("/") + f"/v2/images/{image['id']}/file",
        content=data.content,
        headers={"Content-Type": "application/octet-stream"},
    )
    resp.raise_for_status()
    return image["id"]


def enable_guest_agent(s: AdminSession, image_id: str, admin_user: str) -> None:
    """The image's guests get the qemu-guest-agent channel (the tiny guest answers on it),
    so changePassword sets `admin_user`'s password, as on an image with qemu-ga."""
    set_properties(s, image_id, {"hw_qemu_guest_agent": "yes", "os_admin_user": admin_user})


def enable_virtio_scsi(s: AdminSession, image_id: str) -> None:
    """The image's guests get a virtio-scsi controller (hw_scsi_model; the tiny guest has
    its driver), which Tempest's direct-LUN tests ask the image for: a volume with
    device_type lun is their SCSI disk sda."""
    set_properties(s, image_id, {"hw_scsi_model": "virtio-scsi"})


def set_properties(s: AdminSession, image_id: str, properties: dict[str, str]) -> None:
    patch = [{"op": "add", "path": f"/{k}", "value": v} for k, v in properties.items()]
    s.call(
        "PATCH",
        "image",
        f"/v2/images/{image_id}",
        json=patch,
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )


def multiattach_volume_type(s: AdminSession, name: str = "multiattach") -> str:
    """A public volume type whose volumes may be attached to several servers, as
    DevStack makes it for Tempest (`[volume] volume_type_multiattach`)."""
    body = {"volume_type": {"name": name, "extra_specs": {"multiattach": "<is> True"}}}
    s.call("POST", "block-storage", "/types", json=body)
    return name


def _user(s: AdminSession, name: str, project_id: str | None = None) -> tuple[dict, str]:
    password = secrets.token_urlsafe(12)
    body = {"name": name, "password": password, "domain_id": "default"}
    if project_id:
        body["default_project_id"] = project_id
    return s.call("POST", "identity", "/users", json={"user": body})["user"], password


def _role_id(s: AdminSession, name: str) -> str:
    found = s.call("GET", "identity", "/roles", params={"name": name})["roles"]
    if found:
        return found[0]["id"]
    return s.call("POST", "identity", "/roles", json={"role": {"name": name}})["role"]["id"]


def _project_network(s: AdminSession, project_id: str, name: str, index: int, public: str) -> None:
    net = s.call(
        "POST",
        "network",
        "/v2.0/networks",
        json={"network": {"name": name, "project_id": project_id}},
    )["network"]
    subnet = s.call(
        "POST",
        "network",
        "/v2.0/subnets",
        json={
            "subnet": {
                "network_id": net["id"],
                "ip_version": 4,
                "cidr": f"10.{200 + index // 256}.{index % 256}.0/24",
                "project_id": project_id,
                "name": f"{name}-subnet",
            }
        },
    )["subnet"]
    router = s.call(
        "POST",
        "network",
        "/v2.0/routers",
        json={
            "router": {
                "name": f"{name}-router",
                "project_id": project_id,
                "external_gateway_info": {"network_id": public},
            }
        },
    )["router"]
    s.call(
        "PUT",
        "network",
        f"/v2.0/routers/{router['id']}/add_router_interface",
        json={"subnet_id": subnet["id"]},
    )


def provision(s: AdminSession, public_network_id: str, projects: int, admins: int) -> list[dict]:
    """Create the accounts in the cloud; return accounts.yaml's list."""
    names = ("admin", "member", "reader", "manager", "ResellerAdmin")
    roles = {name: _role_id(s, name) for name in names}

    def grant(project_id: str, user_id: str, role: str) -> None:
        s.call("PUT", "identity", f"/projects/{project_id}/users/{user_id}/roles/{roles[role]}")

    def entry(user: str, password: str, role: str, **scope) -> dict:
        return {"username": user, "password": password, "roles": [role], **scope}

    members, personas, admin_accounts, system = [], [], [], []
    for i in range(projects):
        project = s.call(
            "POST",
            "identity",
            "/projects",
            json={"project": {"name": f"tempest-{i}", "domain_id": "default"}},
        )["project"]
        _project_network(s, project["id"], f"tempest-{i}-net", i, public_network_id)
        # Classes share these projects one after another (dynamic credentials would give
        # each its own): what one failing class leaves must not exhaust the next's quota.
        s.call(
            "PUT",
            "block-storage",
            f"/os-quota-sets/{project['id']}",
            json={"quota_set": {"volumes": 50, "snapshots": 50, "gigabytes": 5000}},
        )
        scope = {"project_name": project["name"], "domain_name": "Default"}
        for role in ("member", "manager", "reader"):
            user, password = _user(s, f"tempest-{i}-{role}", project["id"])
            grant(project["id"], user["id"], role)
            account = entry(user["name"], password, role, **scope)
            if role == "member":
                account["resources"] = {"network": f"tempest-{i}-net"}
                # The id Tempest fills in only once the account first authenticates:
                # LiveMigrationWithVTPMTest reads its primary's before that (the owner it
                # expects of the server's vTPM secret), as dynamic credentials know it.
                account["user_id"] = user["id"]
                members.append(account)
            else:
                personas.append(account)
    admin_project = s.find("identity", "/projects", "projects", "admin")
    _project_network(s, admin_project["id"], "tempest-admin-net", 255, public_network_id)
    for i in range(admins):
        user, password = _user(s, f"tempest-admin-{i}", admin_project["id"])
        grant(admin_project["id"], user["id"], "admin")
        account = entry(
            user["name"], password, "admin", project_name="admin", domain_name="Default"
        )
        account["resources"] = {"network": "tempest-admin-net"}
        admin_accounts.append(account)
    # Tempest's `service_user` (roles admin + service): what other services call Compute
    # as (external events, volume swaps, assisted snapshots), as a deployment's `nova` or
    # `neutron` user in its service project.
    service_role = _role_id(s, "service")
    # Tempest may hand one of these out as a class's plain admin too: two classes at a
    # time, each with an admin and a service user, need four.
    for i in range(4):
        user, password = _user(s, f"tempest-service-{i}", admin_project["id"])
        grant(admin_project["id"], user["id"], "admin")
        s.call(
            "PUT",
            "identity",
            f"/projects/{admin_project['id']}/users/{user['id']}/roles/{service_role}",
        )
        account = entry(
            user["name"], password, "admin", project_name="admin", domain_name="Default"
        )
        account["roles"].append("service")
        account["resources"] = {"network": "tempest-admin-net"}
        admin_accounts.append(account)
    resellers = []  # Object Storage's reseller admins (every account), each in a project
    for i in range(2):
        project = s.call(
            "POST",
            "identity",
            "/projects",
            json={"project": {"name": f"tempest-reseller-{i}", "domain_id": "default"}},
        )["project"]
        user, password = _user(s, f"tempest-reseller-{i}", project["id"])
        grant(project["id"], user["id"], "ResellerAdmin")
        scope = {"project_name": project["name"], "domain_name": "Default"}
        resellers.append(entry(user["name"], password, "ResellerAdmin", **scope))
    for role in ("admin", "member", "reader"):
        for i in range(2):
            user, password = _user(s, f"tempest-system-{role}-{i}")
            s.call("PUT", "identity", f"/system/users/{user['id']}/roles/{roles[role]}")
            system.append(
                entry(user["name"], password, role, system="all", user_domain_name="Default")
            )
    return members + personas + resellers + admin_accounts + system


def register_image_node(s: AdminSession, url: str) -> None:
    """The second image API node in the catalog as service type `image_remote` (as
    DevStack registers its second Glance worker for Tempest's alternate_image_endpoint)."""
    service = s.call(
        "POST", "identity", "/services",
        json={"service": {"type": "image_remote", "name": "glance-remote", "enabled": True}},
    )["service"]  # fmt: skip
    body = {"service_id": service["id"], "interface": "public", "url": url}
    s.call("POST", "identity", "/endpoints", json={"endpoint": {**body, "region_id": "RegionOne"}})
