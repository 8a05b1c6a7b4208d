"""Account ACLs (`X-Account-Access-Control`) as a project owner shares a whole account:
the owner sets them with the `swift` CLI, other projects' users use the account with
the `swift` CLI, openstacksdk and plain HTTP, each as far as their level allows."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cloudrunner import VENV_BIN, CloudRunner, password_auth
from tests.functional.object_store_helpers import (
    account_client,
    policy_cloud_fixture,
    swift,
    swift_env,
    unique,
)

cloud = policy_cloud_fixture("object-store-account-acls")

PASSWORD = "team-secret"


@dataclass
class Team:
    """A project that owns nothing in the admin's account: alice (member), bob (reader)."""

    project_id: str
    alice_id: str
    bob_id: str
    alice: str  # tokens
    bob: str


@pytest.fixture(scope="module")
def owner(cloud: CloudRunner):
    """The admin project's account, with its owner's token."""
    with account_client(cloud, cloud.token("admin")) as client:
        yield client


@pytest.fixture(scope="module")
def team(cloud: CloudRunner) -> Team:
    conn = cloud.sdk()
    project = conn.identity.create_project(name=unique("team"), domain_id="default")
    users = {}
    for name, role in (("alice", "member"), ("bob", "reader")):
        user = conn.identity.create_user(name=unique(name), password=PASSWORD, domain_id="default")
        conn.identity.assign_project_role_to_user(project, user, conn.identity.find_role(role))
        users[name] = user
    conn.close()
    tokens = {n: cloud.token(u.name, PASSWORD, project=project.name) for n, u in users.items()}
    return Team(project.id, users["alice"].id, users["bob"].id, tokens["alice"], tokens["bob"])


@pytest.fixture(scope="module")
def demo(cloud: CloudRunner) -> str:
    return cloud.token("demo", project="demo")


@pytest.fixture(autouse=True)
def no_acl_left(owner: httpx.Client):
    """Each test starts from an account that shares nothing."""
    yield
    owner.post("", headers={"X-Remove-Account-Access-Control": "x"})


def set_acl(cloud: CloudRunner, acl: dict) -> None:
    swift(cloud, "post", "-H", f"X-Account-Access-Control: {json.dumps(acl)}")


def as_user(owner: httpx.Client, token: str) -> httpx.Client:
    """Another user's client on the owner's account URL."""
    return httpx.Client(base_url=owner.base_url, headers={"X-Auth-Token": token}, timeout=60)


def swift_as_demo(
    cloud: CloudRunner, owner: httpx.Client, *args: str
) -> subprocess.CompletedProcess:
    """The demo user's `swift` CLI pointed at the owner's account (--os-storage-url)."""
    url = str(owner.base_url).rstrip("/")
    return subprocess.run(
        [str(VENV_BIN / "swift"), "--os-storage-url", url, *args],
        capture_output=True,
        text=True,
        env=swift_env(cloud, "demo"),
        timeout=300,
    )


def stored_acl(owner: httpx.Client) -> dict | None:
    value = owner.head("").headers.get("X-Account-Access-Control")
    return None if value is None else json.loads(value)


def shared_container(owner: httpx.Client) -> str:
    name = unique("shared")
    assert owner.put(f"/{name}").status_code == 201
    assert owner.put(f"/{name}/report.txt", content=b"quarterly").status_code == 201
    return name


def test_info_advertises_account_acls(cloud: CloudRunner):
    info = httpx.get(f"http://127.0.0.1:{cloud.config.ports.object_store}/info").json()
    assert info["keystoneauth"] == {"account_acls": True}


