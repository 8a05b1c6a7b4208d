"""More of S3 as boto3, awscli and browsers use it: versioning suspended as S3 does it
(`null` delete markers, one `null` version per key), per-object ACLs enforced for anonymous
callers and other projects, and POST Object uploads from HTML forms with a SigV4 policy."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
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

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    state = tmp_path_factory.mktemp("s3-more")
    configure_state_dir(state)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def endpoint(cloud: CloudRunner) -> str:
    return f"http://127.0.0.1:{cloud.config.ports.object_store}"


@pytest.fixture(scope="module")
def demo_keys(cloud: CloudRunner) -> dict:
    return ec2_credentials(cloud, "cumulo-demo")


@pytest.fixture(scope="module")
def s3(endpoint: str, demo_keys: dict):
    return s3_client(endpoint, demo_keys)


@pytest.fixture(scope="module")
def other(cloud: CloudRunner, endpoint: str):
    """Another project's credentials (the admin project's)."""
    return s3_client(endpoint, ec2_credentials(cloud, "cumulo"))


@pytest.fixture(scope="module")
def swift(cloud: CloudRunner):
    with account_client(cloud, cloud.token("demo", project="demo")) as http:
        yield http


def error_of(excinfo) -> tuple[str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def headers_of(excinfo) -> dict[str, str]:
    return excinfo.value.response["ResponseMetadata"]["HTTPHeaders"]


def listed(s3, bucket: str, **kwargs) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is a delete marker), newest first per key."""
    answer = s3.list_object_versions(Bucket=bucket, **kwargs)
    found = [(v["Key"], v["VersionId"], v["IsLatest"], False, v["LastModified"])
             for v in answer.get("Versions", [])]  # fmt: skip
    found += [(m["Key"], m["VersionId"], m["IsLatest"], True, m["LastModified"])
              for m in answer.get("DeleteMarkers", [])]  # fmt: skip
    found.sort(key=lambda e: (e[0], not e[2], -e[4].timestamp()))
    return [e[:4] for e in found]


# -- versioning suspended ------------------------------------------------------------------


def test_delete_in_a_suspended_bucket_writes_a_null_delete_marker(s3, swift):
    bucket = unique("susp")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    kept = s3.put_object(Bucket=bucket, Key="doc", Body=b"v1")["VersionId"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})

    # The current version (not null) is kept as it is; a null delete marker goes on top.
    gone = s3.delete_object(Bucket=bucket, Key="doc")
    assert gone["DeleteMarker"] is True and gone["VersionId"] == "null"
    headers = gone["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-delete-marker"] == "true" and headers["x-amz-version-id"] == "null"
    assert listed(s3, bucket) == [("doc", "null", True, True), ("doc", kept, False, False)]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="doc")
    assert error_of(exc) == ("NoSuchKey", 404)
    assert headers_of(exc)["x-amz-delete-marker"] == "true"
    assert headers_of(exc)["x-amz-version-id"] == "null"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="doc", VersionId="null")
    assert error_of(exc) == ("MethodNotAllowed", 405)
    assert s3.get_object(Bucket=bucket, Key="doc", VersionId=kept)["Body"].read() == b"v1"

    # A PUT replaces the null delete marker by a null version; older versions stay.
    assert s3.put_object(Bucket=bucket, Key="doc", Body=b"v2")["VersionId"] == "null"
    assert s3.put_object(Bucket=bucket, Key="doc", Body=b"v3")["VersionId"] == "null"
    assert listed(s3, bucket) == [("doc", "null", True, False), ("doc", kept, False, False)]
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"v3"

    # A DELETE removes the null version itself: nothing of v3 is left, the marker is.
    assert s3.delete_object(Bucket=bucket, Key="doc")["VersionId"] == "null"
    assert listed(s3, bucket) == [("doc", "null", True, True), ("doc", kept, False, False)]
    # Swift's ?versions listing shows the same.
    swift_listed = swift.get(f"/{bucket}", params={"versions": "", "format": "json"}).json()
    assert [(e["name"], e["version_id"], e["is_latest"]) for e in swift_listed] == [
        ("doc", "null", True),
        ("doc", kept, False),
    ]
    # A delete of a key that was never there writes its marker all the same.
    assert s3.delete_object(Bucket=bucket, Key="never")["DeleteMarker"] is True
    assert ("never", "null", True, True) in listed(s3, bucket)

    # Deleting the null delete marker by id brings the older version back.
    undone = s3.delete_object(Bucket=bucket, Key="doc", VersionId="null")
    assert undone["DeleteMarker"] is True and undone["VersionId"] == "null"
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"v1"


