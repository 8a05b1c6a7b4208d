"""S3 bucket versioning as boto3 and `aws s3api` drive it, on Swift's object versioning
with version ids: every overwrite kept, delete markers, reading, copying and deleting one
version, suspending, ListObjectVersions paging; the same versions through Swift's
`?versions` listing; and buckets versioned through S3 before (Swift's history mode)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.cloudrunner import VENV_BIN, CloudRunner, configure_state_dir
from tests.functional.object_store_helpers import (
    account_client,
    ec2_credentials,
    s3_client,
    unique,
)

DELETE_MARKER = "application/x-deleted;swift_versions_deleted=1"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    state = tmp_path_factory.mktemp("s3-versions")
    configure_state_dir(state)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def endpoint(cloud: CloudRunner) -> str:
    return f"http://127.0.0.1:{cloud.config.ports.object_store}"


@pytest.fixture(scope="module")
def keys(cloud: CloudRunner) -> dict:
    return ec2_credentials(cloud, "cumulo-demo")


@pytest.fixture(scope="module")
def s3(endpoint: str, keys: dict):
    return s3_client(endpoint, keys)


@pytest.fixture(scope="module")
def swift(cloud: CloudRunner):
    with account_client(cloud, cloud.token("demo", project="demo")) as http:
        yield http


def error_of(excinfo) -> tuple[str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def headers_of(excinfo) -> dict[str, str]:
    return excinfo.value.response["ResponseMetadata"]["HTTPHeaders"]


def body(s3, bucket: str, key: str, **kwargs) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


def listed(s3, bucket: str, **kwargs) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is a delete marker), in the listing's order."""
    answer = s3.list_object_versions(Bucket=bucket, **kwargs)
    found = [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in answer.get("Versions", [])]
    found += [
        (m["Key"], m["VersionId"], m["IsLatest"], True) for m in answer.get("DeleteMarkers", [])
    ]
    # By key, then newest first (null, the unversioned, counts as newest).
    return sorted(
        found, key=lambda e: (e[0], e[1] != "null", -float(e[1]) if e[1] != "null" else 0)
    )


