"""Barbican's input rules as the Key Manager applies them: new secrets and their
payloads, PUT payloads, what GET .../payload answers, orders, containers, ACLs,
metadata and list filters."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

import pytest

from cumulo.common.faults import (
    BadRequest,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from cumulo.key_manager import validation as v

NOW = datetime(2026, 12, 7, 3, 0, 0)
MAX = 20000


def test_a_base64_secret_keeps_every_byte():
    raw = bytes(range(256))
    new = v.new_secret(
        {
            "name": " luks ",
            "payload": base64.b64encode(raw).decode(),
            "payload_content_type": "application/octet-stream",
            "payload_content_encoding": "base64",
            "secret_type": "symmetric",
            "algorithm": "aes",
            "bit_length": 256,
            "mode": "xts",
        },
        NOW,
        MAX,
    )
    assert new.payload == raw and new.content_type == "application/octet-stream"
    assert new.name == "luks" and new.secret_type == "symmetric" and new.bit_length == 256


def test_a_text_secret_is_normalized_to_text_plain():
    new = v.new_secret(
        {"payload": "beer", "payload_content_type": "text/plain; charset=utf-8"}, NOW, MAX
    )
    assert new.payload == b"beer" and new.content_type == "text/plain"
    assert new.secret_type == "opaque"


def test_metadata_only_secret_has_no_payload():
    new = v.new_secret({"name": "later"}, NOW, MAX)
    assert new.payload is None and new.content_type is None


@pytest.mark.parametrize(
    ("body", "prop"),
    [
        ({"payload": "x"}, "payload_content_type"),
        ({"payload": "x", "payload_content_type": "application/json"}, "payload_content_type"),
        (
            {
                "payload": "x",
                "payload_content_type": "text/plain",
                "payload_content_encoding": "base64",
            },
            "payload_content_encoding",
        ),
        (
            {"payload": "eA==", "payload_content_type": "application/octet-stream"},
            "payload_content_encoding",
        ),
        (
            {
                "payload": "not base64!",
                "payload_content_type": "application/octet-stream",
                "payload_content_encoding": "base64",
            },
            "payload",
        ),
        ({"payload": "   ", "payload_content_type": "text/plain"}, "payload"),
        ({"payload_content_type": "text/plain"}, "payload"),
        ({"bit_length": 0}, "bit_length"),
        ({"bit_length": "256"}, "bit_length"),
        ({"secret_type": "password"}, "secret_type"),
        ({"expiration": "yesterday"}, "expiration"),
        ({"expiration": "2020-01-01T00:00:00Z"}, "expiration"),
        ({"name": 5}, "name"),
    ],
)
def test_bad_secrets_are_400_naming_the_property(body, prop):
    with pytest.raises(BadRequest) as err:
        v.new_secret(body, NOW, MAX)
    assert err.value.message.endswith(f"Invalid property: '{prop}'")
    assert err.value.message.startswith("Provided object does not match schema 'Secret'")


def test_a_payload_over_the_limit_is_413():
    with pytest.raises(PayloadTooLarge):
        v.new_secret({"payload": "x" * 101, "payload_content_type": "text/plain"}, NOW, 100)


def test_expiration_is_kept_as_naive_utc():
    later = (NOW + timedelta(days=1)).isoformat() + "+02:00"
    new = v.new_secret({"expiration": later}, NOW, MAX)
    assert new.expiration == NOW + timedelta(days=1) - timedelta(hours=2)


def test_put_payload_rules():
    assert v.put_payload(b"abc", "text/plain", None, MAX) == (b"abc", "text/plain")
    assert v.put_payload(b"\x00\xff", "application/octet-stream", None, MAX) == (
        b"\x00\xff",
        "application/octet-stream",
    )
    assert v.put_payload(b"AP8=", "application/octet-stream", "base64", MAX)[0] == b"\x00\xff"
    with pytest.raises(UnsupportedMediaType):
        v.put_payload(b"{}", "application/json", None, MAX)
    with pytest.raises(UnsupportedMediaType):
        v.put_payload(b"abc", None, None, MAX)
    with pytest.raises(BadRequest):
        v.put_payload(b"", "text/plain", None, MAX)
    with pytest.raises(PayloadTooLarge):
        v.put_payload(b"x" * 11, "text/plain", None, 10)
    with pytest.raises(BadRequest):
        v.put_payload(b"abc", "application/octet-stream", "gzip", MAX)


def test_payload_answers_in_the_media_type_asked_for():
    assert v.payload_for(b"beer", "text/plain", None) == (b"beer", "application/octet-stream")
    assert v.payload_for(b"beer", "text/plain", "*/*") == (b"beer", "text/plain")
    assert v.payload_for(b"beer", "application/octet-stream", "text/plain") == (
        b"beer",
        "text/plain",
    )
    with pytest.raises(NotAcceptable):
        v.payload_for(b"\xff\xfe", "application/octet-stream", "text/plain")
    with pytest.raises(NotAcceptable):
        v.payload_for(b"beer", "text/plain", "application/xml")


def test_key_orders_need_algorithm_and_a_bit_length_multiple_of_8():
    order = v.new_order(
        {"type": "key", "meta": {"name": "k", "algorithm": "aes", "bit_length": 256}}, NOW, MAX
    )
    assert order.secret.algorithm == "aes" and order.secret.bit_length == 256
    for meta in (
        {"bit_length": 256},
        {"algorithm": "aes"},
        {"algorithm": "aes", "bit_length": 100},
        {"algorithm": "aes", "bit_length": 256, "payload": "x"},
    ):
        with pytest.raises(BadRequest):
            v.new_order({"type": "key", "meta": meta}, NOW, MAX)
    with pytest.raises(BadRequest):
        v.new_order({"type": "certificate", "meta": {}}, NOW, MAX)
    with pytest.raises(BadRequest):
        v.new_order({"type": "key"}, NOW, MAX)


def test_containers_check_names_refs_and_their_host():
    host = "http://kms:9311"
    ref = f"{host}/v1/secrets/" + "1" * 8 + "-1111-4111-8111-" + "1" * 12
    other = ref[:-1] + "2"
    rsa = v.new_container(
        {
            "type": "rsa",
            "name": "pair",
            "secret_refs": [
                {"name": "private_key", "secret_ref": ref},
                {"name": "public_key", "secret_ref": other + "/"},
            ],
        },
        host,
    )
    assert rsa.secret_refs == [
        ("private_key", ref.rsplit("/", 1)[1]),
        ("public_key", other.rsplit("/", 1)[1]),
    ]
    bad = [
        {"type": "vault"},
        {"type": "rsa", "secret_refs": [{"name": "private_key", "secret_ref": ref}]},
        {"type": "certificate", "secret_refs": [{"name": "private_key", "secret_ref": ref}]},
        {
            "type": "generic",
            "secret_refs": [{"name": "a", "secret_ref": ref}, {"name": "a", "secret_ref": other}],
        },
        {
            "type": "generic",
            "secret_refs": [{"name": "a", "secret_ref": ref}, {"name": "b", "secret_ref": ref}],
        },
        {
            "type": "generic",
            "secret_refs": [{"name": "a", "secret_ref": "http://evil/v1/secrets/x"}],
        },
        {"type": "generic", "secret_refs": [{"name": "a"}]},
    ]
    for body in bad:
        with pytest.raises(BadRequest):
            v.new_container(body, host)


def test_acl_bodies_allow_only_read_users_and_project_access():
    assert v.acl_body({"read": {"users": ["u1"], "project-access": False}})
    for body in (
        {"write": {"users": []}},
        {"read": {"users": "u1"}},
        {"read": {"project-access": "no"}},
        {"read": {"groups": []}},
        [],
    ):
        with pytest.raises(BadRequest):
            v.acl_body(body)


def test_metadata_keys_are_url_safe_and_lowered():
    assert v.metadata_body({"metadata": {"Volume": "v1"}}) == {"volume": "v1"}
    assert v.metadatum_body({"key": "Use", "value": "luks"}) == ("use", "luks")
    for body in ({"metadata": {"a b": "x"}}, {"metadata": {"a": 1}}, {"meta": {}}):
        with pytest.raises(BadRequest):
            v.metadata_body(body)
    for body in ({"key": "a/b", "value": "x"}, {"key": "a"}, {"key": "a", "value": "x", "z": 1}):
        with pytest.raises(BadRequest):
            v.metadatum_body(body)


def test_list_filters_and_paging():
    assert v.date_filter("gte:2020-01-01T00:00:00,lt:2020-02-01T00:00:00") == [
        ("gte", datetime(2020, 1, 1)),
        ("lt", datetime(2020, 2, 1)),
    ]
    assert v.date_filter("2020-01-01T00:00:00") == [("eq", datetime(2020, 1, 1))]
    for bad in ("gt:nope", "gt:2020-01-01,gte:2020-01-02", "2020-01-01,lte:2020-01-02"):
        with pytest.raises(BadRequest):
            v.date_filter(bad)
    assert v.sort_keys("created:desc,name") == [("created", "desc"), ("name", "asc")]
    for bad in ("colour", "name:up", "name,name:desc", "a:b:c"):
        with pytest.raises(BadRequest):
            v.sort_keys(bad)
    assert v.paging(None, None, 10, 100) == (0, 10)
    assert v.paging("-5", "1000", 10, 100) == (0, 100)
    assert v.paging("x", "0", 10, 100) == (0, 1)
    assert v.paging("3", "y", 10, 100) == (3, 10)


def test_container_consumers_need_a_name_and_url():
    assert v.container_consumer_body({"name": "lb", "URL": "http://lb/1"}) == ("lb", "http://lb/1")
    for body in (
        {"name": "lb"},
        {"URL": "u"},
        {"name": "x" * 37, "URL": "u"},
        {"name": "", "URL": "u"},
    ):
        with pytest.raises(BadRequest):
            v.container_consumer_body(body)
