"""tempest.conf from what the running cloud offers: its images, flavors, public network,
version documents, network extensions, and feature flags that say what cumulo implements.

FEATURES is the one place that says which optional features Tempest may test. A flag is
false only where the feature does not exist in cumulo yet (each says why, and
docs/compatibility.md says the same); whoever builds one turns its flag on here.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import httpx

from cumulo.testing.tempest.accounts import AdminSession

# The test cloud's [identity.security_compliance]: Tempest's own defaults, so its
# security-compliance tests check what the cloud enforces.
SECURITY_COMPLIANCE = {
    "lockout_failure_attempts": 2,
    "lockout_duration": 5,
    "unique_last_password_count": 2,
}

FEATURES: dict[str, dict[str, object]] = {
    "identity-feature-enabled": {
        "api_v2": False,
        "api_v3": True,
        "trust": True,
        "access_rules": True,
        "security_compliance": True,  # the cloud runs with Tempest's lockout/history values
        "project_tags": True,
        "application_credentials": True,
    },
    "compute-feature-enabled": {
        "change_password": True,
        "console_output": True,
        "resize": True,
        "pause": True,
        "suspend": True,
        "shelve": True,
        "shelve_migrate": False,  # a scenario: SSH into a guest unshelved then cold-migrated
        "cold_migration": True,
        "live_migration": True,
        "block_migration_for_live_migration": True,
        # Attachments moved as Nova's; the QEMU driver opens the volumes on the
        # destination at the slots they have on the source.
        "volume_backed_live_migration": True,
        "rescue": True,
        "stable_rescue": True,  # hw_rescue_bus / hw_rescue_device; volume-backed from 2.87
        "vnc_console": True,
        "spice_console": True,  # spice-html5 through the proxy, spice-direct to the host
        "serial_console": True,  # the serial proxy's websocket to the guest's serial port
        "interface_attach": True,
        "snapshot": True,
        # Below 2.57: in the config drive and the metadata service (openstack/content).
        "personality": True,
        "config_drive": True,
        "metadata_service": True,
        "enable_instance_password": True,
        "swap_volume": True,
        "volume_multiattach": True,
        "attach_encrypted_volume": False,  # no volume encryption
        "disk_config": True,
        "hostname_fqdn_sanitization": True,  # `a.b.com` is hostname `a-b-com`, as Nova's
        # The metadata's hostname is the server's as it is: no domain is appended (as
        # Nova with [api] dhcp_domain empty, which 2.94's FQDN hostnames want).
        "dhcp_domain": "",
        # Nova's default roles (2025.1): a project manager migrates without naming hosts.
        "nova_policy_roles": "admin,manager,member,reader",
        "scheduler_enabled_filters": ",".join(
            [
                "ComputeFilter",
                "AvailabilityZoneFilter",
                "RamFilter",
                "CoreFilter",
                "DiskFilter",
                "ImagePropertiesFilter",
                "ServerGroupAffinityFilter",
                "ServerGroupAntiAffinityFilter",
                "SameHostFilter",
                "DifferentHostFilter",
            ]
        ),
    },
    "image-feature-enabled": {
        "api_v2": True,
        "import_image": True,
        "os_glance_reserved": True,
        # The harness's cloud shows image locations ([image] show_multiple_locations)
        # and has an http store (`web`) whose locations its file server serves.
        "manage_locations": True,
        "image_conversion": True,  # the harness's cloud enables the conversion plugin
        "do_secure_hash": True,  # [image] do_secure_hash (the default)
        "http_store_enabled": True,
        # Uploads whose data is not their disk_format, or names other files, are refused
        # (cumulo.image.inspect): Tempest cannot register such images to boot them.
        "image_format_enforcement": True,
        "store_weight_enabled": True,
    },
    "network-feature-enabled": {
        "ipv6": True,
        "ipv6_subnet_attributes": True,
        "port_admin_state_change": True,
        "floating_ips": True,
    },
    "object-storage-feature-enabled": {
        "discoverability": True,
        # Realm style (ContainerSyncMiddlewareTest); the old-style test is skipped by
        # Tempest itself (bug 1317133).
        "container_sync": True,
        "object_versioning": True,
    },
    "volume-feature-enabled": {
        "backup": True,
        "snapshot": True,
        "clone": True,
        "extend_attached_volume": True,
        # The file backends adopt and let go of files (see VOLUME_MANAGE_REFS).
        "manage_volume": True,
        "manage_snapshot": True,
        # Set from the backends the cloud reports (write_conf): true with two or more.
        "multi_backend": False,
    },
}

# [volume] manage_volume_ref / manage_snapshot_ref: how the file backend names what it
# unmanaged (it renames volume-<id> to unmanaged-volume-<id>, snapshot-<id> to
# unmanaged-snapshot-<id>), which manage takes back with {"source-name": <name>}.
VOLUME_MANAGE_REFS = {
    "manage_volume_ref": "source-name,unmanaged-volume-%s",
    "manage_snapshot_ref": "source-name,unmanaged-snapshot-%s",
}


def validation_section(public_network: str) -> dict[str, object]:
    """[validation] for real guests: Tempest logs in to the tiny guest
    (cumulo.testing.guest) as root with the validation key pair (ECDSA) through a
    floating IP from the public network, which the host reaches (the linuxbridge data
    plane gives it a leg there); Tempest's validation resources add a security group with
    SSH and ICMP allowed."""
    from cumulo.testing.guest import SSH_USER

    return {
        "run_validation": True,
        "connect_method": "floating",
        "auth_method": "keypair",
        "ip_version_for_ssh": 4,
        # Only read with connect_method = fixed (each account has its own network).
        "network_for_ssh": public_network,
        "image_ssh_user": SSH_USER,
        "image_alt_ssh_user": SSH_USER,
        # Tempest makes the key pair itself and imports its public key (from 2.92 the
        # cloud no longer generates key pairs); the guest's dropbear takes ECDSA keys.
        "ssh_key_type": "ecdsa",
        "security_group": True,
        "security_group_rules": True,
        "connect_timeout": 60,
        "ssh_timeout": 300,
    }


def _current_version(url: str) -> dict:
    body = httpx.get(url, timeout=30).json()
    if "version" in body:
        return body["version"]
    versions = body["versions"]
    versions = versions.get("values", versions) if isinstance(versions, dict) else versions
    return next(v for v in versions if v.get("status", "").upper() == "CURRENT")


def discover(s: AdminSession, root: dict[str, str]) -> dict:
    """What the cloud offers, as tempest.conf values."""
    images = s.call("GET", "image", "/v2/images", params={"name": "tiny"})["images"]
    if not images:
        raise SystemExit("the cloud has no `tiny` image (cumulo up --with-demo-image failed)")
    flavors = {f["name"]: f["id"] for f in s.call("GET", "compute", "/flavors")["flavors"]}
    public = s.call("GET", "network", "/v2.0/networks", params={"router:external": "true"})
    compute = _current_version(root["compute"] + "/")
    volume = _current_version(root["block_storage"] + "/")
    extensions = s.call("GET", "network", "/v2.0/extensions")["extensions"]
    swift = (
        httpx.get(root["object_store"] + "/info", timeout=30) if "object-store" in s.urls else None
    )
    swift_info = swift.json() if swift and swift.status_code == 200 else None
    # The first backend's capabilities: what volume types' extra specs may ask for.
    pools = s.call("GET", "block-storage", "/scheduler-stats/get_pools", params={"detail": "true"})
    capabilities = pools["pools"][0]["capabilities"] if pools.get("pools") else {}
    # Each backend's volume_backend_name (what volume types select it by).
    backend_names = sorted(
        {p["capabilities"].get("volume_backend_name") for p in pools.get("pools", [])} - {None}
    )
    return {
        "volume_backends": backend_names,
        "volume_vendor": capabilities.get("vendor_name", "Open Source"),
        "volume_protocol": capabilities.get("storage_protocol", "iSCSI"),
        "image": images[0]["id"],
        "flavor": flavors["m1.nano"],
        "flavor_alt": flavors["m1.tiny"],
        "public_network": public["networks"][0],
        "compute_versions": (compute["min_version"], compute["version"]),
        "volume_versions": (volume["min_version"], volume["version"]),
        "network_extensions": sorted(e["alias"] for e in extensions),
        "key_manager": "key-manager" in s.urls,
        # What the object store's /info lists (its middleware), when there is one.
        "object_store_apis": sorted(swift_info) if swift_info is not None else None,
        # Its own container sync realm and cluster (Tempest's realm_name, cluster_name).
        "container_sync": _sync_cluster(swift_info) if swift_info is not None else None,
    }


def _sync_cluster(info: dict) -> tuple[str, str] | None:
    """The container sync realm and cluster /info marks as this cloud's own."""
    for realm, data in info.get("container_sync", {}).get("realms", {}).items():
        for cluster, flags in data.get("clusters", {}).items():
            if flags.get("current"):
                return realm, cluster
    return None


