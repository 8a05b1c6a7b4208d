"""Vendor data as Nova's providers make it: the operator's static JSON file served as
vendor_data.json, and each dynamic target (a small HTTP service here) POSTed the
instance's details, its answer one entry of vendor_data2.json. A target that is down,
slow, failing or not speaking JSON costs the guest only its own entry."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from cumulo.metadata import config_drive_files
from cumulo.metadata.content import InstanceMetadata
from cumulo.metadata.signature import sign_instance_id
from cumulo.metadata.vendordata import DYNAMIC, STATIC, TargetAuth, VendorData, VendorDataError
from tests.cloudrunner import CloudRunner, free_port, running_cloud

VENDOR_CLOUD_CONFIG = "#cloud-config\nruncmd:\n  - [touch, /var/tmp/vendor-data-ran]\n"
STATIC_DOC = {"cloud-init": VENDOR_CLOUD_CONFIG, "motd": "operated by cumulo"}
SLOW = 3.0  # seconds the slow target takes: more than the read timeout below


class VendorTarget:
    """A dynamic vendordata service: /ok answers JSON about what it was sent, /slow too
    late, /broken with a 500, /text with something that is not JSON."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                target.received.append({"path": self.path, "body": body, "headers": self.headers})
                if self.path == "/slow":
                    time.sleep(SLOW)
                if self.path == "/broken":
                    self.send_error(500)
                    return
                answer = (
                    b"<html>not json</html>"
                    if self.path == "/text"
                    else json.dumps({"for": body["hostname"], "image": body["image-id"]}).encode()
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def target() -> Iterator[VendorTarget]:
    server = VendorTarget()
    yield server
    server.close()


@pytest.fixture(scope="module")
def static_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vendordata") / "vendor_data.json"
    path.write_text(json.dumps(STATIC_DOC))
    return path


INST = InstanceMetadata(
    uuid="1b4a6f3e-0000-4000-8000-000000000001",
    name="web 1",
    hostname="web-1",
    project_id="p" * 32,
    user_data=b"#!/bin/sh\necho hi\n",
    metadata={"role": "web"},
    image_id="c0ffee00-0000-0000-0000-000000000001",
    boot_roles="member,reader",
)


def test_static_and_dynamic_vendor_data_in_the_config_drive(target, static_file):
    sources = VendorData(
        providers=(STATIC, DYNAMIC),
        jsonfile_path=str(static_file),
        dynamic_targets=(f"first@{target.url}/ok",),
    )
    inst = asyncio.run(sources.collect(INST))
    files = config_drive_files(inst)
    assert json.loads(files["openstack/latest/vendor_data.json"]) == STATIC_DOC
    assert json.loads(files["openstack/latest/vendor_data2.json"]) == {
        "static": STATIC_DOC,
        "first": {"for": "web-1", "image": INST.image_id},
    }
    # Nova's versions: vendor_data.json from 2013-10-17, vendor_data2.json from 2016-10-06.
    assert "openstack/2013-10-17/vendor_data.json" in files
    assert "openstack/2013-04-04/vendor_data.json" not in files
    assert "openstack/2016-06-30/vendor_data2.json" not in files
    sent = target.received[-1]
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["body"] == {
        "project-id": INST.project_id,
        "instance-id": INST.uuid,
        "image-id": INST.image_id,
        "user-data": base64.b64encode(b"#!/bin/sh\necho hi\n").decode(),
        "hostname": "web-1",
        "metadata": {"role": "web"},
        "boot-roles": "member,reader",
    }


def test_failing_targets_are_logged_and_give_empty_documents(target, caplog):
    down = free_port()  # nothing listens there
    sources = VendorData(
        providers=(DYNAMIC,),
        dynamic_targets=(
            f"down@http://127.0.0.1:{down}/",
            f"slow@{target.url}/slow",
            f"broken@{target.url}/broken",
            f"text@{target.url}/text",
            f"good@{target.url}/ok",
            f"good@{target.url}/broken",  # a name already taken: skipped
            "no-name-here",
        ),
        connect_timeout=1,
        read_timeout=1,
    )
    caplog.set_level(logging.WARNING, logger="cumulo.metadata.vendordata")
    started = time.monotonic()
    inst = asyncio.run(sources.collect(INST))
    assert time.monotonic() - started < SLOW + 2  # the slow target was not waited for
    assert inst.vendor_data == {
        "down": {},
        "slow": {},
        "broken": {},
        "text": {},
        "good": {"for": "web-1", "image": INST.image_id},
    }
    assert inst.static_vendor_data is None  # no StaticJSON: no vendor_data.json at all
    assert "openstack/latest/vendor_data.json" not in config_drive_files(inst)
    assert sources.listed(INST).static_vendor_data is None
    logged = caplog.text
    for name in ("down", "slow", "broken", "text"):
        assert f"dynamic target {name} at" in logged
    assert "lacks a name" in logged and "already there" in logged


def test_a_fatal_failure_stops_the_collection(target):
    sources = VendorData(
        providers=(DYNAMIC,),
        dynamic_targets=(f"broken@{target.url}/broken",),
        failure_fatal=True,
    )
    with pytest.raises(VendorDataError, match="broken"):
        asyncio.run(sources.collect(INST))


def test_an_unreadable_static_file_serves_an_empty_document(tmp_path, caplog):
    bad = tmp_path / "vendor.json"
    bad.write_text("{not json")
    for path in (bad, tmp_path / "missing.json"):
        inst = asyncio.run(VendorData(jsonfile_path=str(path)).collect(INST))
        assert inst.static_vendor_data == {} and inst.vendor_data == {"static": {}}
    assert str(bad) in caplog.text and "missing.json" in caplog.text


# -- the metadata service of a cloud configured with both providers -----------------------


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, target: VendorTarget, static_file: Path) -> Iterator[CloudRunner]:
    def vendordata(config) -> None:
        md = config.metadata
        md.vendordata_providers = ["StaticJSON", "DynamicJSON"]
        md.vendordata_jsonfile_path = str(static_file)
        md.vendordata_dynamic_targets = [f"site@{target.url}/ok", f"flaky@{target.url}/slow"]
        md.vendordata_dynamic_read_timeout = 1.0
        # The targets are called as the cloud's admin (Nova's [vendordata_dynamic_auth]).
        md.vendordata_dynamic_auth_username = "admin"
        md.vendordata_dynamic_auth_password = config.identity.admin_password
        md.vendordata_dynamic_auth_project_name = "admin"

    with running_cloud(tmp_path_factory.mktemp("vendordata"), vendordata) as runner:
        yield runner


