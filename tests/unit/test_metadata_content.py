"""The metadata documents a guest reads, in the formats cloud-init expects from Nova."""

from __future__ import annotations

from cumulo.metadata import (
    InstanceMetadata,
    ec2_lookup,
    ec2_meta_data,
    meta_data,
    network_data,
    openstack_files,
    vendor_data2,
)

PORT = {
    "port_id": "2b7c5f2e-1111-4a4a-9c9c-0123456789ab",
    "mac": "fa:16:3e:11:22:33",
    "network_id": "net-1",
    "mtu": 1450,
    "fixed_ips": [
        {
            "ip_address": "10.0.0.5",
            "version": 4,
            "cidr": "10.0.0.0/24",
            "gateway": "10.0.0.1",
            "dns_nameservers": ["10.0.0.2"],
            "host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}],
        },
        {"ip_address": "fd00::5", "version": 6, "enable_dhcp": True},
    ],
}

INST = InstanceMetadata(
    uuid="8d1c6a2e-0b3f-4a55-9e0d-5a1c2b3d4e5f",
    name="web 1",
    hostname="web-1",
    project_id="a" * 32,
    availability_zone="zone-a",
    public_keys={"alice": "ssh-ed25519 AAAA alice@laptop"},
    user_data=b"#!/bin/sh\necho hi\n",
    launch_index=2,
    network_info=(PORT,),
    public_ipv4="203.0.113.9",
    metadata={"role": "web"},
    flavor_name="m1.tiny",
    image_id="c0ffee00-0000-0000-0000-000000000001",
    reservation_id="r-abc12345",
    internal_id=42,
    vendor_data={"static": {"motd": "hello"}},
)


def test_meta_data_says_who_the_guest_is_and_its_keys():
    doc = meta_data(INST)
    assert doc["uuid"] == INST.uuid
    assert (doc["hostname"], doc["name"]) == ("web-1", "web 1")
    assert doc["availability_zone"] == "zone-a"
    assert doc["launch_index"] == 2
    assert doc["project_id"] == "a" * 32
    assert doc["meta"] == {"role": "web"}
    assert doc["public_keys"] == {"alice": "ssh-ed25519 AAAA alice@laptop"}
    assert doc["keys"] == [
        {"name": "alice", "type": "ssh", "data": "ssh-ed25519 AAAA alice@laptop"}
    ]
    assert "admin_pass" not in doc


def test_old_metadata_versions_lack_the_newer_fields():
    old = meta_data(INST, "2012-08-10")
    assert "project_id" not in old and "devices" not in old
    files = openstack_files(INST, "2012-08-10")
    assert set(files) == {"meta_data.json", "user_data"}  # vendor data from 2013-10-17
    assert {"network_data.json", "vendor_data2.json"} <= set(openstack_files(INST, "latest"))


def test_network_data_describes_the_port_its_addresses_and_routes():
    doc = network_data(INST)
    assert doc["links"] == [
        {
            "id": "tap2b7c5f2e-11",
            "vif_id": PORT["port_id"],
            "type": "tap",
            "mtu": 1450,
            "ethernet_mac_address": "fa:16:3e:11:22:33",
        }
    ]
    v4, v6 = doc["networks"]
    assert v4["type"] == "ipv4" and v4["ip_address"] == "10.0.0.5"
    assert v4["netmask"] == "255.255.255.0"
    assert v4["routes"] == [
        {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"},
        {"network": "192.168.0.0", "netmask": "255.255.0.0", "gateway": "10.0.0.254"},
    ]
    assert v6["type"] == "ipv6_dhcp" and "ip_address" not in v6
    assert doc["services"] == [{"type": "dns", "address": "10.0.0.2"}]


def test_no_ports_means_empty_network_data():
    bare = InstanceMetadata(uuid="u", name="n", hostname="n", project_id="p")
    assert network_data(bare) == {"links": [], "networks": [], "services": []}
    assert "user_data" not in openstack_files(bare, "latest")


def test_vendor_data2_is_keyed_by_source():
    assert vendor_data2(INST) == {"static": {"motd": "hello"}}


def test_ec2_tree_lists_directories_and_answers_values():
    tree = ec2_meta_data(INST)
    assert ec2_lookup(tree, "instance-id") == "i-0000002a"
    assert ec2_lookup(tree, "local-ipv4") == "10.0.0.5"
    assert ec2_lookup(tree, "public-ipv4") == "203.0.113.9"
    assert ec2_lookup(tree, "placement/availability-zone") == "zone-a"
    assert ec2_lookup(tree, "instance-type") == "m1.tiny"
    listing = ec2_lookup(tree, "").splitlines()
    assert "placement/" in listing and "public-keys/" in listing and "hostname" in listing
    assert ec2_lookup(tree, "public-keys/") == "0=alice"
    assert ec2_lookup(tree, "public-keys/0/") == "openssh-key"
    assert ec2_lookup(tree, "public-keys/0/openssh-key") == "ssh-ed25519 AAAA alice@laptop"
    assert ec2_lookup(tree, "nothing-here") is None
    assert ec2_lookup(tree, "hostname/deeper") is None
    assert ec2_lookup(tree, "ami-id").startswith("ami-")