def write_conf(
    path: Path,
    *,
    run_dir: Path,
    auth_url: str,
    admin_password: str,
    offer: dict,
    accounts_file: Path | None,
    overrides: list[str],
    hosts: int,
    validation: bool = False,
    vtpm_live_migration: bool = False,
) -> None:
    conf = configparser.ConfigParser(interpolation=None)
    conf.optionxform = str  # type: ignore[assignment,method-assign]
    public = offer["public_network"]
    sections: dict[str, dict[str, object]] = {
        "DEFAULT": {"log_file": str(run_dir / "tempest.log"), "debug": True},
        "oslo_concurrency": {"lock_path": str(run_dir / "locks")},
        "auth": {
            # Pre-provisioned accounts; without them, Tempest's dynamic credentials.
            **(
                {"use_dynamic_credentials": False, "test_accounts_file": str(accounts_file)}
                if accounts_file
                else {"use_dynamic_credentials": True}
            ),
            "create_isolated_networks": accounts_file is None,
            "admin_username": "admin",
            "admin_password": admin_password,
            "admin_project_name": "admin",
            "admin_domain_name": "Default",
            "default_credentials_domain_name": "Default",
        },
        "identity": {
            "uri_v3": auth_url,
            "auth_version": "v3",
            "region": "RegionOne",
            "admin_role": "admin",
            "admin_domain_scope": False,
            # What the cloud's [identity.security_compliance] says (cloud.py).
            "user_lockout_failure_attempts": SECURITY_COMPLIANCE["lockout_failure_attempts"],
            "user_lockout_duration": SECURITY_COMPLIANCE["lockout_duration"],
            "user_unique_last_password_count": SECURITY_COMPLIANCE["unique_last_password_count"],
        },
        "compute": {
            "image_ref": offer["image"],
            "image_ref_alt": offer["image_alt"],
            # A network every test can count on seeing (the external one): only used
            # where a primary account has no network of its own.
            "fixed_network_name": offer["public_network"]["name"],
            "flavor_ref": offer["flavor"],
            "flavor_ref_alt": offer["flavor_alt"],
            "min_microversion": offer["compute_versions"][0],
            "max_microversion": offer["compute_versions"][1],
            "min_compute_nodes": hosts,
            "build_timeout": 120,
            "endpoint_type": "publicURL",
        },
        "image": {
            "build_timeout": 120,
            "http_image": offer["http_image"],
            "http_qcow2_image": offer["http_image"],
            "image_caching_enabled": True,  # the harness's cloud enables the image cache
            # A second image API node (its own staging area and cache): distributed import.
            "alternate_image_endpoint": "image_remote",
            "alternate_image_endpoint_type": "publicURL",
            "images_manifest_file": offer["images_manifest"],
        },
        "network": {
            "public_network_id": public["id"],
            "floating_network_name": public["name"],
            "project_network_cidr": "10.100.0.0/16",
            "build_timeout": 120,
        },
        "volume": {
            "min_microversion": offer["volume_versions"][0],
            "max_microversion": offer["volume_versions"][1],
            "catalog_type": "block-storage",
            "build_timeout": 120,
            "vendor_name": offer["volume_vendor"],
            "storage_protocol": offer["volume_protocol"],
            "volume_type_multiattach": offer["multiattach_type"],
            "backend_names": ",".join(offer["volume_backends"]),
            **VOLUME_MANAGE_REFS,
        },
        "validation": (
            validation_section(public["name"]) if validation else {"run_validation": False}
        ),
        # Compute enforces its new defaults (project reader, member, manager; admin), as
        # Nova has by default since 2023.2: Tempest reads with project readers' tokens.
        "enforce_scope": {"nova": True},
        "service_available": {
            "nova": True,
            "glance": True,
            "neutron": True,
            "cinder": True,
            "swift": offer["object_store_apis"] is not None,
            "horizon": False,
            # Barbican's plugin's option (its default is true): the Key Manager.
            "barbican": offer["key_manager"],
        },
    }
    for section, flags in FEATURES.items():
        sections[section] = dict(flags)
    sections["volume-feature-enabled"]["multi_backend"] = len(offer["volume_backends"]) > 1
    # Live migration of vTPM servers whose secret the host keeps (hw:tpm_secret_security
    # host): where every compute host has an emulated TPM and there is another to go to.
    sections["compute-feature-enabled"]["vtpm_live_migration"] = (
        vtpm_live_migration and offer["key_manager"] and hosts > 1
    )

    # Encrypted volumes (the Key Manager keeps their keys): Tempest's attached-extend test
    # attaches a LUKS1 and a LUKS2 volume; only dm-crypt opens LUKS2 and QEMU's LUKS
    # driver does not, so with real guests (no device-mapper here) the class is off.
    sections["volume-feature-enabled"]["extend_attached_encrypted_volume"] = not validation
    sections["network-feature-enabled"]["api_extensions"] = ",".join(offer["network_extensions"])
    if offer.get("certified_image"):  # a signed image and its trusted certificates
        image, certs = offer["certified_image"]
        sections["compute"]["certified_image_ref"] = image
        sections["compute"]["certified_image_trusted_certs"] = ",".join(certs)
    if offer["object_store_apis"] is not None:
        sections["object-storage"] = {
            "operator_role": "member",
            "reseller_admin_role": "ResellerAdmin",
            "build_timeout": 120,
        }
        if offer.get("container_sync"):
            # The harness's cloud syncs containers every few seconds (cloud.py).
            realm, cluster = offer["container_sync"]
            sections["object-storage"] |= {
                "realm_name": realm,
                "cluster_name": cluster,
                "container_sync_interval": 3,
                "container_sync_timeout": 120,
            }
        sections["object-storage-feature-enabled"]["discoverable_apis"] = ",".join(
            offer["object_store_apis"]
        )
    for item in overrides:  # section.option=value
        key, _, value = item.partition("=")
        section, _, option = key.rpartition(".")
        sections.setdefault(section, {})[option] = value
    for section, values in sections.items():
        if section != "DEFAULT":
            conf.add_section(section)
        for key, value in values.items():
            conf.set(section, key, str(value).lower() if isinstance(value, bool) else str(value))
    with path.open("w") as f:
        conf.write(f)