def test_the_metadata_service_serves_the_vendor_data(cloud: CloudRunner, target, tmp_path):
    image = tmp_path / "tiny.raw"
    image.write_bytes(b"\0" * (1 << 20))
    image_id = cloud.openstack(
        "image", "create", "tiny", "--file", str(image), "--disk-format", "raw",
        "--container-format", "bare", "--public", "-f", "json",
    )["id"]  # fmt: skip
    user_data = tmp_path / "ud.yaml"
    user_data.write_text("#cloud-config\n{}\n")
    name = f"vd-{uuid.uuid4().hex[:8]}"
    server = cloud.openstack(
        "server", "create", "--image", image_id, "--flavor", "m1.tiny", "--network",
        "private", "--user-data", str(user_data), "--property", "tier=web", "--wait",
        name, "-f", "json", cloud="cumulo-demo",
    )  # fmt: skip
    [ip] = server["addresses"]["private"]
    headers = {
        "X-Instance-ID": server["id"],
        "X-Tenant-ID": server["project_id"],
        "X-Instance-ID-Signature": sign_instance_id(
            cloud.config.metadata.shared_secret, server["id"]
        ),
        "X-Forwarded-For": ip,
    }
    base = f"http://127.0.0.1:{cloud.config.ports.metadata}"
    with httpx.Client(base_url=base, headers=headers, timeout=30) as md:
        assert md.get("/openstack/latest/vendor_data.json").json() == STATIC_DOC
        before = len(target.received)
        answer = md.get("/openstack/2016-10-06/vendor_data2.json")
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {
            "static": STATIC_DOC,
            "site": {"for": name, "image": image_id},
            "flaky": {},  # slower than the 1 s read timeout
        }
        calls = [r for r in target.received[before:] if r["path"] == "/ok"]
        sent = [r["body"] for r in calls]
        assert sent and sent[0]["instance-id"] == server["id"]
        assert sent[0]["metadata"] == {"tier": "web"}
        assert "member" in sent[0]["boot-roles"].split(",")  # the demo user's roles
        # Each call carries a token of the configured user, kept between calls.
        token = calls[0]["headers"]["X-Auth-Token"]
        checked = httpx.get(
            f"{cloud.auth_url}/auth/tokens",
            headers={"X-Auth-Token": cloud.token(), "X-Subject-Token": token},
        )
        assert checked.status_code == 200 and checked.json()["token"]["user"]["name"] == "admin"
        md.get("/openstack/latest/vendor_data2.json")
        again = [r for r in target.received if r["path"] == "/ok"][-1]
        assert again["headers"]["X-Auth-Token"] == token
        assert base64.b64decode(sent[0]["user-data"]) == b"#cloud-config\n{}\n"
        # Only the vendor data files make the service call the targets.
        asked = len(target.received)
        assert md.get("/openstack/latest/meta_data.json").json()["uuid"] == server["id"]
        assert "vendor_data2.json" in md.get("/openstack/latest").text.split("\n")
        assert len(target.received) == asked
    cloud.openstack("server", "delete", "--wait", server["id"], cloud="cumulo-demo")


def test_a_target_whose_user_cannot_authenticate_gives_an_empty_document(
    cloud: CloudRunner, target, caplog
):
    auth = TargetAuth(cloud.auth_url, "admin", "not-the-password", "admin")
    sources = VendorData(
        providers=(DYNAMIC,), dynamic_targets=(f"site@{target.url}/ok",), auth=auth
    )
    before = len(target.received)
    with caplog.at_level(logging.WARNING, logger="cumulo.metadata.vendordata"):
        assert asyncio.run(sources.dynamic_documents(INST)) == {"site": {}}
    assert len(target.received) == before  # never called without its token
    assert "error from dynamic target site" in caplog.text and "401" in caplog.text
    fatal = dataclasses.replace(sources, failure_fatal=True)
    with pytest.raises(VendorDataError):
        asyncio.run(fatal.dynamic_documents(INST))
