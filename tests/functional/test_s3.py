"""The S3 API as a new user meets it: `openstack ec2 credentials create`, then boto3,
awscli and s3cmd against the object store's port; the same bytes through Swift."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from unittest import mock

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.cloudrunner import VENV_BIN, CloudRunner, configure_state_dir
from tests.functional.object_store_helpers import account_client, unique

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    state = tmp_path_factory.mktemp("s3")
    configure_state_dir(state)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def endpoint(cloud: CloudRunner) -> str:
    return f"http://127.0.0.1:{cloud.config.ports.object_store}"


def ec2_credentials(cloud: CloudRunner, os_cloud: str) -> dict:
    made = cloud.openstack("ec2", "credentials", "create", "-f", "json", cloud=os_cloud)
    return {"aws_access_key_id": made["access"], "aws_secret_access_key": made["secret"]}


@pytest.fixture(scope="module")
def demo_keys(cloud: CloudRunner) -> dict:
    return ec2_credentials(cloud, "cumulo-demo")


def client(endpoint: str, keys: dict, **config):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="RegionOne",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
        **keys,
    )


@pytest.fixture(scope="module")
def s3(endpoint: str, demo_keys: dict):
    return client(endpoint, demo_keys)


@pytest.fixture(scope="module")
def demo_swift(cloud: CloudRunner):
    with account_client(cloud, cloud.token("demo", project="demo")) as http:
        yield http


def error_of(excinfo) -> tuple[str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_boto3_buckets_and_objects_are_swift_containers_and_objects(s3, demo_swift):
    bucket = unique("photos")
    s3.create_bucket(Bucket=bucket)
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "RegionOne"
    data = os.urandom(300_000)
    put = s3.put_object(
        Bucket=bucket, Key="2026/a b.jpg", Body=data, ContentType="image/jpeg",
        Metadata={"camera": "x100"}, StorageClass="STANDARD_IA",
    )  # fmt: skip
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    head = s3.head_object(Bucket=bucket, Key="2026/a b.jpg")
    assert head["ContentLength"] == len(data) and head["Metadata"] == {"camera": "x100"}
    assert head["ContentType"] == "image/jpeg" and head["StorageClass"] == "STANDARD_IA"
    # The same object through Swift, metadata and all.
    swift = demo_swift.get(f"/{bucket}/2026/a b.jpg")
    assert swift.status_code == 200 and swift.content == data
    assert swift.headers["x-object-meta-camera"] == "x100"
    # Written through Swift, read through S3.
    assert demo_swift.put(f"/{bucket}/notes.txt", content=b"from swift").status_code == 201
    got = s3.get_object(Bucket=bucket, Key="notes.txt")
    assert got["Body"].read() == b"from swift"
    part = s3.get_object(Bucket=bucket, Key="2026/a b.jpg", Range="bytes=10-19")
    assert part["Body"].read() == data[10:20] and part["ContentRange"].endswith(f"/{len(data)}")
    over = s3.get_object(
        Bucket=bucket, Key="notes.txt", ResponseContentType="text/x-note",
        ResponseContentDisposition="attachment",
    )  # fmt: skip
    assert over["ContentType"] == "text/x-note" and over["ContentDisposition"] == "attachment"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="notes.txt", IfMatch='"nope"')
    assert error_of(exc) == ("PreconditionFailed", 412)
    # Listings: v1 and v2, prefix, delimiter, pages.
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"logs/{i}.log", Body=b"x" * i)
    v2 = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [c["Prefix"] for c in v2["CommonPrefixes"]] == ["2026/", "logs/"]
    assert [o["Key"] for o in v2["Contents"]] == ["notes.txt"]
    keys, token = [], None
    while True:
        kwargs = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, Prefix="logs/", MaxKeys=2, **kwargs)
        keys += [o["Key"] for o in page["Contents"]]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert keys == [f"logs/{i}.log" for i in range(5)]
    v1 = s3.list_objects(Bucket=bucket, Marker="logs/2.log", EncodingType="url")
    assert [o["Key"] for o in v1["Contents"]] == ["logs/3.log", "logs/4.log", "notes.txt"]
    paged = s3.get_paginator("list_objects").paginate(Bucket=bucket, Delimiter="/", MaxKeys=1)
    seen = [(p.get("CommonPrefixes"), p.get("Contents")) for p in paged]
    assert len(seen) == 3
    # Copy: metadata kept (COPY) or replaced (REPLACE).
    s3.copy_object(
        Bucket=bucket, Key="copy.jpg", CopySource={"Bucket": bucket, "Key": "2026/a b.jpg"}
    )
    assert s3.head_object(Bucket=bucket, Key="copy.jpg")["Metadata"] == {"camera": "x100"}
    s3.copy_object(
        Bucket=bucket, Key="copy2.jpg", CopySource=f"{bucket}/2026/a b.jpg",
        MetadataDirective="REPLACE", Metadata={"k": "v"}, ContentType="text/plain",
    )  # fmt: skip
    replaced = s3.head_object(Bucket=bucket, Key="copy2.jpg")
    assert replaced["Metadata"] == {"k": "v"} and replaced["ContentType"] == "text/plain"
    with pytest.raises(ClientError) as exc:
        s3.copy_object(
            Bucket=bucket, Key="copy3", CopySource=f"{bucket}/notes.txt", CopySourceIfMatch='"0"'
        )
    assert error_of(exc) == ("PreconditionFailed", 412)
    # A bucket with objects is not deleted; emptied, it goes (and its Swift container).
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)
    assert error_of(exc) == ("BucketNotEmpty", 409)
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    deleted = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": k} for k in listed] + [{"Key": "gone"}]}
    )
    assert sorted(d["Key"] for d in deleted["Deleted"]) == sorted([*listed, "gone"])
    s3.delete_bucket(Bucket=bucket)
    assert demo_swift.head(f"/{bucket}").status_code == 404
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=bucket)
    assert exc.value.response["Error"]["Code"] == "404"


def test_multipart_upload_is_a_static_large_object(s3, demo_swift):
    bucket = unique("multi")
    s3.create_bucket(Bucket=bucket)
    parts_data = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1000)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big.bin", Metadata={"a": "1"})
    uid = upload["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [uid]
    etags = []
    for n, chunk in enumerate(parts_data, 1):
        etags.append(
            s3.upload_part(Bucket=bucket, Key="big.bin", UploadId=uid, PartNumber=n, Body=chunk)[
                "ETag"
            ]
        )
    listed = s3.list_parts(Bucket=bucket, Key="big.bin", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 5 * MiB), (2, 5 * MiB), (3, 1000)]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="big.bin", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )  # fmt: skip
    md5s = b"".join(hashlib.md5(c).digest() for c in parts_data)
    expected = f'"{hashlib.md5(md5s).hexdigest()}-3"'
    assert done["ETag"] == expected
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ETag"] == expected and head["Metadata"] == {"a": "1"}
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == b"".join(parts_data)
    swift = demo_swift.head(f"/{bucket}/big.bin")
    assert swift.headers["x-static-large-object"] == "True"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # UploadPartCopy with a range, and Abort.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="copied")
    copied = s3.upload_part_copy(
        Bucket=bucket, Key="copied", UploadId=upload["UploadId"], PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "big.bin"}, CopySourceRange="bytes=0-99",
    )  # fmt: skip
    assert copied["CopyPartResult"]["ETag"] == f'"{hashlib.md5(parts_data[0][:100]).hexdigest()}"'
    s3.abort_multipart_upload(Bucket=bucket, Key="copied", UploadId=upload["UploadId"])
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket=bucket, Key="copied", UploadId=upload["UploadId"])
    assert error_of(exc) == ("NoSuchUpload", 404)
    # Parts under 5 MiB (but the last) are refused at Complete.
    small = s3.create_multipart_upload(Bucket=bucket, Key="small")
    tags = [
        s3.upload_part(
            Bucket=bucket, Key="small", UploadId=small["UploadId"], PartNumber=n, Body=b"x" * MiB
        )["ETag"]
        for n in (1, 2)
    ]
    with pytest.raises(ClientError) as exc:
        parts = [{"PartNumber": n, "ETag": e} for n, e in enumerate(tags, 1)]
        s3.complete_multipart_upload(
            Bucket=bucket, Key="small", UploadId=small["UploadId"], MultipartUpload={"Parts": parts}
        )
    assert error_of(exc) == ("EntityTooSmall", 400)
    s3.delete_object(Bucket=bucket, Key="big.bin")
    assert (
        demo_swift.get(
            f"/{bucket}+segments", params={"format": "json", "prefix": "big.bin/"}
        ).json()
        == []
    )


def test_awscli_and_s3cmd_as_a_user_would(cloud, endpoint, demo_keys, demo_swift, tmp_path: Path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ACCESS_KEY_ID": demo_keys["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": demo_keys["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "RegionOne",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }

    def aws(*args: str) -> str:
        proc = subprocess.run(
            [str(VENV_BIN / "aws"), "--endpoint-url", endpoint, "s3", *args],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, f"aws s3 {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    bucket = unique("cli")
    aws("mb", f"s3://{bucket}")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(50 * MiB))
    aws("cp", str(big), f"s3://{bucket}/big.bin")  # awscli sends 50 MiB as a multipart upload
    assert "big.bin" in aws("ls", f"s3://{bucket}/")
    folder = tmp_path / "site"
    (folder / "css").mkdir(parents=True)
    (folder / "index.html").write_text("<h1>hi</h1>")
    (folder / "css" / "a.css").write_text("h1{}")
    aws("sync", str(folder), f"s3://{bucket}/site")
    swift_names = [
        o["name"] for o in demo_swift.get(f"/{bucket}", params={"format": "json"}).json()
    ]
    assert swift_names == ["big.bin", "site/css/a.css", "site/index.html"]
    assert demo_swift.head(f"/{bucket}/big.bin").headers["content-length"] == str(50 * MiB)
    url = aws("presign", f"s3://{bucket}/site/index.html", "--expires-in", "60").strip()
    assert httpx.get(url).text == "<h1>hi</h1>"
    aws("cp", f"s3://{bucket}/big.bin", str(tmp_path / "back.bin"))
    assert (
        hashlib.md5((tmp_path / "back.bin").read_bytes()).digest()
        == hashlib.md5(big.read_bytes()).digest()
    )
    listed = cloud.openstack("object", "list", bucket, "-f", "json", cloud="cumulo-demo")
    assert len(listed) == 3

    if shutil.which("s3cmd") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("s3cmd is not installed (cumulo host-packages --with-test installs it)")
    else:
        host = endpoint.removeprefix("http://")
        cfg = tmp_path / "s3cfg"
        cfg.write_text(
            f"[default]\naccess_key = {demo_keys['aws_access_key_id']}\n"
            f"secret_key = {demo_keys['aws_secret_access_key']}\nhost_base = {host}\n"
            f"host_bucket = {host}\nuse_https = False\nbucket_location = RegionOne\n"
        )

        def s3cmd(*args: str) -> str:
            proc = subprocess.run(
                ["s3cmd", "-c", str(cfg), *args], capture_output=True, text=True, timeout=120
            )
            assert proc.returncode == 0, f"s3cmd {' '.join(args)}: {proc.stderr}"
            return proc.stdout

        (tmp_path / "s3cmd.txt").write_text("via s3cmd")
        s3cmd("put", str(tmp_path / "s3cmd.txt"), f"s3://{bucket}/s3cmd.txt")
        assert "s3cmd.txt" in s3cmd("ls", f"s3://{bucket}/")
        assert demo_swift.get(f"/{bucket}/s3cmd.txt").text == "via s3cmd"
        s3cmd("get", f"s3://{bucket}/site/index.html", str(tmp_path / "got.html"))
        assert (tmp_path / "got.html").read_text() == "<h1>hi</h1>"
        s3cmd("del", f"s3://{bucket}/s3cmd.txt")
    aws("rm", f"s3://{bucket}", "--recursive")
    aws("rb", f"s3://{bucket}")
    assert demo_swift.head(f"/{bucket}").status_code == 404


def test_presigned_urls_public_buckets_and_other_projects(cloud, endpoint, s3):
    bucket = unique("share")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"secret doc")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "doc.txt"}, ExpiresIn=2
    )
    assert httpx.get(url).content == b"secret doc"
    anonymous = httpx.get(f"{endpoint}/{bucket}/doc.txt")
    assert anonymous.status_code == 403 and "<Code>AccessDenied</Code>" in anonymous.text
    time.sleep(3)
    expired = httpx.get(url)
    assert expired.status_code == 403 and "Request has expired" in expired.text
    # SigV2 query signing (presigned) works too.
    v2 = client(endpoint, s3._request_signer._credentials.__dict__ and {
        "aws_access_key_id": s3._request_signer._credentials.access_key,
        "aws_secret_access_key": s3._request_signer._credentials.secret_key,
    }, signature_version="s3")  # fmt: skip
    assert v2.get_object(Bucket=bucket, Key="doc.txt")["Body"].read() == b"secret doc"
    assert (
        httpx.get(
            v2.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "doc.txt"})
        ).content
        == b"secret doc"
    )
    # public-read: anyone reads and lists.
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"} in [
        g["Grantee"] for g in grants
    ]
    assert httpx.get(f"{endpoint}/{bucket}/doc.txt").content == b"secret doc"
    assert "<Key>doc.txt</Key>" in httpx.get(f"{endpoint}/{bucket}").text
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    assert httpx.get(f"{endpoint}/{bucket}/doc.txt").status_code == 403
    # Another project's bucket: AccessDenied, and its name is taken.
    admin = client(endpoint, ec2_credentials(cloud, "cumulo"))
    with pytest.raises(ClientError) as exc:
        admin.get_object(Bucket=bucket, Key="doc.txt")
    assert error_of(exc) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as exc:
        admin.create_bucket(Bucket=bucket)
    assert error_of(exc) == ("BucketAlreadyExists", 409)
    assert bucket not in [b["Name"] for b in admin.list_buckets()["Buckets"]]


def test_bad_input_gets_s3_errors_and_stores_nothing(endpoint, s3, demo_keys, demo_swift):
    bucket = unique("bad")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="ten", Body=b"0123456789")
    wrong = client(endpoint, {**demo_keys, "aws_secret_access_key": "not-the-secret"})
    with pytest.raises(ClientError) as exc:
        wrong.list_buckets()
    assert error_of(exc) == ("SignatureDoesNotMatch", 403)
    unknown = client(endpoint, {"aws_access_key_id": "AKIDUNKNOWN", "aws_secret_access_key": "x"})
    with pytest.raises(ClientError) as exc:
        unknown.list_buckets()
    assert error_of(exc) == ("InvalidAccessKeyId", 403)
    old = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=old):
        with pytest.raises(ClientError) as exc:
            s3.list_buckets()
    assert error_of(exc) == ("RequestTimeTooSkewed", 403)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="ten", Range="bytes=50-60")
    assert error_of(exc) == ("InvalidRange", 416)
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="digest", Body=b"payload", ContentMD5=wrong_md5)
    assert error_of(exc) == ("BadDigest", 400)
    assert demo_swift.head(f"/{bucket}/digest").status_code == 404
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="missing")
    assert error_of(exc) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=unique("nobucket"), Key="x")
    assert error_of(exc) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket="Bad_Name")
    assert error_of(exc)[0] == "InvalidBucketName"
    # A malformed XML body (signed correctly) and a body whose hash is not the signed one.
    import botocore.auth
    import botocore.awsrequest
    from botocore.credentials import Credentials

    creds = Credentials(demo_keys["aws_access_key_id"], demo_keys["aws_secret_access_key"])

    def signed(method: str, url: str, body: bytes, sent: bytes | None = None):
        """Signed for `body`; `sent` goes instead when given (a body changed on the way)."""
        request = botocore.awsrequest.AWSRequest(method=method, url=url, data=body)
        botocore.auth.S3SigV4Auth(creds, "s3", "RegionOne").add_auth(request)
        headers = dict(request.headers.items())
        return httpx.request(method, url, content=body if sent is None else sent, headers=headers)

    bad_xml = signed("POST", f"{endpoint}/{bucket}?delete", b"<Delete><Object>")
    assert bad_xml.status_code == 400 and "<Code>MalformedXML</Code>" in bad_xml.text
    assert "x-amz-request-id" in bad_xml.headers and "<RequestId>" in bad_xml.text
    lied = signed("PUT", f"{endpoint}/{bucket}/lied", b"real body", b"fake body")
    assert lied.status_code == 400 and "XAmzContentSHA256Mismatch" in lied.text
    assert demo_swift.head(f"/{bucket}/lied").status_code == 404
    # A large body is hashed in a worker thread as it streams: a byte changed anywhere in
    # it (the first MiB, the middle, the tail hashed last) is still caught, nothing stored.
    big = os.urandom(3 * 1024 * 1024 + 70_000)
    for at in (5, len(big) // 2, len(big) - 1):
        changed = big[:at] + bytes([big[at] ^ 1]) + big[at + 1 :]
        lied = signed("PUT", f"{endpoint}/{bucket}/big-lied-{at}", big, changed)
        assert lied.status_code == 400 and "XAmzContentSHA256Mismatch" in lied.text
        assert demo_swift.head(f"/{bucket}/big-lied-{at}").status_code == 404
    assert signed("PUT", f"{endpoint}/{bucket}/big", big).status_code == 200
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == big


def test_bucket_settings_versions_tags_cors_and_lifecycle(endpoint, s3, demo_swift):
    bucket = unique("settings")
    s3.create_bucket(Bucket=bucket)
    # Versioning (Swift's X-Versions-Enabled): every PUT keeps the version before it; each
    # version is read by its id (test_s3_versioning.py tells the whole story).
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    first = s3.put_object(Bucket=bucket, Key="doc", Body=b"one")["VersionId"]
    second = s3.put_object(Bucket=bucket, Key="doc", Body=b"two")["VersionId"]
    assert first != second
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert [(v["VersionId"], v["IsLatest"]) for v in versions] == [(second, True), (first, False)]
    assert s3.get_object(Bucket=bucket, Key="doc", VersionId=first)["Body"].read() == b"one"
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"two"
    s3.delete_object(Bucket=bucket, Key="doc", VersionId=first)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="doc", VersionId=first)
    assert error_of(exc) == ("NoSuchVersion", 404)
    assert demo_swift.head(f"/{bucket}").headers["x-versions-enabled"] == "True"
    # Tags on the bucket and on objects (kept across a metadata-preserving change).
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "team", "Value": "ops"}]})
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "team", "Value": "ops"}]
    assert "x-container-sysmeta-s3api-tagging" not in demo_swift.head(f"/{bucket}").headers
    s3.put_object(Bucket=bucket, Key="tagged", Body=b"t", Tagging="a=1&b=2", Metadata={"m": "x"})
    assert s3.get_object_tagging(Bucket=bucket, Key="tagged")["TagSet"] == [
        {"Key": "a", "Value": "1"},
        {"Key": "b", "Value": "2"},
    ]
    s3.put_object_tagging(
        Bucket=bucket, Key="tagged", Tagging={"TagSet": [{"Key": "c", "Value": "3"}]}
    )
    assert s3.get_object_tagging(Bucket=bucket, Key="tagged")["TagSet"] == [
        {"Key": "c", "Value": "3"}
    ]
    assert s3.head_object(Bucket=bucket, Key="tagged")["Metadata"] == {"m": "x"}
    s3.delete_bucket_tagging(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_tagging(Bucket=bucket)
    assert error_of(exc) == ("NoSuchTagSet", 404)
    # CORS: the preflight a browser sends is answered by the rules.
    s3.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [
                {"AllowedOrigins": ["https://app.example"], "AllowedMethods": ["GET", "PUT"],
                 "AllowedHeaders": ["*"], "MaxAgeSeconds": 600}
            ]
        },
    )  # fmt: skip
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"][0]["AllowedMethods"] == ["GET", "PUT"]
    ok = httpx.options(
        f"{endpoint}/{bucket}/doc",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"},
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    refused = httpx.options(
        f"{endpoint}/{bucket}/doc",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert refused.status_code == 403
    # Lifecycle expiration: new and existing objects under the prefix get X-Delete-At.
    s3.put_object(Bucket=bucket, Key="tmp/old", Body=b"x")
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [{"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
                       "Expiration": {"Days": 1}}]
        },
    )  # fmt: skip
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rules[0]["Expiration"]["Days"] == 1 and rules[0]["Filter"]["Prefix"] == "tmp/"
    s3.put_object(Bucket=bucket, Key="tmp/new", Body=b"x")
    for key in ("tmp/old", "tmp/new"):
        at = int(demo_swift.head(f"/{bucket}/{key}").headers["x-delete-at"])
        assert 0 < at - time.time() <= 2 * 86400 and at % 86400 == 0
    assert "x-delete-at" not in demo_swift.head(f"/{bucket}/tagged").headers
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": [{"Status": "Enabled", "Prefix": ""}]}
        )
    assert error_of(exc)[0] == "MalformedXML"