def test_a_null_version_keeps_its_id_when_versioning_is_enabled_again(s3, swift):
    bucket = unique("nullkept")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="o", Body=b"before")  # null: never versioned
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    newer = s3.put_object(Bucket=bucket, Key="o", Body=b"after")["VersionId"]
    assert listed(s3, bucket) == [("o", newer, True, False), ("o", "null", False, False)]
    assert s3.get_object(Bucket=bucket, Key="o", VersionId="null")["Body"].read() == b"before"
    seen = swift.get(f"/{bucket}/o", params={"version-id": "null"})
    assert seen.content == b"before" and seen.headers["x-object-version-id"] == "null"

    # Suspended again: a PUT makes a new null version, which replaces the old one.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=bucket, Key="o", Body=b"third")
    assert listed(s3, bucket) == [("o", "null", True, False), ("o", newer, False, False)]
    assert s3.get_object(Bucket=bucket, Key="o", VersionId="null")["Body"].read() == b"third"

    # Enabled, a delete marker on top; the null version deleted by id, from below it.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    marker = s3.delete_object(Bucket=bucket, Key="o")["VersionId"]
    assert listed(s3, bucket) == [
        ("o", marker, True, True),
        ("o", "null", False, False),
        ("o", newer, False, False),
    ]
    s3.delete_object(Bucket=bucket, Key="o", VersionId="null")
    assert listed(s3, bucket) == [("o", marker, True, True), ("o", newer, False, False)]
    # Paging by version id marker past a null version.
    s3.delete_object(Bucket=bucket, Key="o", VersionId=marker)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=bucket, Key="o", Body=b"fourth")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    last = s3.put_object(Bucket=bucket, Key="o", Body=b"fifth")["VersionId"]
    page = s3.list_object_versions(Bucket=bucket, MaxKeys=2)
    assert [v["VersionId"] for v in page["Versions"]] == [last, "null"]
    rest = s3.list_object_versions(
        Bucket=bucket, KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"]
    )
    assert [v["VersionId"] for v in rest["Versions"]] == [newer]


# -- per-object ACLs -------------------------------------------------------------------------


def grantees(answer: dict) -> set[tuple[str, str]]:
    return {(g["Grantee"].get("URI") or g["Grantee"].get("ID"), g["Permission"])
            for g in answer["Grants"]}  # fmt: skip


