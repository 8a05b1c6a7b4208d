"""The metadata service's pieces: the proxy's signature, which document a path names,
and how the proxy maps a guest's address to its instance."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import httpx

from cumulo.metadata.content import EC2_VERSIONS, OPENSTACK_VERSIONS, InstanceMetadata
from cumulo.metadata.documents import is_password_path, resolve
from cumulo.metadata.signature import sign_instance_id, signature_is_valid
from cumulo.network.dataplane.metadata_proxy import (
    NamespaceMetadataProxy,
    _Listener,
    _read_request,
    _Request,
    address_owners,
)

UUID = "6f1b1b2e-0d6c-4b6e-9d4b-3c1f0e9a7b11"
GUEST = InstanceMetadata(
    uuid=UUID,
    name="vm1",
    hostname="vm1",
    project_id="p1",
    public_keys={"k": "ssh-ed25519 AAAA k"},
    user_data=b"#!/bin/sh\necho hi\n",
    network_info=(
        {
            "port_id": "a" * 36,
            "mac": "fa:16:3e:00:00:01",
            "network_id": "n1",
            "fixed_ips": [{"ip_address": "10.0.0.5", "version": 4}],
        },
    ),
    flavor_name="m1.tiny",
    internal_id=42,
)


def test_signature_is_nova_hmac_sha256_of_the_instance_id():
    expected = hmac.new(b"s3cret", b"abc", hashlib.sha256).hexdigest()
    assert sign_instance_id("s3cret", "abc") == expected


def test_a_forged_or_foreign_signature_is_refused():
    good = sign_instance_id("s3cret", UUID)
    assert signature_is_valid("s3cret", UUID, good)
    assert not signature_is_valid("s3cret", "another-instance", good)
    assert not signature_is_valid("other-secret", UUID, good)
    assert not signature_is_valid("s3cret", UUID, "")
    assert not signature_is_valid("", UUID, sign_instance_id("", UUID))  # no secret: nobody


def test_roots_list_the_versions():
    assert resolve(GUEST, "/").body.decode().split("\n") == [*EC2_VERSIONS, "latest"]
    assert resolve(GUEST, "openstack").body.decode().split("\n") == [
        *OPENSTACK_VERSIONS,
        "latest",
    ]


def test_openstack_documents():
    listing = resolve(GUEST, "openstack/latest/").body.decode().split("\n")
    assert listing == [
        "meta_data.json",
        "network_data.json",
        "password",
        "user_data",
        "vendor_data.json",
        "vendor_data2.json",
    ]
    doc = resolve(GUEST, "openstack/latest/meta_data.json")
    assert doc.content_type == "application/json"
    meta = json.loads(doc.body)
    assert meta["uuid"] == UUID and meta["hostname"] == "vm1"
    assert meta["public_keys"] == {"k": "ssh-ed25519 AAAA k"}
    assert resolve(GUEST, "openstack/latest/user_data").body == GUEST.user_data
    net = json.loads(resolve(GUEST, "openstack/2015-10-15/network_data.json").body)
    assert net["links"][0]["ethernet_mac_address"] == "fa:16:3e:00:00:01"
    # network_data.json appeared in 2015-10-15; unknown versions and files are 404s.
    assert resolve(GUEST, "openstack/2013-10-17/network_data.json") is None
    assert "password" not in resolve(GUEST, "openstack/2012-08-10").body.decode()
    assert resolve(GUEST, "openstack/1999-01-01/meta_data.json") is None
    assert resolve(GUEST, "openstack/latest/nope.json") is None


def test_password_is_served_by_the_service_not_as_a_document():
    assert is_password_path("openstack/latest/password")
    assert is_password_path("/openstack/2013-04-04/password")
    assert not is_password_path("openstack/2012-08-10/password")
    assert not is_password_path("latest/meta-data/password")


def test_ec2_tree():
    assert resolve(GUEST, "latest").body == b"meta-data/\nuser-data"
    listing = resolve(GUEST, "latest/meta-data/").body.decode().split("\n")
    assert "instance-id" in listing and "placement/" in listing and "public-keys/" in listing
    assert resolve(GUEST, "latest/meta-data/instance-id").body == b"i-0000002a"
    assert resolve(GUEST, "2009-04-04/meta-data/local-ipv4").body == b"10.0.0.5"
    assert resolve(GUEST, "latest/meta-data/placement/availability-zone").body == b"nova"
    assert resolve(GUEST, "latest/meta-data/public-keys/").body == b"0=k"
    key = resolve(GUEST, "latest/meta-data/public-keys/0/openssh-key").body
    assert key == b"ssh-ed25519 AAAA k"
    assert resolve(GUEST, "latest/user-data").body == GUEST.user_data
    assert resolve(GUEST, "latest/meta-data/nope") is None
    assert resolve(GUEST, "1234-56-78/meta-data/") is None


def test_ec2_user_data_is_404_without_user_data():
    from dataclasses import replace

    bare = replace(GUEST, user_data=None)
    assert resolve(bare, "latest").body == b"meta-data/"
    assert resolve(bare, "latest/user-data") is None


def test_the_proxy_maps_addresses_of_compute_ports_only():
    state = {
        "networks": [
            {
                "id": "n1",
                "leases": [
                    {"ip": "10.0.0.5", "device_id": UUID, "device_owner": "compute:nova",
                     "project_id": "p1"},
                    {"ip": "10.0.0.6", "device_id": "lb", "device_owner": "neutron:LOADBALANCER",
                     "project_id": "p1"},
                    {"ip": "10.0.0.7", "device_id": "", "device_owner": "", "project_id": "p1"},
                ],
            }
        ]
    }  # fmt: skip
    assert address_owners(state) == {"n1": {"10.0.0.5": (UUID, "p1")}}


def test_the_proxy_reads_a_request_and_its_body():
    async def read(raw: bytes):
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await _read_request(reader)

    req = asyncio.run(
        read(
            b"POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\n"
            b"X-Instance-ID: forged\r\nContent-Length: 4\r\n\r\npass"
        )
    )
    assert (req.method, req.target, req.body) == ("POST", "/openstack/latest/password", b"pass")
    assert ("X-Instance-ID", "forged") in req.headers  # dropped when forwarding


def test_the_proxy_signs_for_the_owner_of_the_source_address_whatever_the_guest_sent():
    seen = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"uuid": UUID})

    async def scenario():
        proxy = NamespaceMetadataProxy(9697, "http://metadata", "s3cret")
        proxy._client = httpx.AsyncClient(
            base_url="http://metadata", transport=httpx.MockTransport(upstream)
        )
        proxy.update({"networks": [{"id": "n1", "leases": [
            {"ip": "10.0.0.5", "device_id": UUID, "device_owner": "compute:nova",
             "project_id": "p1"}]}]})  # fmt: skip
        proxy._listeners["ns"] = _Listener(1, server=None, networks={"n1"})  # type: ignore[arg-type]
        forged = [("X-Instance-ID", "someone-else"), ("X-Forwarded-For", "10.0.0.9")]
        request = _Request("GET", "/openstack/latest/meta_data.json", forged, b"")
        ok = await proxy._forward("ns", "10.0.0.5", request)
        stranger = await proxy._forward("ns", "10.0.0.99", request)
        await proxy._client.aclose()
        return ok, stranger

    ok, stranger = asyncio.run(scenario())
    assert ok[0] == 200 and stranger[0] == 404
    [sent] = seen  # the stranger's request never reached the service
    assert sent.headers.get_list("X-Instance-ID") == [UUID]
    assert sent.headers["X-Tenant-ID"] == "p1"
    assert sent.headers.get_list("X-Forwarded-For") == ["10.0.0.5"]
    assert signature_is_valid("s3cret", UUID, sent.headers["X-Instance-ID-Signature"])
