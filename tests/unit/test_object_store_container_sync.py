"""Container sync realms: X-Container-Sync-To validation and the signature Swift's
container_sync middleware and daemon compute."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from cumulo.common.config import ContainerSyncRealmConfig, CumuloConfig
from cumulo.object_store import container_sync
from cumulo.object_store.errors import SwiftError


def cloud(**object_store) -> CumuloConfig:
    config = CumuloConfig()
    config.object_store.container_sync_realms = [
        ContainerSyncRealmConfig(
            name="Realm1",
            key="realm-key",
            key2="older-key",
            clusters={"Name1": "https://swift.example.com/v1/", "here": ""},
        )
    ]
    for key, value in object_store.items():
        setattr(config.object_store, key, value)
    return config


def test_realm_values_resolve_to_the_clusters_endpoint_case_insensitively():
    target = container_sync.validate_sync_to(cloud(), "//realm1/NAME1/AUTH_a/c/")
    assert target == container_sync.SyncTarget(
        "https://swift.example.com/v1/AUTH_a/c", "REALM1", "realm-key"
    )
    # An empty endpoint: this cloud's own proxy.
    own = container_sync.validate_sync_to(cloud(), "//REALM1/here/AUTH_a/c")
    assert own is not None and own.url == "http://127.0.0.1:8080/v1/AUTH_a/c"
    assert container_sync.validate_sync_to(cloud(), "") is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("//realm1/name1/AUTH_a", "Invalid X-Container-Sync-To format '//realm1/name1/AUTH_a'"),
        ("//other/name1/AUTH_a/c", "No realm key for 'other'"),
        ("//realm1/name2/AUTH_a/c", "No cluster endpoint for 'realm1' 'name2'"),
        ("gopher://127.0.0.1/v1/a/c", "Invalid scheme 'gopher' in X-Container-Sync-To"),
        ("http://127.0.0.1", "Path required in X-Container-Sync-To"),
        ("http://127.0.0.1/v1/a/c?x=1", "Params, queries, and fragments not allowed"),
        ("http://10.0.0.1/v1/a/c", "Invalid host '10.0.0.1' in X-Container-Sync-To"),
    ],
)
def test_bad_values_get_swifts_messages(value, message):
    with pytest.raises(SwiftError) as err:
        container_sync.validate_sync_to(cloud(), value)
    assert err.value.status == 400 and err.value.text.startswith(message)


def test_full_urls_only_when_allowed():
    allowed = container_sync.validate_sync_to(cloud(), "http://127.0.0.1:8080/v1/AUTH_a/c")
    assert allowed == container_sync.SyncTarget("http://127.0.0.1:8080/v1/AUTH_a/c", None, None)
    with pytest.raises(SwiftError) as err:
        container_sync.validate_sync_to(
            cloud(container_sync_allow_full_urls=False), "http://127.0.0.1:8080/v1/AUTH_a/c"
        )
    assert err.value.text == container_sync.FULL_URLS_REFUSED


def test_the_signature_is_swifts_get_sig():
    # swift.common.container_sync_realms.ContainerSyncRealms.get_sig, spelled out.
    message = b"PUT\n/v1/AUTH_a/c/o%20x\n1700000000.00000\nnonce\nuser-key"
    expected = hmac.new(b"realm-key", message, hashlib.sha1).hexdigest()
    got = container_sync.signature(
        "PUT", "/v1/AUTH_a/c/o%20x", "1700000000.00000", "nonce", "realm-key", "user-key"
    )
    assert got == expected


def test_either_realm_key_is_accepted_and_nothing_else():
    config = cloud().object_store
    args = ("DELETE", "/v1/AUTH_a/c/o", "1.00000", "n")
    for key in ("realm-key", "older-key"):
        sig = container_sync.signature(*args, key, "user-key")
        container_sync.verify_auth(config, f"realm1 n {sig}", *args[:3], "user-key")
    sig = container_sync.signature(*args, "realm-key", "user-key")
    for header, user_key in (
        (f"realm1 n {sig}", "another-user-key"),
        (f"realm1 n {sig}", None),  # the container has no sync key
        (f"realm2 n {sig}", "user-key"),
        (f"realm1 {sig}", "user-key"),
        (f"realm1 other-nonce {sig}", "user-key"),
    ):
        with pytest.raises(SwiftError) as err:
            container_sync.verify_auth(config, header, *args[:3], user_key)
        assert err.value.status == 401


def test_info_marks_this_cloud_current():
    assert container_sync.info(cloud()) == {
        "realms": {"REALM1": {"clusters": {"NAME1": {}, "HERE": {"current": True}}}}
    }
