"""Object Storage (Swift v1) as a new user meets it: the `openstack` CLI, the `swift`
CLI, openstacksdk and plain HTTP against a cloud with storage policies."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.cloudrunner import CloudRunner
from tests.functional.object_store_helpers import (
    INFO_ADMIN_KEY,
    account_client,
    policy_cloud_fixture,
    replica_files,
    storage_url,
    swift,
    unique,
)

cloud = policy_cloud_fixture("object-store")


@pytest.fixture(scope="module")
def token(cloud: CloudRunner) -> str:
    return cloud.token("admin")


@pytest.fixture(scope="module")
def http(cloud: CloudRunner, token: str):
    with account_client(cloud, token) as client:
        yield client


def test_openstack_cli_containers_and_objects_round_trip(cloud: CloudRunner, tmp_path: Path):
    name = unique("docs")
    data = os.urandom(300_000)
    (tmp_path / "report.bin").write_bytes(data)
    created = cloud.openstack("container", "create", name, "-f", "json")
    assert created[0]["container"] == name
    assert name in [c["Name"] for c in cloud.openstack("container", "list", "-f", "json")]
    env = {"PWD": str(tmp_path)}
    os.chdir(tmp_path)
    obj = cloud.openstack("object", "create", name, "report.bin", "-f", "json", env=env)
    assert obj[0]["etag"] == hashlib.md5(data).hexdigest()
    assert [o["Name"] for o in cloud.openstack("object", "list", name, "-f", "json")] == [
        "report.bin"
    ]
    shown = cloud.openstack("object", "show", name, "report.bin", "-f", "json")
    assert shown["content-length"] == str(len(data))
    assert shown["content-type"] == "application/octet-stream"
    cloud.openstack("object", "save", name, "report.bin", "--file", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    container = cloud.openstack("container", "show", name, "-f", "json")
    assert container["object_count"] == "1" and container["bytes_used"] == str(len(data))
    assert container["storage_policy"] == "gold"
    account = cloud.openstack("object", "store", "account", "show", "-f", "json")
    assert int(account["Objects"]) >= 1 and int(account["Bytes"]) >= len(data)
    # A container with objects is not deleted (409); emptied, it goes.
    refused = cloud.openstack("container", "delete", name, check=False)
    assert refused.returncode != 0
    cloud.openstack("object", "delete", name, "report.bin")
    cloud.openstack("container", "delete", name)
    assert name not in [c["Name"] for c in cloud.openstack("container", "list", "-f", "json")]


def test_swift_cli_upload_download_stat(cloud: CloudRunner, tmp_path: Path):
    name = unique("swiftcli")
    data = os.urandom(2_000_000)
    (tmp_path / "blob").write_bytes(data)
    swift(cloud, "upload", name, "blob", cwd=tmp_path)
    assert swift(cloud, "list", name).split() == ["blob"]
    stat = swift(cloud, "stat", name, "blob")
    assert hashlib.md5(data).hexdigest() in stat and "2000000" in stat
    swift(cloud, "download", name, "blob", "-o", str(tmp_path / "copy"))
    assert (tmp_path / "copy").read_bytes() == data
    swift(cloud, "post", name, "-m", "color:blue")
    assert "Meta Color: blue" in swift(cloud, "stat", name)


def test_openstacksdk_objects(cloud: CloudRunner):
    conn = cloud.sdk()
    name = unique("sdk")
    conn.object_store.create_container(name=name)
    conn.object_store.upload_object(container=name, name="a/b.txt", data=b"hello sdk")
    assert conn.object_store.download_object("a/b.txt", container=name) == b"hello sdk"
    names = [o.name for o in conn.object_store.objects(name)]
    assert names == ["a/b.txt"]
    conn.object_store.delete_object("a/b.txt", container=name)
    conn.object_store.delete_container(name)


def test_a_policy_keeps_as_many_copies_on_disk_as_its_replicas(cloud, http):
    for policy, index, copies in (("bronze", 1, 2), ("gold", 0, 3)):
        name = unique(policy)
        assert http.put(f"/{name}", headers={"X-Storage-Policy": policy}).status_code == 201
        assert http.head(f"/{name}").headers["X-Storage-Policy"] == policy
        before = set(replica_files(cloud, index))
        assert http.put(f"/{name}/thing", content=b"x" * 1000).status_code == 201
        new = set(replica_files(cloud, index)) - before
        assert len(new) == copies
        assert len({p.parts[-6] for p in new}) == copies  # on different devices


def test_storage_policy_is_fixed_at_creation(http):
    name = unique("fixed")
    assert http.put(f"/{name}", headers={"X-Storage-Policy": "bronze"}).status_code == 201
    again = http.put(f"/{name}", headers={"X-Storage-Policy": "gold"})
    assert again.status_code == 409
    assert http.put(f"/{name}").status_code == 202
    assert http.head(f"/{name}").headers["X-Storage-Policy"] == "bronze"
    unknown = http.put(f"/{unique('x')}", headers={"X-Storage-Policy": "platinum"})
    assert unknown.status_code == 400 and "platinum" in unknown.text
    deprecated = http.put(f"/{unique('x')}", headers={"X-Storage-Policy": "old"})
    assert deprecated.status_code == 400


def test_info_lists_policies_and_limits(cloud: CloudRunner):
    info = httpx.get(f"http://127.0.0.1:{cloud.config.ports.object_store}/info").json()
    assert info["swift"]["policies"] == [
        {"name": "gold", "aliases": "gold", "default": True},
        {"name": "bronze", "aliases": "bronze"},
    ]
    assert info["swift"]["max_object_name_length"] == 1024
    for feature in (
        "slo",
        "dlo",
        "tempurl",
        "bulk_delete",
        "bulk_upload",
        "crossdomain",
        "formpost",
        "staticweb",
    ):
        assert feature in info
    assert info["symlink"] == {"symloop_max": 2, "static_links": True}
    assert "CUMULO" in info["container_sync"]["realms"]  # the realm `cumulo init` made
    policy = httpx.get(f"http://127.0.0.1:{cloud.config.ports.object_store}/crossdomain.xml")
    assert policy.text.endswith("</cross-domain-policy>")
    assert "admin" not in info


def test_info_shows_the_admin_section_to_signed_requests(cloud: CloudRunner):
    url = f"http://127.0.0.1:{cloud.config.ports.object_store}/info"

    def signed(expires: int, key: str = INFO_ADMIN_KEY) -> dict[str, str]:
        message = f"GET\n{expires}\n/info".encode()
        sig = hmac.new(key.encode(), message, hashlib.sha1).hexdigest()
        return {"swiftinfo_sig": sig, "swiftinfo_expires": str(expires)}

    later = int(time.time()) + 60
    info = httpx.get(url, params=signed(later)).json()
    assert info["admin"]["disallowed_sections"] == []
    devices = info["admin"]["rings"]["object-0"]["devices"]
    assert {d["device"] for d in devices} == {"d0", "d1", "d2"}
    assert "swift" in info  # and everything else, as for anyone
    assert httpx.get(url, params=signed(later, "wrong-key")).status_code == 401
    assert httpx.get(url, params=signed(int(time.time()) - 1)).status_code == 401
    assert (
        httpx.get(url, params={"swiftinfo_sig": "x", "swiftinfo_expires": "soon"}).status_code
        == 401
    )


def test_listings_in_text_json_and_xml_with_prefix_delimiter_markers(http):
    name = unique("list")
    http.put(f"/{name}")
    for obj in ("a/1", "a/2", "b/1", "c", "d"):
        assert http.put(f"/{name}/{obj}", content=obj.encode()).status_code == 201
    assert http.get(f"/{name}").text == "a/1\na/2\nb/1\nc\nd\n"
    listing = http.get(f"/{name}", params={"format": "json", "delimiter": "/"}).json()
    assert [e.get("subdir") or e["name"] for e in listing] == ["a/", "b/", "c", "d"]
    item = http.get(f"/{name}", params={"format": "json", "prefix": "c"}).json()[0]
    assert set(item) == {"hash", "last_modified", "bytes", "name", "content_type"}
    assert item["hash"] == hashlib.md5(b"c").hexdigest() and item["bytes"] == 1
    page = http.get(f"/{name}", params={"marker": "a/2", "limit": 2}).text
    assert page == "b/1\nc\n"
    assert http.get(f"/{name}", params={"end_marker": "b"}).text == "a/1\na/2\n"
    assert http.get(f"/{name}", params={"reverse": "true", "limit": 2}).text == "d\nc\n"
    assert http.get(f"/{name}", params={"path": "a"}).text == "a/1\na/2\n"
    xml = http.get(f"/{name}", params={"format": "xml", "prefix": "a/"}).text
    assert f'<container name="{name}">' in xml and "<name>a/1</name>" in xml
    empty = http.get(f"/{name}", params={"prefix": "zzz"})
    assert empty.status_code == 204
    assert http.get(f"/{name}", params={"prefix": "zzz", "format": "json"}).json() == []
    assert http.get(f"/{name}", params={"limit": 10001}).status_code == 412
    # The account hears of object updates in batches, a moment later (as in Swift).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        containers = http.get("", params={"format": "json", "prefix": name}).json()
        if containers[0]["count"] == 5:
            break
        time.sleep(0.1)
    assert containers[0]["name"] == name and containers[0]["count"] == 5


def test_object_metadata_post_replaces_and_remove_headers(http):
    name = unique("meta")
    http.put(f"/{name}", headers={"X-Container-Meta-Owner": "ops"})
    assert http.head(f"/{name}").headers["X-Container-Meta-Owner"] == "ops"
    http.post(f"/{name}", headers={"X-Remove-Container-Meta-Owner": "x"})
    assert "X-Container-Meta-Owner" not in http.head(f"/{name}").headers
    http.put(f"/{name}/o", content=b"data", headers={"X-Object-Meta-One": "1"})
    assert http.post(f"/{name}/o", headers={"X-Object-Meta-Two": "2"}).status_code == 202
    head = http.head(f"/{name}/o").headers
    assert head["X-Object-Meta-Two"] == "2" and "X-Object-Meta-One" not in head
    assert http.get(f"/{name}/o").content == b"data"
    http.post("", headers={"X-Account-Meta-Team": "blue"})
    assert http.head("").headers["X-Account-Meta-Team"] == "blue"


def test_ranges_conditionals_and_copies(http):
    name = unique("ranges")
    http.put(f"/{name}")
    body = bytes(range(256)) * 4
    etag = http.put(f"/{name}/o", content=body).headers["ETag"]
    r = http.get(f"/{name}/o", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == body[10:20]
    assert r.headers["Content-Range"] == "bytes 10-19/1024"
    assert http.get(f"/{name}/o", headers={"Range": "bytes=-4"}).content == body[-4:]
    multi = http.get(f"/{name}/o", headers={"Range": "bytes=0-1,5-6"})
    assert multi.status_code == 206
    assert multi.headers["Content-Type"].startswith("multipart/byteranges")
    assert body[0:2] in multi.content and body[5:7] in multi.content
    bad = http.get(f"/{name}/o", headers={"Range": "bytes=5000-"})
    assert bad.status_code == 416 and bad.headers["Content-Range"] == "bytes */1024"
    assert http.get(f"/{name}/o", headers={"If-None-Match": etag}).status_code == 304
    assert http.get(f"/{name}/o", headers={"If-Match": '"nope"'}).status_code == 412
    last = http.head(f"/{name}/o").headers["Last-Modified"]
    assert http.get(f"/{name}/o", headers={"If-Modified-Since": last}).status_code == 304
    put_again = http.put(f"/{name}/o", content=b"x", headers={"If-None-Match": "*"})
    assert put_again.status_code == 412
    copied = http.request("COPY", f"/{name}/o", headers={"Destination": f"{name}/o2"})
    assert copied.status_code == 201 and copied.headers["X-Copied-From"] == f"{name}/o"
    assert http.get(f"/{name}/o2").content == body
    from_put = http.put(f"/{name}/o3", headers={"X-Copy-From": f"/{name}/o"})
    assert from_put.status_code == 201
    assert http.get(f"/{name}/o3").content == body


def test_chunked_upload_content_type_detection_and_etag_check(http):
    name = unique("chunks")
    http.put(f"/{name}")

    def chunks():
        yield b"part one, "
        yield b"part two"

    r = http.put(f"/{name}/page.html", content=chunks())
    assert r.status_code == 201
    got = http.get(f"/{name}/page.html")
    assert got.content == b"part one, part two"
    assert got.headers["Content-Type"].startswith("text/html")
    wrong = http.put(f"/{name}/bad", content=b"abc", headers={"ETag": "0" * 32})
    assert wrong.status_code == 422
    assert http.head(f"/{name}/bad").status_code == 404


def test_delete_after_expires_the_object(http):
    name = unique("expiring")
    http.put(f"/{name}")
    http.put(f"/{name}/soon", content=b"x", headers={"X-Delete-After": "3"})
    assert "X-Delete-At" in http.head(f"/{name}/soon").headers
    import time

    time.sleep(4.1)
    assert http.get(f"/{name}/soon").status_code == 404
    assert http.put(f"/{name}/past", content=b"x", headers={"X-Delete-At": "1"}).status_code == 400


def test_limits_are_refused_with_the_api_ref_status(http):
    name = unique("limits")
    http.put(f"/{name}")
    long_name = http.put(f"/{name}/{'n' * 1025}", content=b"x")
    assert long_name.status_code == 400
    assert long_name.text == "Object name length of 1025 longer than 1024"
    big_meta = http.put(f"/{name}/o", content=b"x", headers={"X-Object-Meta-K": "v" * 257})
    assert big_meta.status_code == 400 and "Metadata value longer than 256" in big_meta.text
    many = {f"X-Object-Meta-K{i}": "v" for i in range(91)}
    assert http.put(f"/{name}/o", content=b"x", headers=many).status_code == 400
    too_big = _raw_put(http, f"/{name}/o", {"Content-Length": "5368709123"})
    assert too_big.startswith(b"HTTP/1.1 413")
    assert http.put(f"/{name}/o", content=b"x").status_code == 201
    assert http.put(f"/{'c' * 257}").status_code == 400
    assert http.get(f"/{unique('missing')}").status_code == 404
    assert http.delete(f"/{name}/nothing").status_code == 404


def _raw_put(http: httpx.Client, path: str, headers: dict[str, str]) -> bytes:
    """A PUT whose headers announce a body it never sends (the answer comes first)."""
    url = httpx.URL(str(http.base_url).rstrip("/") + path)
    lines = [f"PUT {url.raw_path.decode()} HTTP/1.1", f"Host: {url.host}"]
    lines += [
        f"{k}: {v}" for k, v in {**headers, "X-Auth-Token": http.headers["X-Auth-Token"]}.items()
    ]
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return sock.recv(4096)


def test_tokens_and_other_projects(cloud: CloudRunner, http, token):
    name = unique("private")
    http.put(f"/{name}")
    http.put(f"/{name}/o", content=b"secret")
    url = str(http.base_url).rstrip("/")
    assert httpx.get(f"{url}/{name}/o").status_code == 401
    assert httpx.get(f"{url}/{name}/o", headers={"X-Auth-Token": "bogus"}).status_code == 401
    demo = cloud.token("demo", project="demo")
    assert httpx.get(f"{url}/{name}/o", headers={"X-Auth-Token": demo}).status_code == 403
    # The demo user owns its own account.
    demo_url = storage_url(cloud, demo)
    assert httpx.put(f"{demo_url}/mine", headers={"X-Auth-Token": demo}).status_code in (201, 202)


def test_container_acls_public_read_and_project_user_grants(cloud: CloudRunner, http):
    name = unique("public")
    http.put(f"/{name}")
    http.put(f"/{name}/index.txt", content=b"for everyone")
    url = str(http.base_url).rstrip("/")
    assert httpx.get(f"{url}/{name}/index.txt").status_code == 401
    swift(cloud, "post", name, "-r", ".r:*")
    assert httpx.get(f"{url}/{name}/index.txt").content == b"for everyone"
    assert httpx.get(f"{url}/{name}").status_code == 401  # listing needs .rlistings
    swift(cloud, "post", name, "-r", ".r:*,.rlistings")
    assert httpx.get(f"{url}/{name}").text == "index.txt\n"
    assert httpx.put(f"{url}/{name}/x", content=b"no").status_code == 401
    demo = cloud.token("demo", project="demo")
    headers = {"X-Auth-Token": demo}
    assert httpx.put(f"{url}/{name}/x", content=b"no", headers=headers).status_code == 403
    swift(cloud, "post", name, "-w", "demo:demo")
    assert httpx.put(f"{url}/{name}/x", content=b"yes", headers=headers).status_code == 201
    head = httpx.head(f"{url}/{name}", headers=headers)
    assert "X-Container-Read" not in head.headers


def test_json_account_listing_shape(http):
    body = http.get("", params={"format": "json", "limit": 1}).json()
    assert set(body[0]) == {"name", "count", "bytes", "last_modified"}
    assert json.loads(http.get("", params={"format": "json", "marker": "~"}).text) == []


def test_container_and_account_quotas_refuse_uploads_over_them(cloud, http):
    name = unique("quota")
    assert http.put(f"/{name}", headers={"X-Container-Meta-Quota-Bytes": "x"}).status_code == 400
    http.put(f"/{name}", headers={"X-Container-Meta-Quota-Bytes": "10"})
    assert http.put(f"/{name}/fits", content=b"12345").status_code == 201
    over = http.put(f"/{name}/over", content=b"1234567890")
    assert over.status_code == 413 and over.text == "Upload exceeds quota."
    assert http.head(f"/{name}/over").status_code == 404
    http.post(f"/{name}", headers={"X-Container-Meta-Quota-Count": "1"})
    assert http.put(f"/{name}/second", content=b"1").status_code == 413
    # Account quotas are set by a reseller admin only.
    assert http.post("", headers={"X-Account-Meta-Quota-Bytes": "1"}).status_code == 403


def test_per_policy_account_quotas(cloud, http):
    """X-Account-Quota-Bytes-Policy-<name>, set by a reseller admin (here the services'
    user, which holds that role), limits what the account keeps in that policy only."""
    reseller = cloud.token("cumulo", cloud.config.identity.service_password, "service")
    as_reseller = {"X-Auth-Token": reseller}
    # What the account keeps in bronze already (other tests' objects), plus 10 bytes.
    used = int(http.head("").headers.get("X-Account-Storage-Policy-bronze-Bytes-Used", "0"))
    quota = {"X-Account-Quota-Bytes-Policy-bronze": str(used + 10)}
    assert http.post("", headers=quota).status_code == 403  # the account's owner may not
    refused = http.post("", headers={**as_reseller, "X-Account-Quota-Bytes-Policy-tin": "1"})
    assert refused.status_code == 400
    assert http.post("", headers={**as_reseller, **quota}).status_code == 204
    cheap, dear = unique("bronze"), unique("gold")
    http.put(f"/{cheap}", headers={"X-Storage-Policy": "bronze"})
    http.put(f"/{dear}")
    over = http.put(f"/{cheap}/big", content=b"x" * 11)
    assert over.status_code == 413 and over.text == "Upload exceeds quota."
    assert http.put(f"/{cheap}/small", content=b"x" * 10).status_code == 201
    assert http.put(f"/{dear}/big", content=b"x" * 11).status_code == 201  # gold: no quota
    removed = {**as_reseller, "X-Remove-Account-Quota-Bytes-Policy-bronze": "x"}
    assert http.post("", headers=removed).status_code == 204
    assert http.put(f"/{cheap}/big", content=b"x" * 11).status_code == 201


def test_bulk_delete_and_swift_delete_of_a_whole_container(cloud, http):
    name = unique("bulk")
    http.put(f"/{name}")
    for obj in ("a", "b/c", "d e"):
        http.put(f"/{name}/{obj}", content=b"x")
    body = f"{name}/a\n{name}/b%2Fc\n{name}/missing\n"
    r = http.post(
        "", params={"bulk-delete": ""}, content=body, headers={"Accept": "application/json"}
    )
    result = r.json()
    assert result["Number Deleted"] == 2 and result["Number Not Found"] == 1
    assert result["Response Status"] == "200 OK"
    assert http.get(f"/{name}").text == "d e\n"
    swift(cloud, "delete", name)
    assert http.head(f"/{name}").status_code == 404


def answered_puts(url: httpx.URL) -> float:
    """The object store's PUTs counted in /metrics (each once it has ended)."""
    text = httpx.get(f"http://{url.host}:{url.port}/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cumulo_http_requests_total{") and 'method="PUT"' in line
    )