def test_object_acls_are_enforced_in_a_private_bucket(endpoint, s3, other, swift):
    bucket = unique("objacl")
    s3.create_bucket(Bucket=bucket)
    owner = s3.get_bucket_acl(Bucket=bucket)["Owner"]["ID"]
    s3.put_object(Bucket=bucket, Key="public.txt", Body=b"for all", ACL="public-read")
    s3.put_object(Bucket=bucket, Key="members.txt", Body=b"signed in", ACL="authenticated-read")
    s3.put_object(Bucket=bucket, Key="private.txt", Body=b"mine")
    s3.put_object(Bucket=bucket, Key="explicit.txt", Body=b"mine too", ACL="private")

    # public-read: anyone reads it (GET, HEAD, a range), the bucket stays unlisted.
    anonymous = httpx.get(f"{endpoint}/{bucket}/public.txt")
    assert anonymous.status_code == 200 and anonymous.content == b"for all"
    assert httpx.head(f"{endpoint}/{bucket}/public.txt").headers["content-length"] == "7"
    ranged = httpx.get(f"{endpoint}/{bucket}/public.txt", headers={"Range": "bytes=0-2"})
    assert ranged.status_code == 206 and ranged.content == b"for"
    assert other.get_object(Bucket=bucket, Key="public.txt")["Body"].read() == b"for all"
    listing = httpx.get(f"{endpoint}/{bucket}")
    assert listing.status_code == 403 and "<Code>AccessDenied</Code>" in listing.text
    assert "<RequestId>" in listing.text and listing.headers["x-amz-request-id"]

    # authenticated-read: another project's credentials read it, anonymous callers do not.
    assert other.get_object(Bucket=bucket, Key="members.txt")["Body"].read() == b"signed in"
    denied = httpx.get(f"{endpoint}/{bucket}/members.txt")
    assert denied.status_code == 403 and "<Code>AccessDenied</Code>" in denied.text
    assert "<RequestId>" in denied.text

    # The rest: AccessDenied for both, for reading and for the ACL itself.
    for key in ("private.txt", "explicit.txt", "missing.txt"):
        assert httpx.get(f"{endpoint}/{bucket}/{key}").status_code == 403
        assert httpx.head(f"{endpoint}/{bucket}/{key}").status_code == 403
        with pytest.raises(ClientError) as exc:
            other.get_object(Bucket=bucket, Key=key)
        assert error_of(exc) == ("AccessDenied", 403)
    for key in ("public.txt", "private.txt"):
        with pytest.raises(ClientError) as exc:
            other.get_object_acl(Bucket=bucket, Key=key)
        assert error_of(exc) == ("AccessDenied", 403)
        with pytest.raises(ClientError) as exc:
            other.put_object_acl(Bucket=bucket, Key=key, ACL="public-read")
        assert error_of(exc) == ("AccessDenied", 403)

    # GetObjectAcl: the object's own grants (the bucket's when it has none).
    assert grantees(s3.get_object_acl(Bucket=bucket, Key="public.txt")) == {
        (owner, "FULL_CONTROL"),
        (ALL_USERS, "READ"),
    }
    assert grantees(s3.get_object_acl(Bucket=bucket, Key="members.txt")) == {
        (owner, "FULL_CONTROL"),
        (AUTHENTICATED, "READ"),
    }
    assert grantees(s3.get_object_acl(Bucket=bucket, Key="private.txt")) == {
        (owner, "FULL_CONTROL")
    }
    with pytest.raises(ClientError) as exc:
        s3.get_object_acl(Bucket=bucket, Key="missing.txt")
    assert error_of(exc) == ("NoSuchKey", 404)

    # PutObjectAcl: canned, then taken back; the object and its metadata stay as they were.
    s3.put_object(Bucket=bucket, Key="later.txt", Body=b"later", Metadata={"color": "blue"},
                  ContentType="text/plain")  # fmt: skip
    assert httpx.get(f"{endpoint}/{bucket}/later.txt").status_code == 403
    s3.put_object_acl(Bucket=bucket, Key="later.txt", ACL="public-read")
    assert httpx.get(f"{endpoint}/{bucket}/later.txt").content == b"later"
    head = s3.head_object(Bucket=bucket, Key="later.txt")
    assert head["Metadata"] == {"color": "blue"} and head["ContentType"] == "text/plain"
    assert swift.get(f"/{bucket}/later.txt").content == b"later"
    s3.put_object_acl(Bucket=bucket, Key="later.txt", ACL="private")
    assert httpx.get(f"{endpoint}/{bucket}/later.txt").status_code == 403

    # Grants: by header (id= the other project) and by AccessControlPolicy.
    other_id = other.list_buckets()["Owner"]["ID"]
    s3.put_object_acl(Bucket=bucket, Key="private.txt", GrantRead=f'id="{other_id}"',
                      GrantReadACP=f'id="{other_id}"')  # fmt: skip
    assert other.get_object(Bucket=bucket, Key="private.txt")["Body"].read() == b"mine"
    assert (other_id, "READ") in grantees(other.get_object_acl(Bucket=bucket, Key="private.txt"))
    assert httpx.get(f"{endpoint}/{bucket}/private.txt").status_code == 403
    with pytest.raises(ClientError) as exc:
        other.put_object_acl(Bucket=bucket, Key="private.txt", ACL="public-read")
    assert error_of(exc) == ("AccessDenied", 403)
    policy = {
        "Owner": {"ID": owner},
        "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": owner}, "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "CanonicalUser", "ID": other_id}, "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"},
        ],
    }
    s3.put_object_acl(Bucket=bucket, Key="explicit.txt", AccessControlPolicy=policy)
    assert httpx.get(f"{endpoint}/{bucket}/explicit.txt").content == b"mine too"
    # FULL_CONTROL lets the other project change the ACL too.
    other.put_object_acl(Bucket=bucket, Key="explicit.txt", ACL="private")
    assert httpx.get(f"{endpoint}/{bucket}/explicit.txt").status_code == 403
    with pytest.raises(ClientError) as exc:
        other.get_object(Bucket=bucket, Key="explicit.txt")
    assert error_of(exc) == ("AccessDenied", 403)

    # Bad ACLs: S3's errors, nothing changed.
    with pytest.raises(ClientError) as exc:
        s3.put_object_acl(Bucket=bucket, Key="public.txt", ACL="everyone")
    assert error_of(exc) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as exc:
        s3.put_object_acl(Bucket=bucket, Key="public.txt", ACL="private",
                          GrantRead=f'id="{other_id}"')  # fmt: skip
    assert error_of(exc) == ("InvalidRequest", 400)
    with pytest.raises(ClientError) as exc:
        s3.put_object_acl(Bucket=bucket, Key="public.txt", GrantRead='emailAddress="a@b.c"')
    assert error_of(exc) == ("UnresolvableGrantByEmailAddress", 400)
    bad = {
        "Owner": {"ID": owner},
        "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": other_id}, "Permission": "EVERYTHING"}
        ],
    }
    with pytest.raises(ClientError) as exc:
        s3.put_object_acl(Bucket=bucket, Key="public.txt", AccessControlPolicy=bad)
    assert error_of(exc) == ("MalformedACLError", 400)
    assert httpx.get(f"{endpoint}/{bucket}/public.txt").content == b"for all"