def test_a_read_only_project_lists_and_reads_everything_but_writes_nothing(
    cloud: CloudRunner, owner: httpx.Client, team: Team
):
    name = shared_container(owner)
    set_acl(cloud, {"read-only": [team.project_id]})
    assert "X-Account-Access-Control" in swift(cloud, "stat")
    assert stored_acl(owner) == {"read-only": [team.project_id]}

    # Any user with a role in the project, a plain reader too.
    for token in (team.alice, team.bob):
        with as_user(owner, token) as reader:
            listing = reader.get("", params={"format": "json"})
            assert listing.status_code == 200
            assert name in [c["name"] for c in listing.json()]
            head = reader.head("")
            assert head.status_code == 204
            assert "X-Account-Access-Control" not in head.headers
            assert reader.get(f"/{name}").text == "report.txt\n"
            assert reader.head(f"/{name}").status_code == 204
            assert reader.get(f"/{name}/report.txt").content == b"quarterly"
            assert reader.get(f"/{unique('missing')}").status_code == 404

            assert reader.put(f"/{name}/new.txt", content=b"x").status_code == 403
            assert reader.put(f"/{name}/report.txt", content=b"x").status_code == 403
            assert reader.post(f"/{name}/report.txt").status_code == 403
            assert reader.delete(f"/{name}/report.txt").status_code == 403
            copy = reader.request(
                "COPY", f"/{name}/report.txt", headers={"Destination": f"{name}/c"}
            )
            assert copy.status_code == 403
            assert reader.put(f"/{unique('made')}").status_code == 403
            assert reader.post(f"/{name}", headers={"X-Container-Meta-A": "b"}).status_code == 403
            assert reader.delete(f"/{name}").status_code == 403
            assert reader.post("", headers={"X-Account-Meta-Color": "red"}).status_code == 403
    assert owner.get(f"/{name}/report.txt").content == b"quarterly"
    assert owner.get(f"/{name}").text == "report.txt\n"


def test_read_only_through_the_swift_cli_and_openstacksdk(
    cloud: CloudRunner, owner: httpx.Client, demo: str, tmp_path: Path
):
    name = shared_container(owner)
    demo_project = httpx.get(
        f"{cloud.auth_url}/auth/tokens", headers={"X-Auth-Token": demo, "X-Subject-Token": demo}
    ).json()["token"]["project"]["id"]
    denied = swift_as_demo(cloud, owner, "list")
    assert denied.returncode != 0 and "403" in denied.stderr

    set_acl(cloud, {"read-only": [demo_project]})
    assert name in swift_as_demo(cloud, owner, "list").stdout.split()
    assert swift_as_demo(cloud, owner, "list", name).stdout == "report.txt\n"
    out = tmp_path / "copy.txt"
    got = swift_as_demo(cloud, owner, "download", name, "report.txt", "-o", str(out))
    assert got.returncode == 0 and out.read_bytes() == b"quarterly"
    (tmp_path / "up.txt").write_bytes(b"nope")
    upload = swift_as_demo(cloud, owner, "upload", name, str(tmp_path / "up.txt"))
    assert upload.returncode != 0

    from openstack.config.loader import OpenStackConfig
    from openstack.connection import Connection

    config = OpenStackConfig(
        config_files=[str(cloud.state_dir / "clouds.yaml")], load_envvars=False
    )
    region = config.get_one(
        cloud="cumulo-demo", object_store_endpoint_override=str(owner.base_url).rstrip("/")
    )
    conn = Connection(config=region)
    try:
        assert name in [c.name for c in conn.object_store.containers()]
        assert [o.name for o in conn.object_store.objects(name)] == ["report.txt"]
        assert conn.object_store.download_object("report.txt", container=name) == b"quarterly"
    finally:
        conn.close()