def test_versioned_bucket_keeps_every_version_and_writes_delete_markers(s3, swift):
    bucket = unique("story")
    s3.create_bucket(Bucket=bucket)
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    assert "VersionId" not in s3.put_object(Bucket=bucket, Key="plain", Body=b"p")

    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert swift.head(f"/{bucket}").headers["x-versions-enabled"] == "True"
    first = s3.put_object(Bucket=bucket, Key="doc", Body=b"one")["VersionId"]
    second = s3.put_object(Bucket=bucket, Key="doc", Body=b"two")["VersionId"]
    assert first != second and "null" not in (first, second)
    current = s3.get_object(Bucket=bucket, Key="doc")
    assert current["Body"].read() == b"two" and current["VersionId"] == second
    assert s3.head_object(Bucket=bucket, Key="doc", VersionId=first)["VersionId"] == first
    assert body(s3, bucket, "doc", VersionId=first) == b"one"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="doc", VersionId="1000000000.00000")
    assert error_of(exc) == ("NoSuchVersion", 404)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="doc", VersionId="not-a-version")
    assert error_of(exc) == ("InvalidArgument", 400)

    # A DELETE without a version writes a delete marker; the versions stay.
    gone = s3.delete_object(Bucket=bucket, Key="doc")
    marker = gone["VersionId"]
    assert gone["DeleteMarker"] is True and marker not in (first, second)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="doc")
    assert error_of(exc) == ("NoSuchKey", 404)
    assert headers_of(exc)["x-amz-delete-marker"] == "true"
    assert headers_of(exc)["x-amz-version-id"] == marker
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="doc")
    assert error_of(exc)[1] == 404 and headers_of(exc)["x-amz-delete-marker"] == "true"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert error_of(exc) == ("MethodNotAllowed", 405)
    assert headers_of(exc)["x-amz-delete-marker"] == "true"
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert error_of(exc)[1] == 405
    with pytest.raises(ClientError) as exc:
        s3.copy_object(
            Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "doc", "VersionId": marker}
        )
    assert error_of(exc) == ("InvalidRequest", 400)
    assert body(s3, bucket, "doc", VersionId=second) == b"two"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["plain"]
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == ["plain"]

    answer = s3.list_object_versions(Bucket=bucket)
    assert listed(s3, bucket) == [
        ("doc", marker, True, True),
        ("doc", second, False, False),
        ("doc", first, False, False),
        ("plain", "null", True, False),
    ]
    version = next(v for v in answer["Versions"] if v["VersionId"] == first)
    assert version["Size"] == 3 and version["StorageClass"] == "STANDARD"
    assert version["ETag"] == '"f97c5d29941bfb1b2fdab0874906ab82"'  # md5 of b"one"
    assert version["Owner"]["ID"] and version["LastModified"].year >= 2024
    assert answer["DeleteMarkers"][0]["Owner"]["ID"] == version["Owner"]["ID"]

    # Swift's ?versions listing names the same versions by the same ids.
    swift_listed = swift.get(f"/{bucket}", params={"versions": "", "format": "json"}).json()
    assert [(e["name"], e["version_id"], e["is_latest"]) for e in swift_listed] == [
        ("doc", marker, True),
        ("doc", second, False),
        ("doc", first, False),
        ("plain", "null", True),
    ]
    assert swift_listed[0]["content_type"] == DELETE_MARKER
    seen = swift.get(f"/{bucket}/doc", params={"version-id": first})
    assert seen.content == b"one" and seen.headers["x-object-version-id"] == first

    # Deleting the delete marker brings the object back.
    undone = s3.delete_object(Bucket=bucket, Key="doc", VersionId=marker)
    assert undone["DeleteMarker"] is True and undone["VersionId"] == marker
    assert body(s3, bucket, "doc") == b"two"
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == [
        "doc",
        "plain",
    ]

    # Copying an old version over its key restores it as a new version; deleting that
    # one (the latest) makes the one before it current again.
    copied = s3.copy_object(
        Bucket=bucket, Key="doc", CopySource={"Bucket": bucket, "Key": "doc", "VersionId": first}
    )
    third = copied["VersionId"]
    assert copied["CopySourceVersionId"] == first and third not in (first, second)
    assert body(s3, bucket, "doc") == b"one"
    other = s3.copy_object(
        Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "doc", "VersionId": second}
    )
    assert body(s3, bucket, "copy") == b"two" and other["CopySourceVersionId"] == second
    s3.delete_object(Bucket=bucket, Key="doc", VersionId=third)
    assert s3.get_object(Bucket=bucket, Key="doc")["VersionId"] == second
    assert [v[1] for v in listed(s3, bucket, Prefix="doc")] == [second, first]


def test_suspended_versioning_writes_null_versions(s3):
    bucket = unique("suspend")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    kept = s3.put_object(Bucket=bucket, Key="o", Body=b"v1")["VersionId"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    assert s3.put_object(Bucket=bucket, Key="o", Body=b"v2")["VersionId"] == "null"
    assert s3.put_object(Bucket=bucket, Key="o", Body=b"v3")["VersionId"] == "null"
    assert listed(s3, bucket) == [("o", "null", True, False), ("o", kept, False, False)]
    assert body(s3, bucket, "o", VersionId="null") == b"v3"
    assert body(s3, bucket, "o", VersionId=kept) == b"v1"

    # DeleteObjects: versions by id, in one request.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    newest = s3.put_object(Bucket=bucket, Key="p", Body=b"p")["VersionId"]
    result = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "o", "VersionId": kept}, {"Key": "p"},
                            {"Key": "o", "VersionId": "null"}]},
    )  # fmt: skip
    deleted = {(d["Key"], d.get("VersionId")): d for d in result["Deleted"]}
    assert set(deleted) == {("o", kept), ("p", None), ("o", "null")}
    assert deleted[("p", None)]["DeleteMarker"] is True
    marker = deleted[("p", None)]["DeleteMarkerVersionId"]
    assert "Errors" not in result
    assert listed(s3, bucket) == [("p", marker, True, True), ("p", newest, False, False)]
    result = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "p", "VersionId": marker},
                            {"Key": "p", "VersionId": "bad"}]},
    )  # fmt: skip
    assert result["Deleted"] == [{"Key": "p", "VersionId": marker, "DeleteMarker": True,
                                  "DeleteMarkerVersionId": marker}]  # fmt: skip
    assert result["Errors"][0]["Code"] == "InvalidArgument"
    assert body(s3, bucket, "p") == b"p"