def keystone_user(cloud: CloudRunner, email: str, *, project: str | None = None) -> None:
    """A new Identity user with that email (and default project, if given)."""
    default = ["--project", project] if project else []
    cloud.openstack("user", "create", "--email", email, "--password", "pw-0123456789",
                    *default, unique("mail"), "-f", "json")  # fmt: skip


def test_grants_to_an_email_address_name_the_project_of_its_user(
    cloud, endpoint, s3, other, demo_keys, tmp_path: Path
):
    # The email of a user whose default project is the other project (the admin one).
    email = f"{unique('reader')}@example.com"
    keystone_user(cloud, email, project="admin")
    other_id = other.list_buckets()["Owner"]["ID"]
    bucket = unique("mailacl")
    s3.create_bucket(Bucket=bucket)
    owner = s3.get_bucket_acl(Bucket=bucket)["Owner"]["ID"]
    as_user = {"Type": "CanonicalUser", "ID": other_id, "DisplayName": other_id}

    # x-amz-grant-read: emailAddress="..." (any case) on PutObject, shown as the project.
    s3.put_object(Bucket=bucket, Key="by-header", Body=b"for them",
                  GrantRead=f'emailAddress="{email.upper()}"')  # fmt: skip
    assert other.get_object(Bucket=bucket, Key="by-header")["Body"].read() == b"for them"
    grants = s3.get_object_acl(Bucket=bucket, Key="by-header")["Grants"]
    assert {"Grantee": as_user, "Permission": "READ"} in grants

    # An AccessControlPolicy with an AmazonCustomerByEmail grantee, on an object.
    s3.put_object(Bucket=bucket, Key="by-policy", Body=b"theirs to read")
    with pytest.raises(ClientError):
        other.get_object(Bucket=bucket, Key="by-policy")
    by_email = {"Type": "AmazonCustomerByEmail", "EmailAddress": email}
    policy = {"Owner": {"ID": owner}, "Grants": [{"Grantee": by_email, "Permission": "READ"}]}
    s3.put_object_acl(Bucket=bucket, Key="by-policy", AccessControlPolicy=policy)
    assert other.get_object(Bucket=bucket, Key="by-policy")["Body"].read() == b"theirs to read"
    grants = s3.get_object_acl(Bucket=bucket, Key="by-policy")["Grants"]
    assert {"Grantee": as_user, "Permission": "READ"} in grants

    # The bucket's ACL, by header and by policy: the other project lists the bucket.
    with pytest.raises(ClientError):
        other.list_objects_v2(Bucket=bucket)
    s3.put_bucket_acl(Bucket=bucket, GrantRead=f'emailAddress="{email}"')
    assert {"Grantee": as_user, "Permission": "READ"} in s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert other.list_objects_v2(Bucket=bucket)["KeyCount"] == 2
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=policy)
    assert other.list_objects_v2(Bucket=bucket)["KeyCount"] == 2

    # An email no user has, a user without a default project, users of two projects:
    # S3's errors, nothing changed.
    lone = f"{unique('lone')}@example.com"
    keystone_user(cloud, lone)
    twice = f"{unique('twice')}@example.com"
    keystone_user(cloud, twice, project="admin")
    keystone_user(cloud, twice, project="demo")
    for address, code in (("nobody@example.com", "UnresolvableGrantByEmailAddress"),
                          (lone, "UnresolvableGrantByEmailAddress"),
                          (twice, "AmbiguousGrantByEmailAddress")):  # fmt: skip
        with pytest.raises(ClientError) as exc:
            s3.put_object_acl(Bucket=bucket, Key="by-header",
                              GrantRead=f'emailAddress="{address}"')  # fmt: skip
        assert error_of(exc) == (code, 400)
        bad = {"Type": "AmazonCustomerByEmail", "EmailAddress": address}
        unresolved = {"Owner": {"ID": owner}, "Grants": [{"Grantee": bad, "Permission": "READ"}]}
        with pytest.raises(ClientError) as exc:
            s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=unresolved)
        assert error_of(exc) == (code, 400)
    assert other.get_object(Bucket=bucket, Key="by-header")["Body"].read() == b"for them"
    assert other.list_objects_v2(Bucket=bucket)["KeyCount"] == 2

    # `aws s3api put-object-acl --grant-read emailAddress=...`
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ACCESS_KEY_ID": demo_keys["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": demo_keys["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "RegionOne",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }
    s3.put_object(Bucket=bucket, Key="by-cli", Body=b"from the cli")
    proc = subprocess.run(
        [str(VENV_BIN / "aws"), "--endpoint-url", endpoint, "s3api", "put-object-acl",
         "--bucket", bucket, "--key", "by-cli", "--grant-full-control", f"emailAddress={email}"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    grants = s3.get_object_acl(Bucket=bucket, Key="by-cli")["Grants"]
    assert {"Grantee": as_user, "Permission": "FULL_CONTROL"} in grants
    other.put_object_acl(Bucket=bucket, Key="by-cli", ACL="public-read")  # FULL_CONTROL
    assert httpx.get(f"{endpoint}/{bucket}/by-cli").content == b"from the cli"


def test_an_object_acl_does_not_open_what_a_symlink_names(cloud, endpoint, s3, other, swift):
    # Another project's private object, and a Swift symlink to it in our bucket.
    theirs = unique("theirs")
    other.create_bucket(Bucket=theirs)
    other.put_object(Bucket=theirs, Key="secret", Body=b"their secret")
    other_id = other.list_buckets()["Owner"]["ID"]
    bucket = unique("links")
    s3.create_bucket(Bucket=bucket)
    made = swift.put(
        f"/{bucket}/link",
        content=b"",
        headers={
            "X-Symlink-Target": f"{theirs}/secret",
            "X-Symlink-Target-Account": f"AUTH_{other_id}",
        },
    )
    assert made.status_code == 201
    s3.put_object_acl(Bucket=bucket, Key="link", ACL="public-read")
    # Read with the rights the object's ACL gives: the link itself, not its target.
    answer = httpx.get(f"{endpoint}/{bucket}/link")
    assert b"their secret" not in answer.content
    with pytest.raises(ClientError):
        s3.get_object(Bucket=bucket, Key="link")["Body"].read()


def test_acls_on_copies_multipart_uploads_and_public_buckets(endpoint, s3, other):
    bucket = unique("aclcopy")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="src", Body=b"source", ACL="public-read")
    # A copy has the ACL it is given, not its source's.
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "src"})
    assert httpx.get(f"{endpoint}/{bucket}/copy").status_code == 403
    s3.copy_object(Bucket=bucket, Key="copy2", CopySource={"Bucket": bucket, "Key": "src"},
                   ACL="authenticated-read")  # fmt: skip
    assert other.get_object(Bucket=bucket, Key="copy2")["Body"].read() == b"source"
    s3.copy_object(Bucket=bucket, Key="copy3", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", ACL="public-read")  # fmt: skip
    assert httpx.get(f"{endpoint}/{bucket}/copy3").content == b"source"

    # Another project copies what the ACL lets it read into its own bucket.
    mine = unique("aclmine")
    other.create_bucket(Bucket=mine)
    other.copy_object(Bucket=mine, Key="got", CopySource={"Bucket": bucket, "Key": "src"})
    assert other.get_object(Bucket=mine, Key="got")["Body"].read() == b"source"
    with pytest.raises(ClientError) as exc:
        other.copy_object(Bucket=mine, Key="no", CopySource={"Bucket": bucket, "Key": "copy"})
    assert error_of(exc) == ("AccessDenied", 403)
    upload = other.create_multipart_upload(Bucket=mine, Key="parts")["UploadId"]
    part = other.upload_part_copy(Bucket=mine, Key="parts", UploadId=upload, PartNumber=1,
                                  CopySource={"Bucket": bucket, "Key": "src"},
                                  CopySourceRange="bytes=0-2")  # fmt: skip
    other.complete_multipart_upload(
        Bucket=mine, Key="parts", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]},
    )  # fmt: skip
    assert other.get_object(Bucket=mine, Key="parts")["Body"].read() == b"sou"

    # A multipart upload's ACL applies once completed.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big", ACL="public-read")
    part = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload["UploadId"], PartNumber=1,
                          Body=b"multi")  # fmt: skip
    s3.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )  # fmt: skip
    assert httpx.get(f"{endpoint}/{bucket}/big").content == b"multi"

    # In a public-read bucket, objects without an ACL of their own have the bucket's;
    # one made private is private.
    s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain")
    s3.put_object(Bucket=bucket, Key="closed", Body=b"closed", ACL="private")
    assert httpx.get(f"{endpoint}/{bucket}/plain").content == b"plain"
    assert httpx.get(f"{endpoint}/{bucket}/closed").status_code == 403
    assert s3.get_object(Bucket=bucket, Key="closed")["Body"].read() == b"closed"