def test_a_read_write_user_changes_containers_and_objects_but_not_the_account(
    cloud: CloudRunner, owner: httpx.Client, team: Team
):
    name = shared_container(owner)
    set_acl(cloud, {"read-write": [f"{team.project_id}:{team.alice_id}"]})
    with as_user(owner, team.alice) as writer:
        assert writer.put(f"/{name}/report.txt", content=b"revised").status_code == 201
        assert writer.put(f"/{name}/notes.txt", content=b"n").status_code == 201
        assert (
            writer.post(f"/{name}/notes.txt", headers={"X-Object-Meta-K": "v"}).status_code == 202
        )
        copy = writer.request("COPY", f"/{name}/notes.txt", headers={"Destination": f"{name}/n2"})
        assert copy.status_code == 201
        assert writer.delete(f"/{name}/n2").status_code == 204
        # Containers too: made, changed, emptied and deleted.
        made = unique("made")
        assert writer.put(f"/{made}", headers={"X-Container-Meta-By": "alice"}).status_code == 201
        assert writer.put(f"/{made}/o", content=b"1").status_code == 201
        assert writer.post(f"/{made}", headers={"X-Container-Meta-By": "bob"}).status_code == 204
        assert writer.head(f"/{made}").headers["X-Container-Meta-By"] == "bob"
        assert writer.delete(f"/{made}/o").status_code == 204
        assert writer.delete(f"/{made}").status_code == 204
        # Privileged headers are the owner's: dropped (as Swift), never shown.
        grant = {"X-Container-Read": ".r:*", "X-Container-Meta-Temp-Url-Key": "k"}
        assert writer.post(f"/{name}", headers=grant).status_code == 204
        assert writer.put(f"/{unique('acl')}", headers=grant).status_code == 201
        assert owner.head(f"/{name}").headers.get("X-Container-Read") is None
        assert owner.head(f"/{name}").headers.get("X-Container-Meta-Temp-Url-Key") is None
        # The account itself is read-only to them.
        assert writer.get("").status_code == 200
        assert writer.post("", headers={"X-Account-Meta-Color": "red"}).status_code == 403
        assert "X-Account-Meta-Color" not in owner.head("").headers
        assert writer.put("").status_code == 403
        refused = writer.post("", headers={"X-Account-Access-Control": '{"admin":["x"]}'})
        assert refused.status_code == 403
    assert stored_acl(owner) == {"read-write": [f"{team.project_id}:{team.alice_id}"]}
    assert owner.get(f"/{name}/report.txt").content == b"revised"
    # The grant named alice only: bob, in the same project, gets nothing.
    with as_user(owner, team.bob) as other:
        assert other.get("").status_code == 403
        assert other.get(f"/{name}/report.txt").status_code == 403


def test_an_admin_grantee_is_an_owner_and_may_share_further(
    cloud: CloudRunner, owner: httpx.Client, team: Team, demo: str
):
    name = shared_container(owner)
    owner.post("", headers={"X-Account-Meta-Temp-Url-Key": "owners-key"})
    set_acl(cloud, {"admin": [team.bob_id], "read-only": [team.project_id]})
    with as_user(owner, team.bob) as admin:
        head = admin.head("")
        assert json.loads(head.headers["X-Account-Access-Control"])["admin"] == [team.bob_id]
        assert head.headers["X-Account-Meta-Temp-Url-Key"] == "owners-key"
        assert admin.post(f"/{name}", headers={"X-Container-Read": ".r:*"}).status_code == 204
        assert admin.head(f"/{name}").headers["X-Container-Read"] == ".r:*"
        assert admin.post("", headers={"X-Account-Meta-Color": "blue"}).status_code == 204
        # Quotas stay the reseller admin's.
        assert admin.post("", headers={"X-Account-Quota-Bytes": "10"}).status_code == 403
        shared = {"admin": [team.bob_id], "read-write": ["*:" + team.alice_id]}
        acl = admin.post("", headers={"X-Account-Access-Control": json.dumps(shared)})
        assert acl.status_code == 204
    with as_user(owner, team.alice) as writer:
        assert "X-Account-Meta-Temp-Url-Key" not in writer.head("").headers
        assert writer.put(f"/{name}/from-alice", content=b"a").status_code == 201
    assert stored_acl(owner) == {"admin": [team.bob_id], "read-write": ["*:" + team.alice_id]}
    with as_user(owner, demo) as stranger:
        assert stranger.head("").status_code == 403
    owner.post("", headers={"X-Remove-Account-Meta-Temp-Url-Key": "x"})


def test_others_cannot_set_the_acl(cloud: CloudRunner, owner: httpx.Client, demo: str):
    set_acl(cloud, {"read-only": ["someone"]})
    with as_user(owner, demo) as stranger:
        mine = json.dumps({"admin": ["*"]})
        assert stranger.post("", headers={"X-Account-Access-Control": mine}).status_code == 403
        removed = stranger.post("", headers={"X-Remove-Account-Access-Control": "x"})
        assert removed.status_code == 403
    anonymous = httpx.post(
        str(owner.base_url).rstrip("/"), headers={"X-Account-Access-Control": mine}
    )
    assert anonymous.status_code == 401
    assert stored_acl(owner) == {"read-only": ["someone"]}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("{not json", "Syntax error in input"),
        ('["admin"]', "Syntax error in input"),
        ('{"owner": ["x"]}', 'Key "owner" not recognized'),
        ('{"read-only": "x"}', 'Value for key "read-only" must be a list'),
        ('{"admin": [1]}', 'Elements of "admin" list must be strings'),
    ],
)
def test_a_bad_acl_is_400_and_changes_nothing(
    cloud: CloudRunner, owner: httpx.Client, value: str, why: str
):
    set_acl(cloud, {"read-only": ["kept"]})
    answer = owner.post("", headers={"X-Account-Access-Control": value, "X-Account-Meta-A": "b"})
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.text.startswith(f"X-Account-Access-Control invalid: {why}")
    assert stored_acl(owner) == {"read-only": ["kept"]}
    assert "X-Account-Meta-A" not in owner.head("").headers


