"""The conformance harness's own logic: which tests each pass runs, and how a failure is
summed up in one line with the request that failed."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from cumulo.testing.guest import SSH_USER
from cumulo.testing.tempest import __main__ as harness
from cumulo.testing.tempest import conf
from cumulo.testing.tempest.cloud import CloudSpec
from cumulo.testing.tempest.hosts import Underlay
from cumulo.testing.tempest.results import Result, failed_requests, one_line, render_markdown

IDENTITY_ADMIN = "tempest.api.identity.admin.v3.test_domains.DomainsTestJSON.test_list[id-1,smoke]"
SERVERS = "tempest.api.compute.servers.test_servers.ServersTestJSON.test_x[id-2,smoke]"
SCENARIO = "tempest.scenario.test_network_basic_ops.TestNetworkBasicOps.test_x[id-3,smoke]"


def _passes(*argv: str) -> dict[str, harness.Pass]:
    return {p.name: p for p in harness.passes(harness.parse_args(list(argv)))}


def _runs(p: harness.Pass, test_id: str) -> bool:
    return bool(re.search(p.regex, test_id)) and not (p.exclude and re.search(p.exclude, test_id))


def test_isolated_classes_run_only_in_the_second_pass_with_the_permissive_policy():
    passes = _passes()
    assert _runs(passes["main"], SERVERS) and not _runs(passes["isolated"], SERVERS)
    assert _runs(passes["isolated"], IDENTITY_ADMIN) and not _runs(passes["main"], IDENTITY_ADMIN)
    assert passes["main"].policy == {} and not passes["main"].dynamic
    assert passes["isolated"].policy == {"cloud_admin": "role:admin"}
    assert passes["isolated"].dynamic


def test_smoke_means_the_five_services_smoke_tests_only():
    passes = _passes("--smoke")
    assert _runs(passes["main"], SERVERS) and not _runs(passes["main"], SCENARIO)
    assert not _runs(passes["main"], SERVERS.replace(",smoke", ""))
    assert _runs(passes["isolated"], IDENTITY_ADMIN)


def test_a_user_regex_narrows_both_passes():
    passes = _passes("--regex", r"tempest\.api\.compute\.servers")
    assert _runs(passes["main"], SERVERS)
    assert not _runs(passes["isolated"], IDENTITY_ADMIN)


def test_tests_that_ssh_into_the_guest_are_left_out_only_with_the_fake_driver():
    rebuild = (
        "tempest.api.compute.servers.test_server_actions.ServerActionsV293TestJSON."
        "test_rebuild_volume_backed_server[id-6652dab9-ea24-4c93-ab5a-93d79c3041cf]"
    )
    fake, qemu = _passes(), _passes("--driver", "qemu")
    assert not _runs(fake["main"], rebuild) and not _runs(fake["isolated"], rebuild)
    assert _runs(fake["main"], SERVERS)
    assert _runs(qemu["main"], rebuild)
    unvalidated = _passes("--driver", "qemu", "--no-validation")
    assert not _runs(unvalidated["main"], rebuild)


def test_interfaces_by_fixed_ip_run_with_dynamic_credentials_when_guests_are_validated():
    by_fixed_ip = (
        "tempest.api.compute.servers.test_attach_interfaces.AttachInterfacesTestJSON."
        "test_create_list_show_delete_interfaces_by_fixed_ip[id-d290c06c,network]"
    )
    fixed_ip = (
        "tempest.api.compute.servers.test_attach_interfaces.AttachInterfacesUnderV243Test."
        "test_add_remove_fixed_ip[id-c7e0e60b,network,smoke]"
    )
    qemu = _passes("--driver", "qemu")
    narrowed = _passes("--driver", "qemu", "--regex", "test_attach_interfaces")
    for test_id in (by_fixed_ip, fixed_ip):
        assert _runs(qemu["isolated"], test_id) and not _runs(qemu["main"], test_id)
        assert _runs(narrowed["isolated"], test_id)  # a user regex matching mid-id
    other = by_fixed_ip.replace("by_fixed_ip", "by_network")
    assert _runs(qemu["main"], other) and not _runs(qemu["isolated"], other)
    fake = _passes()  # their classes are skipped without validation: where they were
    assert _runs(fake["main"], by_fixed_ip) and not _runs(fake["isolated"], by_fixed_ip)


def test_real_guests_are_validated_unless_told_otherwise():
    assert harness.parse_args(["--driver", "qemu"]).validation
    assert not harness.parse_args(["--driver", "qemu", "--no-validation"]).validation
    assert not harness.parse_args([]).validation


def test_validation_needs_real_guests(capsys):
    with pytest.raises(SystemExit):
        harness.parse_args(["--validation"])
    assert "--driver qemu" in capsys.readouterr().err


def test_barbicans_plugin_tests_are_never_run():
    """The plugin is installed for its secrets client; only Tempest's tests are run."""
    plugin = "barbican_tempest_plugin.tests.api.test_secrets.SecretsTest.test_x[id-4]"
    vtpm = (
        "tempest.api.compute.admin.test_live_migration.LiveMigrationWithVTPMTest."
        "test_vtpm_live_migration_secret_security_host[id-f26e8307-d865-4382-85f9-0b1c0a0ad80c]"
    )
    for argv in ((), ("--regex", "."), ("--regex", "LiveMigrationWithVTPMTest|SecretsTest")):
        for p in _passes(*argv).values():
            assert not _runs(p, plugin)
    assert _runs(_passes("--regex", "LiveMigrationWithVTPMTest")["main"], vtpm)