def test_a_put_cut_off_half_way_leaves_no_object(cloud, http):
    name = unique("cut")
    http.put(f"/{name}")
    before = set(replica_files(cloud))
    url = httpx.URL(str(http.base_url).rstrip("/") + f"/{name}/partial")
    head = (
        f"PUT {url.raw_path.decode()} HTTP/1.1\r\nHost: {url.host}\r\n"
        f"X-Auth-Token: {http.headers['X-Auth-Token']}\r\nContent-Length: 100000\r\n\r\n"
    )
    puts_before = answered_puts(url)
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"x" * 50_000)
    import time

    # The server learns of the cut at its next read and aborts the replicas' writers;
    # the request is counted once that is done (a loaded machine may not even have
    # started it when the socket closes).
    for _ in range(600):
        if answered_puts(url) > puts_before:
            break
        time.sleep(0.1)
    assert answered_puts(url) > puts_before
    assert http.head(f"/{name}/partial").status_code == 404
    assert set(replica_files(cloud)) == before
    assert not list((cloud.state_dir / "object-store" / "devices").glob("*/tmp/*"))
    assert http.get(f"/{name}").status_code == 204


def test_versioned_containers_keep_old_versions_stack_and_history(http):
    name, versions = unique("docs"), unique("docs-versions")
    http.put(f"/{versions}")
    both = {"X-Versions-Location": versions, "X-History-Location": versions}
    assert http.put(f"/{name}", headers=both).status_code == 400
    http.put(f"/{name}", headers={"X-Versions-Location": versions})
    for body in (b"v1", b"v2", b"v3"):
        assert http.put(f"/{name}/doc", content=body).status_code == 201
    kept = http.get(f"/{versions}").text.split()
    assert len(kept) == 2 and all(k.startswith("003doc/") for k in kept)
    assert http.get(f"/{name}/doc").content == b"v3"
    assert http.delete(f"/{name}/doc").status_code == 204
    assert http.get(f"/{name}/doc").content == b"v2"
    http.delete(f"/{name}/doc")
    assert http.get(f"/{name}/doc").content == b"v1"
    http.delete(f"/{name}/doc")
    assert http.get(f"/{name}/doc").status_code == 404
    # History mode: a delete archives the current version and nothing comes back.
    history = unique("history")
    http.put(f"/{history}", headers={"X-History-Location": versions})
    http.put(f"/{history}/log", content=b"one")
    http.put(f"/{history}/log", content=b"two")
    assert http.delete(f"/{history}/log").status_code == 204
    assert http.get(f"/{history}/log").status_code == 404
    archived = http.get(f"/{versions}", params={"prefix": "003log/"}).text.split()
    assert [http.get(f"/{versions}/{a}").content for a in archived] == [b"one", b"two"]
    missing = unique("nowhere")
    orphan = unique("orphan")
    http.put(f"/{orphan}", headers={"X-Versions-Location": missing})
    http.put(f"/{orphan}/x", content=b"1")
    assert http.put(f"/{orphan}/x", content=b"2").status_code == 412