# -- POST Object: browser uploads ------------------------------------------------------------


def post_form(post: dict, file: bytes, filename: str = "photo.jpg", **more) -> httpx.Response:
    """The form as a browser sends it: the presigned fields, then the file."""
    fields = {**post["fields"], **more}
    return httpx.post(post["url"], data=fields, files={"file": (filename, file, "image/jpeg")})


def s3_error(answer: httpx.Response) -> tuple[str, int, str]:
    assert "<RequestId>" in answer.text and answer.headers["x-amz-request-id"]
    code = answer.text.split("<Code>")[1].split("</Code>")[0]
    message = answer.text.split("<Message>")[1].split("</Message>")[0]
    return code, answer.status_code, message


def sign_policy_v4(keys: dict, policy: dict, fields: dict) -> dict:
    """A SigV4 POST policy signed by hand (as the S3 docs describe it)."""
    now = datetime.datetime.now(datetime.UTC)
    day = now.strftime("%Y%m%d")
    credential = f"{keys['aws_access_key_id']}/{day}/RegionOne/s3/aws4_request"
    extra = {"x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-credential": credential,
             "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ")}  # fmt: skip
    policy = {**policy, "conditions": [*policy["conditions"], *({k: v} for k, v in extra.items())]}
    encoded = base64.b64encode(json.dumps(policy).encode()).decode()
    key = ("AWS4" + keys["aws_secret_access_key"]).encode()
    for part in (day, "RegionOne", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, encoded.encode(), hashlib.sha256).hexdigest()
    return {**fields, **extra, "policy": encoded, "x-amz-signature": signature}


