"""AWS signatures: published AWS test vectors, and requests signed by botocore itself."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
from datetime import UTC, datetime

import pytest

from cumulo.identity import ec2_signature as sig

# The AWS Signature Version 4 test suite's example credentials.
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature={}"
)
# The S3 developer guide's example secret.
S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_sigv4_suite_get_vanilla():
    expected = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    headers = {
        "Host": "example.amazonaws.com",
        "X-Amz-Date": "20150830T123600Z",
        "Authorization": SUITE_AUTH.format(expected),
    }
    assert sig.sign_v4(SUITE_SECRET, "GET", "/", {}, headers) == expected
    credentials = {
        "access": "AKIDEXAMPLE",
        "signature": expected,
        "host": "example.amazonaws.com",
        "verb": "GET",
        "path": "/",
        "params": {},
        "headers": headers,
        "body_hash": sig.EMPTY_SHA256,
    }
    assert sig.verify_ec2(SUITE_SECRET, credentials)
    assert not sig.verify_ec2("another-secret", credentials)


def test_sigv4_canonical_request_and_string_to_sign_of_get_vanilla():
    headers = {"host": "example.amazonaws.com", "x-amz-date": "20150830T123600Z"}
    canonical = sig.v4_canonical_request(
        "GET", "/", {}, headers, "host;x-amz-date", sig.EMPTY_SHA256
    )
    assert canonical == (
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
        "host;x-amz-date\n" + sig.EMPTY_SHA256
    )
    assert sig.v4_string_to_sign(
        "20150830T123600Z", "20150830/us-east-1/service/aws4_request", canonical
    ) == (
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
    )


def test_sigv4_signing_key_of_the_aws_general_reference():
    key = sig.v4_signing_key(SUITE_SECRET, "20150830", "us-east-1", "iam")
    assert key.hex() == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"


def test_sigv4_iam_list_users_example():
    expected = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    headers = {
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "Host": "iam.amazonaws.com",
        "X-Amz-Date": "20150830T123600Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/"
        "aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=" + expected,
    }
    params = {"Action": "ListUsers", "Version": "2010-05-08"}
    assert sig.sign_v4(SUITE_SECRET, "GET", "/", params, headers) == expected


def test_s3_v2_developer_guide_example():
    string_to_sign = b"GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/johnsmith/photos/puppy.jpg"
    assert sig.sign_s3(S3_SECRET, string_to_sign) == "bWq2s1WEIj+Ydj0vQ697zp+IXMU="
    token = base64.urlsafe_b64encode(string_to_sign).decode()
    assert sig.verify_s3(
        S3_SECRET, {"access": "x", "token": token, "signature": "bWq2s1WEIj+Ydj0vQ697zp+IXMU="}
    )


def test_s3_v4_developer_guide_get_object_example():
    string_to_sign = (
        b"AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
        b"7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    )
    assert sig.sign_s3(S3_SECRET, string_to_sign) == (
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_v2_signature_covers_every_param_but_the_signature():
    params = {"Action": "DescribeInstances", "SignatureVersion": "2", "SignatureMethod": "HmacSHA1"}
    signed = sig.sign_v2("secret", "GET", "ec2.example.com", "/", params)
    assert sig.sign_v2("secret", "GET", "ec2.example.com", "/", {**params, "Signature": "x"}) == (
        signed
    )
    assert sig.sign_v2("secret", "GET", "ec2.example.com", "/", {**params, "Foo": "1"}) != signed
    # HmacSHA1 gives a 20-byte MAC, HmacSHA256 a 32-byte one.
    assert len(base64.b64decode(signed)) == 20
    sha256 = sig.sign_v2("secret", "GET", "h", "/", {**params, "SignatureMethod": "HmacSHA256"})
    assert len(base64.b64decode(sha256)) == 32


def test_unsupported_versions_and_malformed_input_are_refused():
    base = {"signature": "x", "host": "h", "verb": "GET", "path": "/", "headers": {}}
    for version in ("0", "1", "3"):
        with pytest.raises(sig.SignatureError):
            sig.verify_ec2("s", {**base, "params": {"SignatureVersion": version}})
    with pytest.raises(sig.SignatureError):
        sig.verify_ec2("s", {**base, "params": {}})
    with pytest.raises(sig.SignatureError):
        sig.verify_ec2("s", {**base, "signature": "", "params": {"SignatureVersion": "2"}})
    with pytest.raises(sig.SignatureError):
        sig.sign_v2("s", "GET", "h", "/", {"SignatureMethod": "HmacMD5"})
    with pytest.raises(sig.SignatureError):
        sig.parse_v4_authorization("AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request")
    with pytest.raises(sig.SignatureError):
        sig.decode_s3_token("not base64!")
    with pytest.raises(sig.SignatureError):
        sig.sign_s3("s", b"AWS4-HMAC-SHA256\nonly two lines")


def test_v4_request_date_must_match_the_credential_scope():
    headers = {
        "Host": "example.amazonaws.com",
        "X-Amz-Date": "20150831T000000Z",
        "Authorization": SUITE_AUTH.format("00"),
    }
    with pytest.raises(sig.SignatureError, match="date"):
        sig.sign_v4(SUITE_SECRET, "GET", "/", {}, headers)


def test_timestamps_in_both_aws_formats():
    expected = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
    assert sig.parse_timestamp("20150830T123600Z") == expected
    assert sig.parse_timestamp("2015-08-30T12:36:00Z") == expected
    assert sig.parse_timestamp("2015-08-30T12:36:00.000Z") == expected
    assert sig.parse_timestamp("2015-08-30T14:36:00+02:00") == expected
    assert sig.request_timestamp({"params": {"Timestamp": "2015-08-30T12:36:00Z"}}) == expected
    assert sig.request_timestamp({"headers": {"X-Amz-Date": "20150830T123600Z"}}) == expected
    assert sig.request_timestamp({"params": {}}) is None
    with pytest.raises(sig.SignatureError):
        sig.parse_timestamp("yesterday")


# -- cross-checks with botocore's own signers --------------------------------------

botocore = pytest.importorskip("botocore")
from botocore.auth import (  # noqa: E402
    HmacV1Auth,
    S3SigV4Auth,
    SigV2Auth,
    SigV4Auth,
    SigV4QueryAuth,
)
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

KEYS = Credentials("0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210")


def _split(url: str) -> tuple[str, str, dict[str, str]]:
    parts = urllib.parse.urlsplit(url)
    return parts.netloc, parts.path or "/", dict(urllib.parse.parse_qsl(parts.query))


def test_botocore_sigv2_get_is_verified():
    request = AWSRequest(
        method="GET",
        url="http://ec2.example.com:8788/services/Cloud",
        params={
            "Action": "DescribeInstances",
            "Filter.1.Name": "tag:Name",
            "Filter.1.Value": "a b",
        },
    )
    SigV2Auth(KEYS).add_auth(request)
    params = {k: str(v) for k, v in request.params.items()}
    credentials = {
        "access": KEYS.access_key,
        "signature": params.pop("Signature"),
        "host": "ec2.example.com:8788",
        "verb": "GET",
        "path": "/services/Cloud",
        "params": params,
    }
    assert sig.verify_ec2(KEYS.secret_key, credentials)
    assert not sig.verify_ec2(KEYS.secret_key, {**credentials, "path": "/other"})


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_botocore_sigv4_authorization_header_is_verified(method: str):
    body = "Action=DescribeRegions&Version=2016-11-15" if method == "POST" else ""
    url = "http://ec2.example.com:8788/"
    if method == "GET":
        url += "?Action=DescribeRegions&Version=2016-11-15&Empty="
    request = AWSRequest(
        method=method,
        url=url,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(KEYS, "ec2", "RegionOne").add_auth(request)
    host, path, params = _split(url)
    headers = {k: v for k, v in request.headers.items()}
    headers["Host"] = host
    signature = headers["Authorization"].rsplit("Signature=", 1)[1]
    credentials = {
        "access": KEYS.access_key,
        "signature": signature,
        "host": host,
        "verb": method,
        "path": path,
        "params": dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, True)),
        "headers": headers,
        "body_hash": hashlib.sha256(body.encode()).hexdigest(),
    }
    assert sig.verify_ec2(KEYS.secret_key, credentials)
    assert not sig.verify_ec2("wrong" + KEYS.secret_key, credentials)
    tampered = {**credentials, "body_hash": hashlib.sha256(b"x").hexdigest()}
    assert not sig.verify_ec2(KEYS.secret_key, tampered)


def test_botocore_sigv4_post_with_a_query_string_is_verified_as_aws_signs_it():
    """AWS's canonical query of a POST is its URL's (post_query=True, what the EC2 API
    checks); Keystone's is empty, its params possibly the form's (post_query=False);
    /v3/ec2tokens takes either (None)."""
    body = "RegionName.1=RegionOne"
    url = "http://ec2.example.com:8788/?Action=DescribeRegions&Version=2016-11-15"
    request = AWSRequest(method="POST", url=url, data=body, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})  # fmt: skip
    SigV4Auth(KEYS, "ec2", "RegionOne").add_auth(request)
    host, path, params = _split(url)
    credentials = {
        "access": KEYS.access_key,
        "signature": request.headers["Authorization"].rsplit("Signature=", 1)[1],
        "host": host,
        "verb": "POST",
        "path": path,
        "params": params,
        "headers": {**dict(request.headers.items()), "Host": host},
        "body_hash": hashlib.sha256(body.encode()).hexdigest(),
    }
    assert sig.verify_ec2(KEYS.secret_key, credentials, post_query=True)
    assert sig.verify_ec2(KEYS.secret_key, credentials)
    assert not sig.verify_ec2(KEYS.secret_key, credentials, post_query=False)
    added = {**credentials, "params": {**params, "DryRun": "true"}}
    assert not sig.verify_ec2(KEYS.secret_key, added, post_query=True)
    assert not sig.verify_ec2(KEYS.secret_key, added)

    # Keystone's callers: a POST with no query, its form's parameters in params.
    form = "Action=DescribeRegions&Version=2016-11-15"
    request = AWSRequest(method="POST", url="http://ec2.example.com:8788/", data=form,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    SigV4Auth(KEYS, "ec2", "RegionOne").add_auth(request)
    keystone = {
        **credentials,
        "signature": request.headers["Authorization"].rsplit("Signature=", 1)[1],
        "params": dict(urllib.parse.parse_qsl(form)),
        "headers": {**dict(request.headers.items()), "Host": host},
        "body_hash": hashlib.sha256(form.encode()).hexdigest(),
    }
    assert sig.verify_ec2(KEYS.secret_key, keystone)
    assert sig.verify_ec2(KEYS.secret_key, keystone, post_query=False)
    assert not sig.verify_ec2(KEYS.secret_key, keystone, post_query=True)
    assert sig.verify_ec2(KEYS.secret_key, {**keystone, "params": {}}, post_query=True)


def test_botocore_presigned_sigv4_query_is_verified():
    request = AWSRequest(method="GET", url="http://ec2.example.com/?Action=DescribeRegions")
    SigV4QueryAuth(KEYS, "ec2", "RegionOne", expires=300).add_auth(request)
    host, path, params = _split(request.url)
    credentials = {
        "access": KEYS.access_key,
        "signature": params["X-Amz-Signature"],
        "host": host,
        "verb": "GET",
        "path": path,
        "params": params,
        "headers": {"Host": host},
        "body_hash": sig.EMPTY_SHA256,
    }
    assert sig.verify_ec2(KEYS.secret_key, credentials)


def test_botocore_s3_v2_string_to_sign_is_verified():
    request = AWSRequest(method="GET", url="http://s3.example.com/bucket/key")
    request.headers["Date"] = "Tue, 27 Mar 2007 19:36:42 +0000"
    signer = HmacV1Auth(KEYS)
    split = urllib.parse.urlsplit(request.url)
    string_to_sign = signer.canonical_string(request.method, split, request.headers)
    expected = signer.get_signature(request.method, split, request.headers)
    assert sig.sign_s3(KEYS.secret_key, string_to_sign.encode()) == expected


def test_botocore_s3_v4_string_to_sign_is_verified():
    request = AWSRequest(method="PUT", url="http://s3.example.com/bucket/key", data=b"hello")
    signer = S3SigV4Auth(KEYS, "s3", "RegionOne")
    seen = []
    original = signer.string_to_sign
    signer.string_to_sign = lambda *a: seen.append(original(*a)) or seen[-1]
    signer.add_auth(request)
    [string_to_sign] = seen
    signature = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    token = base64.urlsafe_b64encode(string_to_sign.encode()).decode()
    assert sig.verify_s3(KEYS.secret_key, {"token": token, "signature": signature})
    assert not sig.verify_s3("nope", {"token": token, "signature": signature})