def test_the_swift_cli_reports_a_bad_acl(cloud: CloudRunner, owner: httpx.Client):
    with pytest.raises(AssertionError, match="400"):
        swift(cloud, "post", "-H", "X-Account-Access-Control: read-only=everyone")
    assert stored_acl(owner) is None


def test_removing_the_acl_revokes_access(cloud: CloudRunner, owner: httpx.Client, demo: str):
    name = shared_container(owner)
    with as_user(owner, demo) as user:
        for remove in (
            {"X-Remove-Account-Access-Control": "x"},
            {"X-Account-Access-Control": ""},
            {"X-Account-Access-Control": '{"read-only": []}'},
        ):
            set_acl(cloud, {"read-write": ["demo:demo"]})  # names, as in container ACLs
            assert user.get(f"/{name}/report.txt").status_code == 200
            assert owner.post("", headers=remove).status_code == 204
            assert stored_acl(owner) is None
            assert user.get(f"/{name}/report.txt").status_code == 403
            assert user.get("").status_code == 403
            assert user.put(f"/{name}/late", content=b"x").status_code == 403
    assert "Access-Control" not in swift(cloud, "stat")


def test_anyone_signed_in_is_never_anyone_at_all(
    cloud: CloudRunner, owner: httpx.Client, demo: str
):
    name = shared_container(owner)
    set_acl(cloud, {"read-only": ["*"]})
    with as_user(owner, demo) as user:
        assert user.get(f"/{name}/report.txt").content == b"quarterly"
        assert user.put(f"/{name}/x", content=b"x").status_code == 403
    url = str(owner.base_url).rstrip("/")
    assert httpx.get(f"{url}/{name}/report.txt").status_code == 401
    assert httpx.get(url).status_code == 401


def test_container_acls_still_work_beside_an_account_acl(
    cloud: CloudRunner, owner: httpx.Client, team: Team
):
    name = shared_container(owner)
    set_acl(cloud, {"read-only": [team.project_id]})
    assert (
        owner.post(f"/{name}", headers={"X-Container-Write": f"{team.project_id}:*"}).status_code
        == 204
    )
    with as_user(owner, team.bob) as user:
        # Read from the account's ACL, write from the container's.
        assert user.put(f"/{name}/both", content=b"b").status_code == 201
        assert user.get(f"/{name}/both").content == b"b"
        assert "X-Container-Write" not in user.head(f"/{name}").headers
        assert user.delete(f"/{name}").status_code == 403


def test_names_count_only_in_the_default_domain(
    cloud: CloudRunner, owner: httpx.Client, team: Team
):
    """A grant by names reaches the default domain's project and user, never a project
    and user of the same names in another domain (as Swift's keystoneauth)."""
    name = shared_container(owner)
    conn = cloud.sdk()
    project = conn.identity.get_project(team.project_id)
    alice = conn.identity.get_user(team.alice_id)
    domain = conn.identity.create_domain(name=unique("elsewhere"))
    twin_project = conn.identity.create_project(name=project.name, domain_id=domain.id)
    twin = conn.identity.create_user(name=alice.name, password=PASSWORD, domain_id=domain.id)
    conn.identity.assign_project_role_to_user(twin_project, twin, conn.identity.find_role("member"))
    conn.close()
    twin_token = httpx.post(
        f"{cloud.auth_url}/auth/tokens",
        json=password_auth(
            {"name": alice.name, "domain": {"id": domain.id}},
            PASSWORD,
            {"project": {"name": project.name, "domain": {"id": domain.id}}},
        ),
    ).headers["X-Subject-Token"]

    set_acl(cloud, {"read-only": [f"{project.name}:{alice.name}"]})
    with as_user(owner, team.alice) as reader:
        assert reader.get(f"/{name}/report.txt").content == b"quarterly"
    with as_user(owner, twin_token) as other:
        assert other.get(f"/{name}/report.txt").status_code == 403
        assert other.get("").status_code == 403