def test_list_object_versions_pages_and_folds_common_prefixes(s3):
    bucket = unique("pages")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key in ("a/1", "a/2", "b", "c"):
        for data in (b"x", b"yy"):
            s3.put_object(Bucket=bucket, Key=key, Body=data)
    s3.delete_object(Bucket=bucket, Key="b")
    everything = listed(s3, bucket)
    assert len(everything) == 9

    pages = s3.get_paginator("list_object_versions").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 2}
    )
    seen, truncated = [], 0
    for page in pages:
        assert page["MaxKeys"] == 2
        found = page.get("Versions", []) + page.get("DeleteMarkers", [])
        assert len(found) <= 2
        seen += [(v["Key"], v["VersionId"]) for v in found]
        truncated += page["IsTruncated"]
    assert sorted(seen) == sorted((k, v) for k, v, _, _ in everything)
    assert truncated == 4

    # One page by hand: NextKeyMarker and NextVersionIdMarker lead to the rest.
    first = s3.list_object_versions(Bucket=bucket, MaxKeys=5)
    assert first["IsTruncated"] is True
    assert first["NextKeyMarker"] == "b"
    rest = s3.list_object_versions(
        Bucket=bucket,
        KeyMarker=first["NextKeyMarker"],
        VersionIdMarker=first["NextVersionIdMarker"],
    )
    assert rest["IsTruncated"] is False
    assert [v["Key"] for v in rest["Versions"]] == ["b", "b", "c", "c"]

    folded = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in folded["CommonPrefixes"]] == ["a/"]
    assert {v["Key"] for v in folded["Versions"]} == {"b", "c"}
    under = s3.list_object_versions(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [v["Key"] for v in under["Versions"]] == ["a/1", "a/1", "a/2", "a/2"]
    assert "CommonPrefixes" not in under
    # A common prefix that ends a page is the next page's key marker.
    page = s3.list_object_versions(Bucket=bucket, Delimiter="/", MaxKeys=1)
    assert page["CommonPrefixes"][0]["Prefix"] == "a/" and page["NextKeyMarker"] == "a/"
    after = s3.list_object_versions(Bucket=bucket, Delimiter="/", KeyMarker="a/")
    assert "CommonPrefixes" not in after and after["Versions"][0]["Key"] == "b"


def test_multipart_uploads_and_lifecycle_in_a_versioned_bucket(s3, swift):
    bucket = unique("mpver")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=b"m" * 10)
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )  # fmt: skip
    multipart = done["VersionId"]
    s3.put_object(Bucket=bucket, Key="big", Body=b"small")
    s3.delete_object(Bucket=bucket, Key="big")
    # The delete marker leaves the multipart version's parts where they are.
    assert body(s3, bucket, "big", VersionId=multipart) == b"m" * 10

    # Old versions copied, whole or a range of one as a part (piped, as they come).
    data = os.urandom(3 * 1024 * 1024 + 5)
    old = s3.put_object(Bucket=bucket, Key="blob", Body=data)["VersionId"]
    s3.put_object(Bucket=bucket, Key="blob", Body=b"newer")
    source = {"Bucket": bucket, "Key": "blob", "VersionId": old}
    s3.copy_object(Bucket=bucket, Key="blob-copy", CopySource=source)
    assert body(s3, bucket, "blob-copy") == data
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=unique("nowhere"), Key="blob", CopySource=source)
    assert error_of(exc) == ("NoSuchBucket", 404)
    s3.copy_object(
        Bucket=bucket, Key="big-copy",
        CopySource={"Bucket": bucket, "Key": "big", "VersionId": multipart},
    )  # fmt: skip
    assert body(s3, bucket, "big-copy") == b"m" * 10
    upload = s3.create_multipart_upload(Bucket=bucket, Key="piece")["UploadId"]
    part = s3.upload_part_copy(
        Bucket=bucket, Key="piece", UploadId=upload, PartNumber=1, CopySource=source,
        CopySourceRange="bytes=100-199",
    )["CopyPartResult"]  # fmt: skip
    s3.complete_multipart_upload(
        Bucket=bucket, Key="piece", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )  # fmt: skip
    assert body(s3, bucket, "piece") == data[100:200]

    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [{"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
                       "Expiration": {"Days": 1}}]
        },
    )  # fmt: skip
    made = s3.put_object(Bucket=bucket, Key="tmp/x", Body=b"x")
    assert "x-delete-at" in swift.head(f"/{bucket}/tmp/x").headers
    assert s3.head_object(Bucket=bucket, Key="tmp/x")["VersionId"] == made["VersionId"]

    # A bucket goes once every version and marker is gone.
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)
    assert error_of(exc) == ("BucketNotEmpty", 409)
    for key, version, _, _ in listed(s3, bucket):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert listed(s3, bucket) == []
    s3.delete_bucket(Bucket=bucket)
    # The multipart version's parts went with it, and so did their container.
    assert swift.head(f"/{bucket}+segments").status_code == 404


