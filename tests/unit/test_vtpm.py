"""What a flavor and an image ask of a server's emulated TPM (Nova's get_vtpm_constraint,
its secret security policy) and the traits a host must report for it."""

from __future__ import annotations

import pytest

from cumulo.compute import vtpm
from cumulo.compute.scheduler.filters.traits import RequiredTraitsFilter
from cumulo.compute.scheduler.host_state import HostState, RequestSpec


def test_no_version_asks_for_no_tpm_even_with_a_model():
    assert vtpm.vtpm_constraint({}, {}) is None
    assert vtpm.vtpm_constraint({"hw:tpm_model": "tpm-crb"}, {}) is None


def test_flavor_or_image_version_with_tis_by_default():
    assert vtpm.vtpm_constraint({"hw:tpm_version": "2.0"}, {}) == vtpm.VTPMConfig("2.0", "tpm-tis")
    from_image = vtpm.vtpm_constraint({}, {"hw_tpm_version": "1.2"})
    assert from_image == vtpm.VTPMConfig("1.2", "tpm-tis")
    crb = vtpm.vtpm_constraint({"hw:tpm_version": "2.0"}, {"hw_tpm_model": "tpm-crb"})
    assert crb == vtpm.VTPMConfig("2.0", "tpm-crb")


@pytest.mark.parametrize(
    ("specs", "props", "message"),
    [
        ({"hw:tpm_version": "3.0"}, {}, "Invalid TPM version '3.0'. Allowed values: 1.2, 2.0."),
        (
            {"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-xyz"},
            {},
            "Invalid TPM model 'tpm-xyz'. Allowed values: tpm-tis, tpm-crb.",
        ),
        (
            {"hw:tpm_version": "1.2", "hw:tpm_model": "tpm-crb"},
            {},
            "TPM model CRB is only valid with TPM version 2.0.",
        ),
        (
            {"hw:tpm_version": "2.0"},
            {"hw_tpm_version": "1.2"},
            "Flavor small has hw:tpm_version extra spec explicitly set to 2.0, conflicting "
            "with image cirros which has hw_tpm_version explicitly set to 1.2.",
        ),
        (
            {"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-tis"},
            {"hw_tpm_model": "tpm-crb"},
            "Flavor small has hw:tpm_model extra spec explicitly set to tpm-tis, conflicting "
            "with image cirros which has hw_tpm_model explicitly set to tpm-crb.",
        ),
    ],
)
def test_invalid_requests_have_novas_messages(specs, props, message):
    with pytest.raises(vtpm.VTPMInvalid) as exc:
        vtpm.vtpm_constraint(specs, props, "small", "cirros")
    assert str(exc.value) == message


def test_the_same_value_in_flavor_and_image_is_no_conflict():
    same = vtpm.vtpm_constraint({"hw:tpm_version": "2.0"}, {"hw_tpm_version": "2.0"})
    assert same == vtpm.VTPMConfig("2.0", "tpm-tis")


def test_secret_security_defaults_to_user():
    assert vtpm.secret_security({}) == "user"
    assert vtpm.secret_security({"hw:tpm_secret_security": "host"}) == "host"


def test_required_traits_name_version_model_and_policy():
    config = vtpm.VTPMConfig("2.0", "tpm-crb")
    assert vtpm.required_traits(config, {"hw:tpm_secret_security": "host"}) == {
        "COMPUTE_SECURITY_TPM_2_0",
        "COMPUTE_SECURITY_TPM_CRB",
        "COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST",
    }
    assert vtpm.required_traits(None, {}) == set()


def test_a_server_keeps_its_image_tpm_in_system_metadata():
    server = {
        "flavor": {"name": "f", "extra_specs": {}},
        "system_metadata": {"image_hw_tpm_version": "1.2", "image_name": "img"},
    }
    assert vtpm.instance_constraint(server) == vtpm.VTPMConfig("1.2", "tpm-tis")
    resized = {"name": "g", "extra_specs": {"hw:tpm_version": "2.0"}}
    with pytest.raises(vtpm.VTPMInvalid, match="conflicting with image img"):
        vtpm.instance_constraint(server, resized)


def test_only_hosts_with_every_required_trait_pass():
    spec = RequestSpec(vcpus=1, memory_mb=64, disk_gb=1)
    spec.required_traits = frozenset(vtpm.required_traits(vtpm.VTPMConfig("1.2", "tpm-tis"), {}))
    tpm_host = HostState(
        "a", "a", 4, 1024, 10, traits=frozenset(vtpm.host_traits(("user", "host")))
    )
    plain_host = HostState("b", "b", 4, 1024, 10, traits=frozenset({"COMPUTE_RESCUE_BFV"}))
    f = RequiredTraitsFilter()
    assert f.applies(spec)
    assert f.host_passes(tpm_host, spec) and not f.host_passes(plain_host, spec)
    deployment = frozenset(
        vtpm.required_traits(
            vtpm.VTPMConfig("2.0", "tpm-tis"), {"hw:tpm_secret_security": "deployment"}
        )
    )
    spec.required_traits = deployment
    assert not f.host_passes(tpm_host, spec)  # this host does not offer `deployment`
    every_policy = HostState("c", "c", 4, 1024, 10, traits=frozenset(vtpm.host_traits()))
    assert f.host_passes(every_policy, spec)
    assert not f.applies(RequestSpec(vcpus=1, memory_mb=64, disk_gb=1))


def test_a_host_reports_the_secret_policies_it_is_configured_to_offer():
    assert "COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT" in vtpm.host_traits()
    only_user = vtpm.host_traits(["user"])
    assert "COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER" in only_user
    assert not {
        "COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST",
        "COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT",
    } & set(only_user)
    assert {"COMPUTE_SECURITY_TPM_2_0", "COMPUTE_SECURITY_TPM_CRB"} <= set(only_user)


def test_whose_secret_it_is_follows_what_was_recorded_then_the_flavor():
    deployment = {"extra_specs": {"hw:tpm_secret_security": "deployment"}}
    user = {"extra_specs": {"hw:tpm_version": "2.0"}}
    assert vtpm.secret_is_services({}, deployment)
    assert not vtpm.secret_is_services({}, user)
    # A server resized from a `deployment` TPM to no TPM: its secret is still the service's.
    recorded = {vtpm.SECRET_UUID_KEY: "s", vtpm.SECRET_OWNER_KEY: "service"}
    assert vtpm.secret_is_services(recorded, {"extra_specs": {}})