def _written_conf(
    tmp_path: Path,
    validation: bool,
    hosts: int = 1,
    vtpm_live_migration: bool = False,
) -> configparser.ConfigParser:
    offer = {
        "image": "img",
        "image_alt": "img2",
        "flavor": "1",
        "flavor_alt": "2",
        "public_network": {"id": "pub-id", "name": "public"},
        "compute_versions": ("2.1", "2.96"),
        "volume_versions": ("3.0", "3.70"),
        "network_extensions": ["router"],
        "object_store_apis": None,
        "http_image": "http://127.0.0.1/image.qcow2",
        "images_manifest": "/x/manifest.yaml",
        "volume_vendor": "Open Source",
        "volume_protocol": "iSCSI",
        "multiattach_type": "multiattach",
        "volume_backends": ["file-1", "file-2"],
        "key_manager": True,
    }
    path = tmp_path / "tempest.conf"
    conf.write_conf(
        path,
        run_dir=tmp_path,
        auth_url="http://127.0.0.1:5000/v3",
        admin_password="secret",
        offer=offer,
        accounts_file=tmp_path / "accounts.yaml",
        overrides=[],
        hosts=hosts,
        validation=validation,
        vtpm_live_migration=vtpm_live_migration,
    )
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read(path)
    return parsed


def test_validation_logs_in_to_the_tiny_guest_through_a_floating_ip(tmp_path: Path):
    v = _written_conf(tmp_path, validation=True)["validation"]
    assert v["run_validation"] == "true"
    assert v["connect_method"] == "floating" and v["auth_method"] == "keypair"
    assert v["image_ssh_user"] == SSH_USER and v["ip_version_for_ssh"] == "4"
    assert v["ssh_key_type"] == "ecdsa"  # made by Tempest: from 2.92 the cloud makes none
    assert v["security_group"] == "true" and v["security_group_rules"] == "true"
    written = _written_conf(tmp_path, validation=True)
    assert written["network"]["floating_network_name"] == "public"
    # What the guest's hostname and the metadata's are compared with.
    assert written["compute-feature-enabled"]["hostname_fqdn_sanitization"] == "true"
    assert written["compute-feature-enabled"]["dhcp_domain"] == ""


def test_vtpm_live_migration_only_with_several_hosts_that_have_a_tpm(tmp_path: Path):
    fake = _written_conf(tmp_path, validation=False, hosts=3, vtpm_live_migration=True)
    assert fake["service_available"]["barbican"] == "true"
    assert fake["compute-feature-enabled"]["vtpm_live_migration"] == "true"
    one_host = _written_conf(tmp_path, validation=True, hosts=1, vtpm_live_migration=True)
    assert one_host["compute-feature-enabled"]["vtpm_live_migration"] == "false"
    no_tpm = _written_conf(tmp_path, validation=False, hosts=3)
    assert no_tpm["compute-feature-enabled"]["vtpm_live_migration"] == "false"