def tags(answer: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in answer["TagSet"]}


def test_object_acl_and_tagging_of_one_version(endpoint, s3):
    bucket = unique("veracl")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"before", Tagging="v=null")  # the null one
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"one", Tagging="v=1")["VersionId"]
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"two")["VersionId"]

    # Tagging: each version its own; the answer names the version.
    got = s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=first)
    assert tags(got) == {"v": "1"} and got["VersionId"] == first
    current = s3.get_object_tagging(Bucket=bucket, Key="k")
    assert tags(current) == {} and current["VersionId"] == second
    old = s3.get_object_tagging(Bucket=bucket, Key="k", VersionId="null")
    assert tags(old) == {"v": "null"} and old["VersionId"] == "null"
    draft = {"TagSet": [{"Key": "stage", "Value": "draft"}]}
    put = s3.put_object_tagging(Bucket=bucket, Key="k", VersionId=first, Tagging=draft)
    assert put["VersionId"] == first
    assert tags(s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=first)) == {
        "stage": "draft"
    }
    assert tags(s3.get_object_tagging(Bucket=bucket, Key="k")) == {}
    gone = s3.delete_object_tagging(Bucket=bucket, Key="k", VersionId="null")
    assert gone["VersionId"] == "null"
    assert tags(s3.get_object_tagging(Bucket=bucket, Key="k", VersionId="null")) == {}
    assert tags(s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=first)) == {
        "stage": "draft"
    }

    # ACLs: an old version made public is read anonymously by its id; the current is not.
    s3.put_object_acl(Bucket=bucket, Key="k", VersionId=first, ACL="public-read")
    assert httpx.get(f"{endpoint}/{bucket}/k", params={"versionId": first}).content == b"one"
    assert httpx.get(f"{endpoint}/{bucket}/k").status_code == 403
    acl = s3.get_object_acl(Bucket=bucket, Key="k", VersionId=first)
    assert {g["Grantee"].get("URI") for g in acl["Grants"]} >= {
        "http://acs.amazonaws.com/groups/global/AllUsers"
    }
    assert acl["ResponseMetadata"]["HTTPHeaders"]["x-amz-version-id"] == first
    assert len(s3.get_object_acl(Bucket=bucket, Key="k")["Grants"]) == 1  # the owner's
    # The version keeps its bytes, metadata and tags; no version was added.
    assert body(s3, bucket, "k", VersionId=first) == b"one"
    assert [v[1] for v in listed(s3, bucket)] == ["null", second, first]

    # A version that is not there: NoSuchVersion; a delete marker: 405; not an id: 400.
    calls = [
        lambda v: s3.get_object_acl(Bucket=bucket, Key="k", VersionId=v),
        lambda v: s3.put_object_acl(Bucket=bucket, Key="k", VersionId=v, ACL="private"),
        lambda v: s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=v),
        lambda v: s3.put_object_tagging(Bucket=bucket, Key="k", VersionId=v,
                                        Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}),
        lambda v: s3.delete_object_tagging(Bucket=bucket, Key="k", VersionId=v),
    ]  # fmt: skip
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    for version, error in (
        ("1234567890.12345", ("NoSuchVersion", 404)),
        (marker, ("MethodNotAllowed", 405)),
        ("not-a-version", ("InvalidArgument", 400)),
    ):
        for call in calls:
            with pytest.raises(ClientError) as exc:
                call(version)
            assert error_of(exc) == error, (version, error_of(exc))
    with pytest.raises(ClientError) as exc:
        s3.get_object_tagging(Bucket=bucket, Key="k")  # the latest is the delete marker
    assert error_of(exc) == ("NoSuchKey", 404)

    # The version made current again keeps its ACL and tags.
    s3.delete_object(Bucket=bucket, Key="k", VersionId=marker)
    s3.delete_object(Bucket=bucket, Key="k", VersionId=second)
    assert httpx.get(f"{endpoint}/{bucket}/k").content == b"one"
    assert tags(s3.get_object_tagging(Bucket=bucket, Key="k")) == {"stage": "draft"}


