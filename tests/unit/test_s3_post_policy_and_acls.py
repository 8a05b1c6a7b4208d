"""POST Object policies (botocore signs, cumulo checks; conditions as S3 applies them)
and objects' own ACLs (canned, grant headers, AccessControlPolicy bodies, who they let in)."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import boto3
import pytest

from cumulo.object_store.s3 import acl
from cumulo.object_store.s3.errors import S3Error
from cumulo.object_store.s3.post_object import check_conditions, decode_policy
from cumulo.object_store.s3.signature import sign_policy

ACCESS, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def encoded(policy: dict) -> str:
    return base64.b64encode(json.dumps(policy).encode()).decode()


def in_minutes(minutes: int) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_a_policy_botocore_signs_is_signed_as_cumulo_checks():
    s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:8080", region_name="RegionOne",
                      aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)  # fmt: skip
    fields = s3.generate_presigned_post("photos", "up/${filename}")["fields"]
    _, day, region, service, _ = fields["x-amz-credential"].split("/")
    assert (
        sign_policy(SECRET, fields["policy"], (day, region, service)) == (fields["x-amz-signature"])
    )
    assert (
        sign_policy("other", fields["policy"], (day, region, service))
        != (fields["x-amz-signature"])
    )
    # SigV2: base64 HMAC-SHA1 of the policy.
    assert len(base64.b64decode(sign_policy(SECRET, fields["policy"], None))) == 20


def test_policy_documents_are_checked():
    policy = decode_policy(encoded({"expiration": in_minutes(5), "conditions": []}))
    assert policy["conditions"] == []
    for document, code, message in (
        ({"expiration": in_minutes(-1), "conditions": []}, "AccessDenied", "Policy expired."),
        ({"conditions": []}, "InvalidPolicyDocument", "Policy missing expiration."),
        ({"expiration": in_minutes(5)}, "InvalidPolicyDocument", "Policy missing conditions."),
        ({"expiration": "soon", "conditions": []}, "InvalidPolicyDocument", "expiration"),
    ):
        with pytest.raises(S3Error) as exc:
            decode_policy(encoded(document))
        assert exc.value.code == code and message in exc.value.message
    with pytest.raises(S3Error) as exc:
        decode_policy("not base64!")
    assert exc.value.code == "InvalidPolicyDocument"


def test_conditions_hold_or_name_what_failed():
    conditions = [{"bucket": "photos"}, ["starts-with", "$key", "up/"],
                  ["eq", "$Content-Type", "image/png"], ["content-length-range", 1, 100],
                  ["starts-with", "$x-amz-meta-tag", ""]]  # fmt: skip
    policy = {"conditions": conditions}
    fields = {"key": "up/a.png", "content-type": "image/png", "x-amz-meta-tag": "any",
              "policy": "p", "x-amz-signature": "s", "x-ignore-me": "1"}  # fmt: skip
    assert check_conditions(policy, fields, "photos") == (1, 100)
    cases = (
        ({**fields, "key": "down/a.png"}, "photos", 'Policy Condition failed: ["starts-with"'),
        ({**fields, "content-type": "image/gif"}, "photos", '["eq", "$Content-Type"'),
        (fields, "videos", 'Policy Condition failed: {"bucket": "photos"}'),
        ({**fields, "x-amz-meta-other": "1"}, "photos", "Extra input fields: x-amz-meta-other"),
    )
    for form, bucket, message in cases:
        with pytest.raises(S3Error) as exc:
            check_conditions(policy, form, bucket)
        assert exc.value.code == "AccessDenied"
        assert exc.value.message.startswith("Invalid according to Policy: ")
        assert message in exc.value.message
    for bad in (["weird"], ["contains", "$key", "x"], ["content-length-range", "a", "b"], 7):
        with pytest.raises(S3Error) as exc:
            check_conditions({"conditions": [bad]}, {}, "photos")
        assert exc.value.code == "InvalidPolicyDocument"


def test_object_acls_from_canned_acls_grant_headers_and_policies():
    assert acl.object_grants_from_request({}) is None
    assert acl.object_grants_from_request({"x-amz-acl": "private"}) == []
    assert acl.object_grants_from_request({"x-amz-acl": "public-read"}) == [
        ("Group", acl.ALL_USERS, "READ")
    ]
    granted = acl.object_grants_from_request(
        {
            "x-amz-grant-read": f'id="p1", uri="{acl.AUTHENTICATED}"',
            "x-amz-grant-write-acp": "id=p2",
        }  # fmt: skip
    )
    assert granted == [("CanonicalUser", "p1", "READ"), ("Group", acl.AUTHENTICATED, "READ"),
                       ("CanonicalUser", "p2", "WRITE_ACP")]  # fmt: skip
    for headers, code in (
        ({"x-amz-acl": "everyone"}, "InvalidArgument"),
        ({"x-amz-acl": "private", "x-amz-grant-read": "id=p1"}, "InvalidRequest"),
        ({"x-amz-grant-read": 'emailAddress="a@b.c"'}, "UnresolvableGrantByEmailAddress"),
        ({"x-amz-grant-read": 'uri="http://example.com/group"'}, "InvalidArgument"),
    ):
        with pytest.raises(S3Error) as exc:
            acl.object_grants_from_request(headers)
        assert exc.value.code == code
    assert acl.decode_grants(acl.encode_grants(granted)) == granted
    assert acl.decode_grants("") is None and acl.encode_grants(None) == ""

    body = ET.fromstring(
        "<AccessControlPolicy><Owner><ID>owner</ID></Owner><AccessControlList>"
        "<Grant><Grantee><ID>owner</ID></Grantee><Permission>FULL_CONTROL</Permission></Grant>"
        f"<Grant><Grantee><URI>{acl.ALL_USERS}</URI></Grantee><Permission>READ</Permission>"
        "</Grant></AccessControlList></AccessControlPolicy>"
    )
    assert acl.object_grants_from_policy(body, "owner") == [("Group", acl.ALL_USERS, "READ")]
    with pytest.raises(S3Error) as exc:
        acl.object_grants_from_policy(ET.fromstring("<AccessControlPolicy/>"), "owner")
    assert exc.value.code == "MalformedACLError"


def test_who_an_object_acl_lets_in():
    anonymous = SimpleNamespace(credential=None)
    member = SimpleNamespace(credential=SimpleNamespace(project_id="p1"))
    stranger = SimpleNamespace(credential=SimpleNamespace(project_id="p9"))
    public = [("Group", acl.ALL_USERS, "READ")]
    signed_in = [("Group", acl.AUTHENTICATED, "READ")]
    named = [("CanonicalUser", "p1", "FULL_CONTROL")]
    allows = acl.grants_allow
    assert allows(anonymous, public, "READ") and not allows(anonymous, public, "READ_ACP")
    assert not allows(anonymous, signed_in, "READ") and allows(stranger, signed_in, "READ")
    assert allows(member, named, "WRITE_ACP") and not allows(stranger, named, "READ")
    assert not allows(member, [], "READ")
