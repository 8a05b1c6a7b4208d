"""Sharing network resources with RBAC policies, as users drive it with the `openstack` CLI.

`cumulo-demo` owns the objects; a `partner` project is given access, an `outsider`
project is not. Both are made here with the admin CLI, each with its own member user.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass

import httpx
import pytest

from tests.cloudrunner import CloudRunner


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Member:
    project_id: str
    project: str
    user: str
    password: str


def _member(cloud: CloudRunner, prefix: str, role: str = "member") -> Member:
    project = cloud.openstack("project", "create", _name(prefix), "-f", "json")
    user, password = _name(f"{prefix}-user"), uuid.uuid4().hex
    cloud.openstack("user", "create", user, "--password", password, "--domain", "default")
    cloud.openstack("role", "add", "--project", project["id"], "--user", user, role)
    return Member(project["id"], project["name"], user, password)


@pytest.fixture(scope="module")
def partner(cloud: CloudRunner) -> Member:
    return _member(cloud, "partner")


@pytest.fixture(scope="module")
def outsider(cloud: CloudRunner) -> Member:
    return _member(cloud, "outsider")


def demo(cloud: CloudRunner, *args: str, check: bool = True):
    return cloud.openstack(*args, cloud="cumulo-demo", check=check)


def as_member(cloud: CloudRunner, who: Member, *args: str, check: bool = True):
    """The CLI with the member's credentials over the demo cloud's endpoint and domain."""
    login = (
        "--os-username", who.user, "--os-password", who.password,
        "--os-project-name", who.project,
    )  # fmt: skip
    return cloud.openstack(*login, *args, cloud="cumulo-demo", check=check)


def refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0, proc.stdout
    for word in words:
        assert word in proc.stderr, proc.stderr


def network_api(cloud: CloudRunner, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{cloud.config.ports.network}/v2.0",
        headers={"X-Auth-Token": token},
        timeout=30,
    )


def test_owner_shares_a_network_with_one_project(
    cloud: CloudRunner, partner: Member, outsider: Member
):
    net, sub = _name("shared-net"), _name("shared-sub")
    network = demo(cloud, "network", "create", net, "-f", "json")
    demo(cloud, "subnet", "create", "--network", net, "--subnet-range", "10.77.0.0/24", sub)
    policy = demo(
        cloud, "network", "rbac", "create", "--type", "network", "--action", "access_as_shared",
        "--target-project", partner.project_id, net, "-f", "json",
    )  # fmt: skip
    assert policy["object_id"] == network["id"] and policy["object_type"] == "network"
    assert policy["target_project_id"] == partner.project_id
    assert policy["action"] == "access_as_shared"
    assert policy["project_id"] == network["project_id"]

    # The target sees it, shared with it; the owner's view stays unshared.
    assert net in [n["Name"] for n in as_member(cloud, partner, "network", "list", "-f", "json")]
    assert as_member(cloud, partner, "network", "show", network["id"], "-f", "json")["shared"]
    assert demo(cloud, "network", "show", net, "-f", "json")["shared"] is False
    assert sub in [s["Name"] for s in as_member(cloud, partner, "subnet", "list", "-f", "json")]

    # It can put a port on it (Neutron: ports yes, subnets no).
    port = as_member(
        cloud, partner, "port", "create", "--network", network["id"], _name("p"), "-f", "json"
    )
    assert port["fixed_ips"][0]["ip_address"].startswith("10.77.0.")
    refused(
        as_member(
            cloud, partner, "subnet", "create", "--network", network["id"],
            "--subnet-range", "10.78.0.0/24", _name("s"), check=False,
        ),
        "403",
    )  # fmt: skip

    # Anyone else still gets nothing.
    assert net not in [
        n["Name"] for n in as_member(cloud, outsider, "network", "list", "-f", "json")
    ]
    refused(as_member(cloud, outsider, "network", "show", network["id"], check=False))
    refused(
        as_member(cloud, outsider, "port", "create", "--network", network["id"], "p", check=False),
    )

    # Policies are the owner's: the target neither lists nor shows them.
    mine = demo(cloud, "network", "rbac", "list", "--type", "network", "--long", "-f", "json")
    assert policy["id"] in [p["ID"] for p in mine]
    assert policy["id"] not in [
        p["ID"] for p in as_member(cloud, partner, "network", "rbac", "list", "-f", "json")
    ]

    # Taking access away is refused while the partner's port is there.
    refused(
        demo(cloud, "network", "rbac", "delete", policy["id"], check=False),
        "cannot be removed because other objects depend on it",
    )
    as_member(cloud, partner, "port", "delete", port["id"])
    demo(cloud, "network", "rbac", "delete", policy["id"])
    refused(as_member(cloud, partner, "network", "show", network["id"], check=False))
    demo(cloud, "subnet", "delete", sub)
    demo(cloud, "network", "delete", net)


def test_target_project_boots_a_server_on_the_shared_network(
    cloud: CloudRunner, partner: Member, tmp_path
):
    disk = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "64M"], check=True)
    net = _name("boot-net")
    network = demo(cloud, "network", "create", net, "-f", "json")
    demo(cloud, "subnet", "create", "--network", net, "--subnet-range", "10.79.0.0/24", net)
    demo(
        cloud, "network", "rbac", "create", "--type", "network", "--action", "access_as_shared",
        "--target-project", partner.project_id, net,
    )  # fmt: skip
    image = cloud.openstack(
        "image", "create", _name("img"), "--file", str(disk), "--disk-format", "qcow2",
        "--container-format", "bare", "--public", "-f", "json",
    )  # fmt: skip
    server = as_member(
        cloud, partner, "server", "create", "--image", image["id"], "--flavor", "m1.tiny",
        "--network", network["id"], "--wait", _name("vm"), "-f", "json",
    )  # fmt: skip
    assert server["status"] == "ACTIVE"
    assert net in str(server["addresses"])
    as_member(cloud, partner, "server", "delete", "--wait", server["id"])
    cloud.openstack("image", "delete", image["id"])
    demo(cloud, "subnet", "delete", net)
    demo(cloud, "network", "delete", net)


def test_wildcard_policy_is_what_shared_means(cloud: CloudRunner, partner: Member):
    net = _name("everyone")
    network = cloud.openstack("network", "create", "--share", net, "-f", "json")
    everyone = cloud.openstack(
        "network", "rbac", "list", "--target-project", "*", "--long", "-f", "json"
    )
    assert [p["Action"] for p in everyone if p["Object ID"] == network["id"]] == [
        "access_as_shared"
    ]
    assert as_member(cloud, partner, "network", "show", network["id"], "-f", "json")["shared"]

    # Un-sharing removes the policy; a `*` policy shares it again.
    cloud.openstack("network", "set", "--no-share", net)
    assert not [
        p
        for p in cloud.openstack("network", "rbac", "list", "-f", "json")
        if p["Object ID"] == network["id"]
    ]
    refused(as_member(cloud, partner, "network", "show", network["id"], check=False))
    policy = cloud.openstack(
        "network", "rbac", "create", "--type", "network", "--action", "access_as_shared",
        "--target-all-projects", net, "-f", "json",
    )  # fmt: skip
    assert cloud.openstack("network", "show", net, "-f", "json")["shared"] is True
    cloud.openstack("network", "rbac", "delete", policy["id"])
    assert cloud.openstack("network", "show", net, "-f", "json")["shared"] is False
    cloud.openstack("network", "delete", net)

    # Only an admin shares with every project.
    own = _name("own")
    demo(cloud, "network", "create", own)
    refused(
        demo(
            cloud, "network", "rbac", "create", "--type", "network",
            "--action", "access_as_shared", "--target-all-projects", own, check=False,
        ),
        "403",
    )  # fmt: skip
    demo(cloud, "network", "delete", own)


def test_access_as_external_offers_a_network_to_one_project(
    cloud: CloudRunner, partner: Member, outsider: Member
):
    net = _name("ext")
    network = cloud.openstack("network", "create", net, "-f", "json")
    cloud.openstack(
        "subnet", "create", "--network", net, "--subnet-range", "192.0.2.0/24",
        "--no-dhcp", net,
    )  # fmt: skip
    assert network["router:external"] is False
    policy = cloud.openstack(
        "network", "rbac", "create", "--type", "network", "--action", "access_as_external",
        "--target-project", partner.project_id, net, "-f", "json",
    )  # fmt: skip
    seen = as_member(cloud, partner, "network", "show", network["id"], "-f", "json")
    assert seen["router:external"] is True and seen["shared"] is False
    fip = as_member(cloud, partner, "floating", "ip", "create", network["id"], "-f", "json")
    assert fip["floating_ip_address"].startswith("192.0.2.")
    refused(as_member(cloud, outsider, "floating", "ip", "create", network["id"], check=False))
    refused(
        cloud.openstack("network", "rbac", "delete", policy["id"], check=False),
        "cannot be removed because other objects depend on it",
    )
    as_member(cloud, partner, "floating", "ip", "delete", fip["id"])
    cloud.openstack("network", "rbac", "delete", policy["id"])
    assert cloud.openstack("network", "show", net, "-f", "json")["router:external"] is False
    cloud.openstack("network", "delete", net)


def test_a_shared_security_group_can_be_put_on_the_targets_ports(
    cloud: CloudRunner, partner: Member
):
    group = demo(cloud, "security", "group", "create", _name("sg"), "-f", "json")
    policy = demo(
        cloud, "network", "rbac", "create", "--type", "security_group",
        "--action", "access_as_shared", "--target-project", partner.project_id,
        group["id"], "-f", "json",
    )  # fmt: skip
    seen = as_member(cloud, partner, "security", "group", "show", group["id"], "-f", "json")
    assert seen["id"] == group["id"] and seen["rules"]
    with network_api(cloud, cloud.token(partner.user, partner.password, partner.project)) as api:
        assert api.get(f"/security-groups/{group['id']}").json()["security_group"]["shared"]
    net = _name("sgnet")
    as_member(cloud, partner, "network", "create", net)
    as_member(cloud, partner, "subnet", "create", "--network", net, "--subnet-range",
              "10.80.0.0/24", net)  # fmt: skip
    port = as_member(
        cloud, partner, "port", "create", "--network", net, "--security-group", group["id"],
        _name("p"), "-f", "json",
    )  # fmt: skip
    assert port["security_group_ids"] == [group["id"]]
    refused(
        as_member(cloud, partner, "security", "group", "delete", group["id"], check=False),
        "403",
    )
    refused(demo(cloud, "network", "rbac", "delete", policy["id"], check=False), "409")
    as_member(cloud, partner, "port", "delete", port["id"])
    demo(cloud, "network", "rbac", "delete", policy["id"])
    refused(as_member(cloud, partner, "security", "group", "show", group["id"], check=False))
    as_member(cloud, partner, "subnet", "delete", net)
    as_member(cloud, partner, "network", "delete", net)
    demo(cloud, "security", "group", "delete", group["id"])


def test_rbac_errors_are_neutron_errors(cloud: CloudRunner, partner: Member, admin_token):
    demo_token = cloud.token("demo", project="demo")
    partner_token = cloud.token(partner.user, partner.password, partner.project)
    with network_api(cloud, demo_token) as owner, network_api(cloud, partner_token) as other:
        net = owner.post("/networks", json={"network": {"name": _name("e")}}).json()["network"]

        def create(api: httpx.Client, **attrs) -> httpx.Response:
            body = {
                "object_type": "network", "object_id": net["id"],
                "action": "access_as_shared", "target_tenant": partner.project_id, **attrs,
            }  # fmt: skip
            return api.post("/rbac-policies", json={"rbac_policy": body})

        def error(r: httpx.Response, status: int, kind: str) -> str:
            assert r.status_code == status, r.text
            assert r.json()["NeutronError"]["type"] == kind, r.text
            return r.json()["NeutronError"]["message"]

        error(create(other), 404, "NetworkNotFound")  # not visible to it
        error(create(owner, object_type="router"), 400, "InvalidInput")
        error(create(owner, action="access_as_readwrite"), 400, "InvalidInput")
        error(
            create(owner, object_type="security_group", action="access_as_external"),
            400,
            "InvalidActionForType",
        )
        r = owner.post("/rbac-policies", json={"rbac_policy": {"object_type": "network"}})
        assert "Required attribute" in error(r, 400, "BadRequest")
        error(create(owner, target_tenant="*"), 403, "PolicyNotAuthorized")

        r = create(owner)
        assert r.status_code == 201
        policy = r.json()["rbac_policy"]
        assert set(policy) == {
            "id", "project_id", "tenant_id", "object_type", "object_id", "action",
            "target_tenant",
        }  # fmt: skip
        assert "already exists" in error(create(owner), 409, "DuplicateRbacPolicy")
        # Visible now, but still not the partner's to share.
        assert "do not own" in error(create(other), 400, "InvalidInput")
        error(other.get(f"/rbac-policies/{policy['id']}"), 404, "RbacPolicyNotFound")
        error(other.delete(f"/rbac-policies/{policy['id']}"), 404, "RbacPolicyNotFound")
        r = owner.put(
            f"/rbac-policies/{policy['id']}", json={"rbac_policy": {"object_type": "subnetpool"}}
        )
        assert "read-only" in error(r, 400, "BadRequest")

        found = owner.get(
            "/rbac-policies",
            params={"object_id": net["id"], "target_tenant": partner.project_id, "fields": "id"},
        ).json()["rbac_policies"]
        assert found == [{"id": policy["id"]}]
        assert (
            owner.get(
                "/rbac-policies", params={"object_id": net["id"], "action": "access_as_external"}
            ).json()["rbac_policies"]
            == []
        )

        port = other.post("/ports", json={"port": {"network_id": net["id"]}}).json()["port"]
        message = error(owner.delete(f"/rbac-policies/{policy['id']}"), 409, "RbacPolicyInUse")
        assert partner.project_id in message
        # Moving the policy to another project strands the port as well.
        moved = owner.put(
            f"/rbac-policies/{policy['id']}", json={"rbac_policy": {"target_tenant": "x" * 32}}
        )
        error(moved, 409, "RbacPolicyInUse")
        assert other.delete(f"/ports/{port['id']}").status_code == 204
        moved = owner.put(
            f"/rbac-policies/{policy['id']}", json={"rbac_policy": {"target_tenant": "x" * 32}}
        )
        assert moved.status_code == 200 and moved.json()["rbac_policy"]["target_tenant"] == "x" * 32
        error(other.get(f"/networks/{net['id']}"), 404, "NetworkNotFound")
        shown = owner.get(f"/networks/{net['id']}").json()["network"]
        assert shown["revision_number"] >= 2  # each policy change bumps the network's
        assert owner.delete(f"/networks/{net['id']}").status_code == 204
        error(owner.get(f"/rbac-policies/{policy['id']}"), 404, "RbacPolicyNotFound")

    with network_api(cloud, admin_token) as admin:
        shared = admin.post(
            "/networks", json={"network": {"name": _name("busy"), "shared": True}}
        ).json()["network"]
        with network_api(cloud, partner_token) as other:
            port = other.post("/ports", json={"port": {"network_id": shared["id"]}})
            assert port.status_code == 201
            r = admin.put(f"/networks/{shared['id']}", json={"network": {"shared": False}})
            error(r, 409, "InvalidSharedSetting")
            other.delete(f"/ports/{port.json()['port']['id']}")
        assert admin.delete(f"/networks/{shared['id']}").status_code == 204