def test_browser_uploads_with_a_presigned_post(endpoint, s3, swift):
    bucket = unique("forms")
    s3.create_bucket(Bucket=bucket)

    # boto3's generate_presigned_post, ${filename} in the key: 204 and the object stored.
    post = s3.generate_presigned_post(bucket, "uploads/${filename}", ExpiresIn=60)
    answer = post_form(post, b"jpeg bytes", filename="cat.jpg")
    assert answer.status_code == 204, answer.text
    assert answer.headers["etag"] == f'"{hashlib.md5(b"jpeg bytes").hexdigest()}"'
    assert answer.headers["location"].endswith(f"/{bucket}/uploads/cat.jpg")
    got = s3.get_object(Bucket=bucket, Key="uploads/cat.jpg")
    assert got["Body"].read() == b"jpeg bytes"
    assert swift.get(f"/{bucket}/uploads/cat.jpg").content == b"jpeg bytes"

    # Metadata, content type, ACL and a 201 with its PostResponse document.
    fields = {"Content-Type": "text/plain", "x-amz-meta-owner": "alice", "acl": "public-read",
              "success_action_status": "201"}  # fmt: skip
    conditions = [{"Content-Type": "text/plain"}, ["starts-with", "$x-amz-meta-owner", ""],
                  {"acl": "public-read"}, {"success_action_status": "201"},
                  ["content-length-range", 1, 1024]]  # fmt: skip
    fields["x-amz-acl"] = fields.pop("acl")
    conditions[2] = {"x-amz-acl": "public-read"}
    post = s3.generate_presigned_post(bucket, "notes.txt", Fields=fields, Conditions=conditions,
                                      ExpiresIn=60)  # fmt: skip
    answer = post_form(post, b"some notes")
    assert answer.status_code == 201, answer.text
    assert "<Key>notes.txt</Key>" in answer.text and f"<Bucket>{bucket}</Bucket>" in answer.text
    head = s3.head_object(Bucket=bucket, Key="notes.txt")
    assert head["ContentType"] == "text/plain" and head["Metadata"] == {"owner": "alice"}
    assert httpx.get(f"{endpoint}/{bucket}/notes.txt").content == b"some notes"

    # success_action_redirect: 303 to it, with bucket, key and ETag.
    target = "http://example.com/done?from=form"
    post = s3.generate_presigned_post(
        bucket, "r.txt", Fields={"success_action_redirect": target},
        Conditions=[{"success_action_redirect": target}], ExpiresIn=60,
    )  # fmt: skip
    answer = post_form(post, b"redirected")
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith(target + "&") and f"bucket={bucket}" in location
    assert "key=r.txt" in location and "etag=" in location

    # A policy signed by hand (SigV4), and one signed with SigV2 (AWSAccessKeyId).
    keys = {"aws_access_key_id": s3._request_signer._credentials.access_key,
            "aws_secret_access_key": s3._request_signer._credentials.secret_key}  # fmt: skip
    expiration = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )
    policy = {"expiration": expiration, "conditions": [{"bucket": bucket}, {"key": "v4.bin"}]}
    fields = sign_policy_v4(keys, policy, {"key": "v4.bin"})
    answer = httpx.post(f"{endpoint}/{bucket}", data=fields, files={"file": ("x", b"v4")})
    assert answer.status_code == 204, answer.text
    encoded = base64.b64encode(json.dumps(
        {"expiration": expiration, "conditions": [{"bucket": bucket}, {"key": "v2.bin"}]}
    ).encode()).decode()  # fmt: skip
    v2_signature = base64.b64encode(
        hmac.new(keys["aws_secret_access_key"].encode(), encoded.encode(), hashlib.sha1).digest()
    ).decode()
    v2 = {"key": "v2.bin", "AWSAccessKeyId": keys["aws_access_key_id"], "policy": encoded,
          "signature": v2_signature}  # fmt: skip
    answer = httpx.post(f"{endpoint}/{bucket}", data=v2, files={"file": ("x", b"v2")})
    assert answer.status_code == 204, answer.text
    assert s3.get_object(Bucket=bucket, Key="v2.bin")["Body"].read() == b"v2"