def test_a_tar_upload_becomes_objects_in_containers_it_creates(http):
    import io
    import tarfile

    name = unique("tarball")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, data in ((f"{name}/a.txt", b"alpha"), (f"{name}/dir/b.txt", b"beta")):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = http.put(
        "",
        params={"extract-archive": "tar.gz"},
        content=buf.getvalue(),
        headers={"Accept": "application/json"},
    )
    result = r.json()
    assert result["Number Files Created"] == 2 and result["Response Status"] == "201 Created"
    assert http.get(f"/{name}").text == "a.txt\ndir/b.txt\n"
    assert http.get(f"/{name}/dir/b.txt").content == b"beta"
    bad = http.put(
        f"/{name}",
        params={"extract-archive": "tar"},
        content=b"not a tar",
        headers={"Accept": "application/json"},
    ).json()
    assert bad["Response Status"] == "400 Bad Request"
    assert http.put("", content=b"").status_code == 405


def test_a_signed_html_form_uploads_files_without_a_token(cloud, http):
    import hashlib as hl
    import hmac
    import time as t

    name = unique("forms")
    http.put(f"/{name}", headers={"X-Container-Meta-Temp-URL-Key": "form-key"})
    path = f"{httpx.URL(str(http.base_url)).path.rstrip('/')}/{name}/uploads/"
    expires = int(t.time()) + 60

    def form(key: str, expires: int) -> dict:
        body = f"{path}\n\n1000\n2\n{expires}"
        sig = hmac.new(key.encode(), body.encode(), hl.sha256).hexdigest()
        return {
            "redirect": "",
            "max_file_size": "1000",
            "max_file_count": "2",
            "expires": str(expires),
            "signature": sig,
        }

    url = f"http://127.0.0.1:{cloud.config.ports.object_store}{path}"
    files = {"file1": ("a.txt", b"from a browser", "text/plain")}
    r = httpx.post(url, data=form("form-key", expires), files=files)
    assert r.status_code == 201 and r.text == "201 Created"
    assert http.get(f"/{name}/uploads/a.txt").content == b"from a browser"
    bad = httpx.post(url, data=form("wrong-key", expires), files=files)
    assert bad.status_code == 401 and bad.text == "FormPost: Invalid Signature"
    old = httpx.post(url, data=form("form-key", expires - 3600), files=files)
    assert old.status_code == 401 and old.text == "FormPost: Form Expired"
    big = {"file1": ("big.bin", b"x" * 2000, "application/octet-stream")}
    assert httpx.post(url, data=form("form-key", expires), files=big).status_code == 400
