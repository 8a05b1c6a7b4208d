"""Large objects and TempURLs with the real clients: `swift upload --segment-size` of a 50 MiB file
as a Static and as a Dynamic Large Object, read back identical; manifests by hand
(ranges of segments, a manifest inside a manifest, ?multipart-manifest=get/delete);
manifests naming segments that are missing or that the caller cannot read."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.functional.object_store_helpers import (
    admin_http_fixture,
    policy_cloud_fixture,
    swift,
    unique,
)

cloud = policy_cloud_fixture("object-large")
http = admin_http_fixture()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(os.urandom(50 << 20))
    return path


@pytest.mark.parametrize("kind", ["slo", "dlo"])
def test_swift_upload_with_segments_reads_back_identical(cloud, http, big_file, kind, tmp_path):
    name = unique(kind)
    flag = "--use-slo" if kind == "slo" else "--use-dlo"
    swift(
        cloud,
        "upload",
        name,
        big_file.name,
        "--segment-size",
        str(10 << 20),
        flag,
        cwd=big_file.parent,
    )
    head = http.head(f"/{name}/{big_file.name}")
    assert head.headers["Content-Length"] == str(50 << 20)
    if kind == "slo":
        assert head.headers["X-Static-Large-Object"] == "True"
    else:
        assert head.headers["X-Object-Manifest"].startswith(f"{name}_segments/")
    assert len(http.get(f"/{name}_segments").text.split()) == 5
    swift(cloud, "download", name, big_file.name, "-o", str(tmp_path / "back"))
    assert (
        hashlib.md5((tmp_path / "back").read_bytes()).digest()
        == hashlib.md5(big_file.read_bytes()).digest()
    )
    ranged = http.get(f"/{name}/{big_file.name}", headers={"Range": "bytes=10485750-10485769"})
    with big_file.open("rb") as f:
        f.seek(10485750)
        assert ranged.content == f.read(20)
    swift(cloud, "delete", name, big_file.name)
    assert http.get(f"/{name}_segments").status_code == 204


def test_manifests_by_hand_ranges_nesting_and_manifest_get(http):
    name = unique("manual")
    http.put(f"/{name}")
    parts = {"a": b"A" * 10, "b": b"B" * 10, "c": b"C" * 10}
    etags = {k: http.put(f"/{name}/{k}", content=v).headers["ETag"] for k, v in parts.items()}
    inner = [
        {"path": f"/{name}/a", "etag": etags["a"], "size_bytes": 10},
        {"path": f"/{name}/b", "range": "2-4"},
    ]
    r = http.put(f"/{name}/inner", params={"multipart-manifest": "put"}, content=json.dumps(inner))
    assert r.status_code == 201
    expected_etag = hashlib.md5(f"{etags['a']}{etags['b']}:2-4;".encode()).hexdigest()
    assert r.headers["ETag"] == f'"{expected_etag}"'
    assert http.get(f"/{name}/inner").content == b"A" * 10 + b"BBB"
    outer = [{"path": f"/{name}/inner"}, {"path": f"/{name}/c", "range": "-2"}]
    assert (
        http.put(
            f"/{name}/outer", params={"multipart-manifest": "put"}, content=json.dumps(outer)
        ).status_code
        == 201
    )
    assert http.get(f"/{name}/outer").content == b"A" * 10 + b"BBB" + b"CC"
    listing = {o["name"]: o for o in http.get(f"/{name}", params={"format": "json"}).json()}
    assert listing["outer"]["bytes"] == 15
    got = http.get(f"/{name}/inner", params={"multipart-manifest": "get"}).json()
    assert [s["name"] for s in got] == [f"/{name}/a", f"/{name}/b"]
    raw = http.get(f"/{name}/inner", params={"multipart-manifest": "get", "format": "raw"})
    assert raw.json()[1]["range"] == "2-4"
    deleted = http.delete(
        f"/{name}/outer",
        params={"multipart-manifest": "delete"},
        headers={"Accept": "application/json"},
    ).json()
    assert deleted["Number Deleted"] == 5 and deleted["Errors"] == []
    assert http.get(f"/{name}").status_code == 204


def test_bad_manifests_are_refused_and_leave_nothing(cloud, http):
    name = unique("badslo")
    http.put(f"/{name}")
    http.put(f"/{name}/seg", content=b"data")
    missing = [{"path": f"/{name}/nope"}, {"path": f"/{name}/seg", "etag": "0" * 32}]
    r = http.put(f"/{name}/m", params={"multipart-manifest": "put"}, content=json.dumps(missing))
    assert r.status_code == 400
    assert f"/{name}/nope, 404 Not Found" in r.text and "Etag Mismatch" in r.text
    assert http.head(f"/{name}/m").status_code == 404
    assert (
        http.put(
            f"/{name}/m", params={"multipart-manifest": "put"}, content=b"not json"
        ).status_code
        == 400
    )
    reserved = http.put(f"/{name}/m", content=b"x", headers={"X-Static-Large-Object": "true"})
    assert reserved.status_code == 400
    # The demo user may write into one of the admin's containers, not read another:
    # a manifest there naming the unreadable segment is refused, nothing is left.
    up = unique("dropbox")
    http.put(f"/{up}", headers={"X-Container-Write": "demo:demo"})
    demo = cloud.token("demo", project="demo")
    url = str(http.base_url).rstrip("/")
    headers = {"X-Auth-Token": demo}
    assert httpx.put(f"{url}/{up}/ok", content=b"x", headers=headers).status_code == 201
    r = httpx.put(
        f"{url}/{up}/m",
        params={"multipart-manifest": "put"},
        content=json.dumps([{"path": f"/{name}/seg"}]),
        headers=headers,
    )
    assert r.status_code == 400 and f"/{name}/seg, 403 Forbidden" in r.text
    assert http.head(f"/{up}/m").status_code == 404


def test_tempurls_from_the_swift_cli_work_expire_and_refuse_tampering(cloud, http):
    name = unique("shared")
    http.put(f"/{name}")
    http.put(
        f"/{name}/report.pdf", content=b"%PDF quarterly", headers={"X-Object-Meta-Secret": "s"}
    )
    http.post("", headers={"X-Account-Meta-Temp-URL-Key": "account-key"})
    http.post(f"/{name}", headers={"X-Container-Meta-Temp-URL-Key": "container-key"})
    base = f"http://127.0.0.1:{cloud.config.ports.object_store}"
    path = f"{urlparse(str(http.base_url)).path.rstrip('/')}/{name}/report.pdf"
    for key, digest, extra in (
        ("account-key", "sha256", []),
        ("container-key", "sha512", ["--iso8601"]),
        ("account-key", "sha1", []),
    ):
        url = swift(cloud, "tempurl", "--digest", digest, *extra, "GET", "60", path, key).strip()
        got = httpx.get(base + url)
        assert got.status_code == 200 and got.content == b"%PDF quarterly"
        assert got.headers["Content-Disposition"].startswith('attachment; filename="report.pdf"')
        assert "X-Object-Meta-Secret" not in got.headers
        # Signed for GET: not for DELETE.
        assert httpx.delete(base + url).status_code == 401
    tampered = url.replace("report.pdf", "report.pdx")
    assert httpx.get(base + tampered).status_code == 401
    bad_sig = httpx.get(base + url[:-4] + "0000")
    assert bad_sig.status_code == 401 and bad_sig.text == "401 Unauthorized: Temp URL invalid\n"
    short = swift(cloud, "tempurl", "GET", "1", path, "account-key").strip()
    time.sleep(2.1)
    assert httpx.get(base + short).status_code == 401
    # A prefix URL opens every object under the prefix, and PUT URLs write.
    prefix = swift(
        cloud,
        "tempurl",
        "--prefix-based",
        "PUT",
        "60",
        f"{urlparse(str(http.base_url)).path.rstrip('/')}/{name}/in/",
        "account-key",
    ).strip()
    split = urlparse(prefix)
    put = httpx.put(f"{base}{split.path}drop.txt?{split.query}", content=b"dropped")
    assert put.status_code == 201
    assert http.get(f"/{name}/in/drop.txt").content == b"dropped"
    assert httpx.get(f"{base}{split.path}drop.txt?{split.query}").status_code == 401
    info = httpx.get(f"{base}/info").json()
    assert set(info["tempurl"]["allowed_digests"]) == {"sha1", "sha256", "sha512"}