def test_browser_uploads_refused_by_their_policy(endpoint, s3, other):
    bucket = unique("formbad")
    s3.create_bucket(Bucket=bucket)
    keys = {"aws_access_key_id": s3._request_signer._credentials.access_key,
            "aws_secret_access_key": s3._request_signer._credentials.secret_key}  # fmt: skip
    url = f"{endpoint}/{bucket}"

    def hand_signed(conditions: list, fields: dict, minutes: int = 5) -> dict:
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes)
        policy = {"expiration": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                  "conditions": [{"bucket": bucket}, *conditions]}  # fmt: skip
        return sign_policy_v4(keys, policy, fields)

    # Expired.
    fields = hand_signed([{"key": "late"}], {"key": "late"}, minutes=-1)
    answer = httpx.post(url, data=fields, files={"file": ("f", b"x")})
    assert s3_error(answer) == ("AccessDenied", 403, "Invalid according to Policy: Policy expired.")

    # A condition that does not hold, a field no condition allows.
    post = s3.generate_presigned_post(bucket, "in/${filename}", ExpiresIn=60)
    answer = post_form(post, b"x", key="elsewhere/x")
    code, status, message = s3_error(answer)
    assert (code, status) == ("AccessDenied", 403)
    assert message.startswith("Invalid according to Policy: Policy Condition failed:")
    assert "$key" in message
    answer = post_form(post, b"x", **{"x-amz-meta-sneaky": "1"})
    assert s3_error(answer) == (
        "AccessDenied", 403, "Invalid according to Policy: Extra input fields: x-amz-meta-sneaky"
    )  # fmt: skip

    # content-length-range: too large, too small; nothing stored.
    post = s3.generate_presigned_post(bucket, "sized", Conditions=[["content-length-range", 2, 8]],
                                      ExpiresIn=60)  # fmt: skip
    code, status, _ = s3_error(post_form(post, b"x" * 9))
    assert (code, status) == ("EntityTooLarge", 400)
    code, status, _ = s3_error(post_form(post, b"x"))
    assert (code, status) == ("EntityTooSmall", 400)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="sized")
    assert error_of(exc)[1] == 404
    assert post_form(post, b"xyz").status_code == 204

    # A form cut inside its file: nothing stored.
    post = s3.generate_presigned_post(bucket, "cut", ExpiresIn=60)
    whole = httpx.Request("POST", url, data=post["fields"], files={"file": ("f", b"z" * 500)})
    body = whole.read()
    cut = httpx.post(url, content=body[: body.index(b"zzz") + 100],
                     headers={"content-type": whole.headers["content-type"]})  # fmt: skip
    assert s3_error(cut)[:2] == ("MalformedPOSTRequest", 400)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="cut")
    assert error_of(exc)[1] == 404

    # A bad signature, an unknown key, a policy that is not JSON, no file, no key.
    post = s3.generate_presigned_post(bucket, "k", ExpiresIn=60)
    bad = {**post["fields"], "x-amz-signature": "0" * 64}
    answer = httpx.post(url, data=bad, files={"file": ("f", b"x")})
    assert s3_error(answer)[:2] == ("SignatureDoesNotMatch", 403)
    unknown = {**post["fields"], "x-amz-credential": "nobody/" + post["fields"][
        "x-amz-credential"].split("/", 1)[1]}  # fmt: skip
    answer = httpx.post(url, data=unknown, files={"file": ("f", b"x")})
    assert s3_error(answer)[:2] == ("InvalidAccessKeyId", 403)
    fields = sign_policy_v4(keys, {"expiration": "x", "conditions": []}, {"key": "k"})
    fields["policy"] = base64.b64encode(b"not json").decode()
    key = ("AWS4" + keys["aws_secret_access_key"]).encode()
    for part in (fields["x-amz-credential"].split("/")[1], "RegionOne", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    fields["x-amz-signature"] = hmac.new(key, fields["policy"].encode(), hashlib.sha256).hexdigest()
    answer = httpx.post(url, data=fields, files={"file": ("f", b"x")})
    assert s3_error(answer)[:2] == ("InvalidPolicyDocument", 400)
    answer = httpx.post(url, data=post["fields"], files={"other": ("f", b"x")})
    assert s3_error(answer)[:2] == ("InvalidArgument", 400)
    no_key = {k: v for k, v in post["fields"].items() if k != "key"}
    answer = httpx.post(url, data=no_key, files={"file": ("f", b"x")})
    assert s3_error(answer)[:2] == ("InvalidArgument", 400)
    answer = httpx.post(url, content=b"--zz\r\ngarbage", headers={
        "content-type": "multipart/form-data; boundary=zz"})  # fmt: skip
    assert answer.status_code == 400 and "<RequestId>" in answer.text

    # Without a policy: an anonymous upload, refused in a private bucket; another
    # project's signed policy is refused too (it may not write this bucket).
    answer = httpx.post(url, data={"key": "anon"}, files={"file": ("f", b"x")})
    assert s3_error(answer)[:2] == ("AccessDenied", 403)
    post = other.generate_presigned_post(bucket, "theirs", ExpiresIn=60)
    assert s3_error(post_form(post, b"x"))[:2] == ("AccessDenied", 403)


# -- the same with awscli ----------------------------------------------------------------------


def test_awscli_object_acls_suspended_deletes_and_presigned_posts(
    endpoint, demo_keys, s3, tmp_path: Path
):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ACCESS_KEY_ID": demo_keys["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": demo_keys["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "RegionOne",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }

    def aws(*args: str) -> dict:
        proc = subprocess.run(
            [str(VENV_BIN / "aws"), "--endpoint-url", endpoint, "--output", "json", *args],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, f"aws {' '.join(args)}: {proc.stderr}"
        return json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}

    bucket = unique("cliacl")
    aws("s3", "mb", f"s3://{bucket}")
    (tmp_path / "page.html").write_bytes(b"<p>hello</p>")
    aws("s3", "cp", str(tmp_path / "page.html"), f"s3://{bucket}/page.html", "--acl", "public-read")
    assert httpx.get(f"{endpoint}/{bucket}/page.html").content == b"<p>hello</p>"
    aws("s3api", "put-object-acl", "--bucket", bucket, "--key", "page.html", "--acl", "private")
    assert httpx.get(f"{endpoint}/{bucket}/page.html").status_code == 403
    grants = aws("s3api", "get-object-acl", "--bucket", bucket, "--key", "page.html")["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    aws("s3api", "put-object-acl", "--bucket", bucket, "--key", "page.html",
        "--grant-read", f"uri={AUTHENTICATED}")  # fmt: skip
    grants = aws("s3api", "get-object-acl", "--bucket", bucket, "--key", "page.html")["Grants"]
    assert {"Type": "Group", "URI": AUTHENTICATED} in [g["Grantee"] for g in grants]

    aws("s3api", "put-bucket-versioning", "--bucket", bucket,
        "--versioning-configuration", "Status=Suspended")  # fmt: skip
    gone = aws("s3api", "delete-object", "--bucket", bucket, "--key", "page.html")
    assert gone == {"DeleteMarker": True, "VersionId": "null"}
    versions = aws("s3api", "list-object-versions", "--bucket", bucket)
    assert [(m["VersionId"], m["IsLatest"]) for m in versions["DeleteMarkers"]] == [("null", True)]
    assert "Versions" not in versions

    # `aws s3 presign` makes GET URLs only; a browser form's fields come from boto3.
    post = s3.generate_presigned_post(bucket, "form/${filename}", ExpiresIn=60)
    assert post_form(post, b"from a form", filename="f.txt").status_code == 204
    listed_keys = aws("s3api", "list-objects-v2", "--bucket", bucket)["Contents"]
    assert [o["Key"] for o in listed_keys] == ["form/f.txt"]


def _answered(endpoint: str, method: str, route: str) -> float:
    """Requests of this method and route the object store's /metrics has counted."""
    text = httpx.get(f"{endpoint}/metrics", timeout=30).text
    wanted = ('service="object-store"', f'method="{method}"', f'route="{route}"')
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cumulo_http_requests_total{") and all(w in line for w in wanted)
    )


def test_an_s3_request_is_counted_as_itself_once(s3, endpoint):
    """An S3 GET shows in the metrics as one S3 request, not as the Swift GET it is
    carried out as."""
    bucket = unique("counted")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"counted")
    s3_route, swift_route = "s3:/{bucket}/{key}", "/v1/{account}/{container}/{object:path}"
    before = _answered(endpoint, "GET", s3_route), _answered(endpoint, "GET", swift_route)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"counted"
    after = _answered(endpoint, "GET", s3_route), _answered(endpoint, "GET", swift_route)
    assert after == (before[0] + 1, before[1])
