"""S3 signatures: botocore signs, cumulo checks (v4 header and query, v2), and the
aws-chunked body of AWS's own streaming example."""

from __future__ import annotations

import hashlib

import botocore.auth
import botocore.awsrequest
import pytest
from botocore.credentials import Credentials

from cumulo.object_store.s3.errors import S3Error
from cumulo.object_store.s3.request import parse
from cumulo.object_store.s3.signature import ChunkDecoder, Signed, claim

ACCESS, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def scope_of(request: botocore.awsrequest.AWSRequest) -> dict:
    prepared = request.prepare()
    path, _, query = prepared.url.split("127.0.0.1:8080", 1)[1].partition("?")
    headers = [(k.lower().encode(), v.encode()) for k, v in prepared.headers.items()]
    headers.append((b"host", b"127.0.0.1:8080"))
    return {
        "method": prepared.method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": headers,
    }


def signed_request(auth_cls, method="GET", url="http://127.0.0.1:8080/b/a%20key?acl", body=b""):
    request = botocore.awsrequest.AWSRequest(method=method, url=url, data=body)
    creds = Credentials(ACCESS, SECRET)
    if auth_cls is botocore.auth.HmacV1Auth:
        auth_cls(creds).add_auth(request)
    else:
        auth_cls(creds, "s3", "RegionOne").add_auth(request)
    return parse(scope_of(request), "s3.localhost")


@pytest.mark.parametrize("auth_cls", [botocore.auth.S3SigV4Auth, botocore.auth.HmacV1Auth])
def test_botocore_signatures_are_checked(auth_cls):
    req = signed_request(auth_cls, "PUT", body=b"<AccessControlPolicy/>")
    signed = claim(req)
    assert signed is not None and signed.access == ACCESS
    assert req.bucket == "b" and req.key == "a key"
    assert signed.matches(SECRET)
    assert not signed.matches("another secret")


def test_presigned_query_v4_is_checked_and_expires():
    request = botocore.awsrequest.AWSRequest(method="GET", url="http://127.0.0.1:8080/b/k")
    request.context["timestamp"] = None
    botocore.auth.S3SigV4QueryAuth(Credentials(ACCESS, SECRET), "s3", "RegionOne", 60).add_auth(
        request
    )
    signed = claim(parse(scope_of(request), ""))
    assert signed is not None and signed.matches(SECRET)
    old = botocore.awsrequest.AWSRequest(method="GET", url="http://127.0.0.1:8080/b/k")
    import datetime
    from unittest import mock

    then = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(hours=2)
    with mock.patch("botocore.auth.get_current_datetime", return_value=then):
        botocore.auth.S3SigV4QueryAuth(Credentials(ACCESS, SECRET), "s3", "RegionOne", 60).add_auth(
            old
        )
    with pytest.raises(S3Error) as exc:
        claim(parse(scope_of(old), ""))
    assert exc.value.code == "AccessDenied" and "expired" in exc.value.message


def test_virtual_host_style_names_the_bucket_in_the_host():
    scope = {
        "method": "GET",
        "path": "/photos/2026.jpg",
        "raw_path": b"/photos/2026.jpg",
        "query_string": b"",
        "headers": [(b"host", b"media.s3.localhost:8080")],
    }
    req = parse(scope, "s3.localhost")
    assert (req.bucket, req.key, req.virtual_host) == ("media", "photos/2026.jpg", True)


def test_a_repeated_header_is_one_field_of_its_values_in_order():
    scope = {
        "method": "GET",
        "path": "/b/k",
        "raw_path": b"/b/k",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8080"), (b"X-Amz-Meta-A", b"1"),
                    (b"x-amz-meta-a", b"2"), (b"Range", b"bytes=0-1")],
    }  # fmt: skip
    req = parse(scope, "")
    assert req.headers == {"host": "127.0.0.1:8080", "x-amz-meta-a": "1,2", "range": "bytes=0-1"}


def test_a_request_time_read_before_is_checked_against_the_clock_each_time():
    """Request times are parsed once per value (the same second's requests share one);
    the 15 minutes of skew are still measured from now on every request."""
    req = signed_request(botocore.auth.S3SigV4Auth)
    stale = "20200101T000000Z"
    req.headers["x-amz-date"] = stale
    for _ in range(2):
        with pytest.raises(S3Error) as exc:
            claim(req)
        assert exc.value.code == "RequestTimeTooSkewed"


def test_aws_streaming_example_chunks():
    """The example of AWS's "Signature Calculations for the Authorization Header:
    Transferring Payload in Multiple Chunks": 66560 bytes of 'a' in chunks of 64 KiB."""
    seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    signed = Signed(
        ACCESS, seed, "", 4, ("20130524", "us-east-1", "s3"), "20130524T000000Z",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    )  # fmt: skip
    chunks = [
        (65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
        (1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
        (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
    ]
    body = b"".join(
        f"{size:x};chunk-signature={sig}\r\n".encode() + b"a" * size + b"\r\n"
        for size, sig in chunks
    )
    decoder = ChunkDecoder(signed, signed.signing_key(SECRET))
    # Fed in uneven pieces, as a socket would give it.
    out = b"".join(decoder.feed(body[i : i + 7000]) for i in range(0, len(body), 7000))
    assert decoder.done and out == b"a" * 66560
    tampered = bytearray(body)
    tampered[200] = ord("b")
    decoder = ChunkDecoder(signed, signed.signing_key(SECRET))
    with pytest.raises(S3Error) as exc:
        decoder.feed(bytes(tampered))
    assert exc.value.code == "SignatureDoesNotMatch"
    assert hashlib.sha256(out).hexdigest()