def test_awscli_s3api_versioning(cloud, endpoint, keys, swift, tmp_path: Path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ACCESS_KEY_ID": keys["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": keys["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "RegionOne",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }

    def s3api(*args: str) -> dict:
        proc = subprocess.run(
            [str(VENV_BIN / "aws"), "--endpoint-url", endpoint, "--output", "json",
             "s3api", *args],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, f"aws s3api {' '.join(args)}: {proc.stderr}"
        return json.loads(proc.stdout) if proc.stdout.strip() else {}

    bucket = unique("cliver")
    s3api("create-bucket", "--bucket", bucket)
    s3api("put-bucket-versioning", "--bucket", bucket,
          "--versioning-configuration", "Status=Enabled")  # fmt: skip
    assert s3api("get-bucket-versioning", "--bucket", bucket)["Status"] == "Enabled"
    (tmp_path / "notes").write_bytes(b"draft")
    first = s3api("put-object", "--bucket", bucket, "--key", "notes",
                  "--body", str(tmp_path / "notes"))["VersionId"]  # fmt: skip
    (tmp_path / "notes").write_bytes(b"final")
    second = s3api("put-object", "--bucket", bucket, "--key", "notes",
                   "--body", str(tmp_path / "notes"))["VersionId"]  # fmt: skip
    marker = s3api("delete-object", "--bucket", bucket, "--key", "notes")
    assert marker["DeleteMarker"] is True
    versions = s3api("list-object-versions", "--bucket", bucket)
    assert [v["VersionId"] for v in versions["Versions"]] == [second, first]
    assert [(m["VersionId"], m["IsLatest"]) for m in versions["DeleteMarkers"]] == [
        (marker["VersionId"], True)
    ]
    swift_ids = [
        e["version_id"]
        for e in swift.get(f"/{bucket}", params={"versions": "", "format": "json"}).json()
    ]
    assert swift_ids == [marker["VersionId"], second, first]
    got = s3api("get-object", "--bucket", bucket, "--key", "notes", "--version-id", first,
                str(tmp_path / "got"))  # fmt: skip
    assert got["VersionId"] == first and (tmp_path / "got").read_bytes() == b"draft"
    s3api("delete-object", "--bucket", bucket, "--key", "notes",
          "--version-id", marker["VersionId"])  # fmt: skip
    s3api("get-object", "--bucket", bucket, "--key", "notes", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == b"final"
    # Tagging and ACL of one version.
    s3api("put-object-tagging", "--bucket", bucket, "--key", "notes", "--version-id", first,
          "--tagging", "TagSet=[{Key=stage,Value=draft}]")  # fmt: skip
    got = s3api("get-object-tagging", "--bucket", bucket, "--key", "notes", "--version-id", first)
    assert got == {"VersionId": first, "TagSet": [{"Key": "stage", "Value": "draft"}]}
    assert s3api("get-object-tagging", "--bucket", bucket, "--key", "notes")["TagSet"] == []
    s3api("put-object-acl", "--bucket", bucket, "--key", "notes", "--version-id", first,
          "--acl", "public-read")  # fmt: skip
    grants = s3api("get-object-acl", "--bucket", bucket, "--key", "notes", "--version-id", first)
    assert len(grants["Grants"]) == 2


def test_bucket_versioned_in_history_mode_keeps_its_versions(s3, swift):
    # What S3 versioning made before version ids: X-History-Location: <bucket>+versions.
    bucket = unique("history")
    s3.create_bucket(Bucket=bucket)
    assert swift.put(f"/{bucket}+versions").status_code in (201, 202)
    assert swift.post(f"/{bucket}", headers={"X-History-Location": f"{bucket}+versions"}).is_success
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    old = s3.put_object(Bucket=bucket, Key="doc", Body=b"old")["VersionId"]
    new = s3.put_object(Bucket=bucket, Key="doc", Body=b"new")["VersionId"]
    assert [(v[1], v[2]) for v in listed(s3, bucket)] == [(new, True), (old, False)]
    assert body(s3, bucket, "doc", VersionId=old) == b"old"
    s3.put_object_tagging(Bucket=bucket, Key="doc", VersionId=old,
                          Tagging={"TagSet": [{"Key": "age", "Value": "old"}]})  # fmt: skip
    tagged = s3.get_object_tagging(Bucket=bucket, Key="doc", VersionId=old)
    assert tags(tagged) == {"age": "old"} and tagged["VersionId"] == old
    assert tags(s3.get_object_tagging(Bucket=bucket, Key="doc")) == {}
    assert bucket + "+versions" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    dropped = s3.put_object(Bucket=bucket, Key="tmp", Body=b"1")["VersionId"]
    s3.put_object(Bucket=bucket, Key="tmp", Body=b"2")
    s3.delete_object(Bucket=bucket, Key="tmp", VersionId=dropped)
    assert [v[2] for v in listed(s3, bucket, Prefix="tmp")] == [True]

    # Configured again, the bucket moves to version ids; its old versions stay in
    # <bucket>+versions, where Swift clients read them.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    headers = swift.head(f"/{bucket}").headers
    assert headers["x-versions-enabled"] == "True" and "x-history-location" not in headers
    archived = swift.get(f"/{bucket}+versions", params={"format": "json"}).json()
    assert [swift.get(f"/{bucket}+versions/{e['name']}").content for e in archived] == [b"old"]
    newest = s3.put_object(Bucket=bucket, Key="doc", Body=b"newest")["VersionId"]
    # Swift's other legacy kind (set through Swift) is not mixed with version ids.
    stacked = unique("stack")
    s3.create_bucket(Bucket=stacked)
    swift.post(f"/{stacked}", headers={"X-Versions-Location": f"{bucket}+versions"})
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=stacked, VersioningConfiguration={"Status": "Enabled"})
    assert error_of(exc) == ("InvalidRequest", 400)
    # The object written in history mode is versioned off under the id it had.
    assert listed(s3, bucket, Prefix="doc") == [
        ("doc", newest, True, False),
        ("doc", new, False, False),
    ]
    assert body(s3, bucket, "doc", VersionId=new) == b"new"