def test_the_qemu_cloud_has_a_second_host_on_the_broker_joined_by_vxlan(tmp_path: Path):
    qemu = CloudSpec(tmp_path, tmp_path / "state", 24000, driver="qemu")
    assert qemu.compute_hosts == 2
    config = qemu.config()
    assert config["messaging"]["transport_url"].startswith("rabbit://")
    underlay = Underlay.of(qemu)
    assert config["network"]["tunnel_local_ip"] == "192.168.250.1/24"
    assert config["network"]["tunnel_device"] == underlay.devices[0]
    assert underlay.network(1)["tunnel_local_ip"] == "192.168.250.2/24"
    assert all(len(name) <= 15 for name in (underlay.bridge, *underlay.devices))  # IFNAMSIZ
    # Both hosts are this machine: their agents reach each other on loopback.
    assert config["compute"]["migration_address"] == "127.0.0.1"
    fake = CloudSpec(tmp_path, tmp_path / "state", 24000)
    assert fake.compute_hosts == 3 and "transport_url" not in fake.config()["messaging"]


def test_without_validation_tempest_does_not_log_in(tmp_path: Path):
    written = _written_conf(tmp_path, validation=False)
    assert set(written["validation"]) - set(written.defaults()) == {"run_validation"}
    assert written["validation"]["run_validation"] == "false"


def test_a_failure_is_one_line_with_tempests_details():
    traceback = """Traceback (most recent call last):
  File "x.py", line 1, in test
    raise exc
tempest.lib.exceptions.NotFound: Object not found
Details: {'code': 404, 'message': 'Could not find the requested resource.'}
"""
    assert one_line(traceback) == (
        "tempest.lib.exceptions.NotFound: Object not found "
        "Details: {'code': 404, 'message': 'Could not find the requested resource.'}"
    )
    assert one_line("") == ""


def test_the_last_failed_request_of_each_test_is_found_in_tempest_log(tmp_path: Path):
    log = tmp_path / "tempest.log"
    log.write_text(
        "x INFO tempest.lib.common.rest_client [req-1 ] Request (HostsTest:test_list): "
        "200 GET http://127.0.0.1:21001/v2.1/servers 0.01s\n"
        "x INFO tempest.lib.common.rest_client [req-2 ] Request (HostsTest:test_list): "
        "404 GET http://127.0.0.1:21001/v2.1/os-hosts?zone=nova 0.01s\n"
    )
    assert failed_requests(log) == {("HostsTest", "test_list"): "404 GET /v2.1/os-hosts"}


def test_the_report_counts_per_service_and_class_and_lists_skips():
    found = [
        Result(SERVERS, "success", ""),
        Result(SERVERS.replace("test_x", "test_y"), "skip", "no shelve here"),
        Result(IDENTITY_ADMIN, "fail", "[403 POST /v3/domains] Forbidden", run="isolated"),
    ]
    md = render_markdown(found, {"date": "today"})
    assert "| compute | 1 | 0 | 1 |" in md and "| identity | 0 | 1 | 0 |" in md
    assert "| admin.v3.test_domains.DomainsTestJSON † | 0 | 1 | 0 |" in md
    assert "no shelve here" in md and "- date: today" in md


def test_two_volume_backends_enable_the_multi_backend_and_manage_tests(tmp_path: Path):
    written = _written_conf(tmp_path, validation=False)
    assert written["volume-feature-enabled"]["multi_backend"] == "true"
    assert written["volume"]["backend_names"] == "file-1,file-2"
    assert written["volume-feature-enabled"]["manage_volume"] == "true"
    assert written["volume"]["manage_volume_ref"] == "source-name,unmanaged-volume-%s"
    assert written["volume"]["manage_snapshot_ref"] == "source-name,unmanaged-snapshot-%s"
