"""The EC2 API as a new user meets it: `openstack ec2 credentials create`, then boto3 and
awscli against port 8788; what they make is what the `openstack` CLI shows."""

from __future__ import annotations

import json
import os
import subprocess
import time

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.cloudrunner import VENV_BIN, CloudRunner, configure_state_dir

WAIT = {"Delay": 0.2, "MaxAttempts": 300}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    state = tmp_path_factory.mktemp("ec2")
    configure_state_dir(state)
    runner = CloudRunner(state).start()
    yield runner
    runner.stop()


@pytest.fixture(scope="module")
def endpoint(cloud: CloudRunner) -> str:
    return f"http://127.0.0.1:{cloud.config.ports.ec2}"


def keys_of(cloud: CloudRunner, os_cloud: str) -> dict:
    made = cloud.openstack("ec2", "credentials", "create", "-f", "json", cloud=os_cloud)
    return {"aws_access_key_id": made["access"], "aws_secret_access_key": made["secret"]}


def client(endpoint: str, keys: dict, service: str = "ec2"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="RegionOne",
        config=Config(retries={"max_attempts": 1}),
        **keys,
    )


@pytest.fixture(scope="module")
def demo_keys(cloud: CloudRunner) -> dict:
    return keys_of(cloud, "cumulo-demo")


@pytest.fixture(scope="module")
def ec2(endpoint: str, demo_keys: dict):
    return client(endpoint, demo_keys)


@pytest.fixture(scope="module")
def machine_image(cloud: CloudRunner, tmp_path_factory) -> dict:
    """A kernel, a ramdisk and a machine image naming them, as the demo image is made."""
    files = tmp_path_factory.mktemp("images")
    ids = {}
    for name, fmt in (("ec2-kernel", "aki"), ("ec2-ramdisk", "ari")):
        (files / name).write_bytes(os.urandom(4096))
        made = cloud.openstack(
            "image",
            "create",
            name,
            "--disk-format",
            fmt,
            "--container-format",
            fmt,
            "--file",
            str(files / name),
            "--public",
            "-f",
            "json",
        )
        ids[fmt] = made["id"]
    (files / "root").write_bytes(b"\0" * 65536)
    made = cloud.openstack(
        "image",
        "create",
        "ec2-machine",
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        "--file",
        str(files / "root"),
        "--public",
        "--property",
        f"kernel_id={ids['aki']}",
        "--property",
        f"ramdisk_id={ids['ari']}",
        "-f",
        "json",
    )
    ids["ami"] = made["id"]
    return ids


def code_of(excinfo) -> tuple[str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def find_image(ec2, name: str) -> dict:
    images = ec2.describe_images(Filters=[{"Name": "name", "Values": [name]}])["Images"]
    assert len(images) == 1, images
    return images[0]


def test_boto3_runs_an_instance_as_on_aws(cloud, ec2, machine_image, tmp_path):
    # AMIs: the machine image names its kernel and ramdisk as aki-/ari- ids.
    ami = find_image(ec2, "ec2-machine")
    assert ami["ImageId"].startswith("ami-") and ami["State"] == "available"
    assert ami["KernelId"].startswith("aki-") and ami["RamdiskId"].startswith("ari-")
    assert ami["Public"] is True and ami["ImageType"] == "machine"
    kernel = ec2.describe_images(ImageIds=[ami["KernelId"]])["Images"][0]
    assert kernel["ImageType"] == "kernel" and kernel["Name"] == "ec2-kernel"
    # The same id on every call (kept, never recomputed).
    assert find_image(ec2, "ec2-machine")["ImageId"] == ami["ImageId"]

    key = ec2.create_key_pair(KeyName="ec2-key")
    assert key["KeyMaterial"].startswith("-----BEGIN") and key["KeyPairId"].startswith("key-")
    group = ec2.create_security_group(GroupName="ec2-web", Description="ssh in")
    ec2.authorize_security_group_ingress(
        GroupId=group["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    described_group = ec2.describe_security_groups(GroupIds=[group["GroupId"]])["SecurityGroups"][0]
    assert {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}.items() <= (
        described_group["IpPermissions"][0].items()
    )
    assert described_group["IpPermissions"][0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]

    run = ec2.run_instances(
        ImageId=ami["ImageId"],
        KernelId=ami["KernelId"],
        RamdiskId=ami["RamdiskId"],
        InstanceType="m1.tiny",
        MinCount=1,
        MaxCount=1,
        KeyName="ec2-key",
        SecurityGroupIds=[group["GroupId"]],
        UserData="#!/bin/sh\necho hello\n",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "ops"}]}],
    )
    assert run["ReservationId"].startswith("r-")
    instance_id = run["Instances"][0]["InstanceId"]
    assert instance_id.startswith("i-") and run["Instances"][0]["State"]["Name"] == "pending"
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert instance["State"] == {"Code": 16, "Name": "running"}
    assert instance["InstanceType"] == "m1.tiny" and instance["KeyName"] == "ec2-key"
    assert instance["ImageId"] == ami["ImageId"] and instance["KernelId"] == ami["KernelId"]
    assert instance["PrivateIpAddress"] and {"Key": "team", "Value": "ops"} in instance["Tags"]
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group["GroupId"]]
    by_state = ec2.describe_instances(
        Filters=[
            {"Name": "instance-state-name", "Values": ["running"]},
            {"Name": "tag:team", "Values": ["o*"]},
        ]
    )
    assert instance_id in [
        i["InstanceId"] for r in by_state["Reservations"] for i in r["Instances"]
    ]
    output = ec2.get_console_output(InstanceId=instance_id)
    assert "Output" in output and isinstance(output["Output"], str)
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    assert attr["UserData"]["Value"]

    # The same server through the openstack CLI, under the instance id as its name.
    server = cloud.openstack("server", "show", instance_id, "-f", "json", cloud="cumulo-demo")
    assert server["status"] == "ACTIVE" and server["key_name"] == "ec2-key"

    # Elastic IP onto the instance.
    address = ec2.allocate_address(Domain="vpc")
    assoc = ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=instance_id)
    assert assoc["AssociationId"].startswith("eipassoc-")
    described = ec2.describe_addresses(AllocationIds=[address["AllocationId"]])["Addresses"][0]
    assert described["InstanceId"] == instance_id and described["PublicIp"] == address["PublicIp"]
    fips = cloud.openstack("floating", "ip", "list", "-f", "json", cloud="cumulo-demo")
    assert any(f["Floating IP Address"] == address["PublicIp"] and f["Port"] for f in fips)

    # A volume attached to it.
    volume = ec2.create_volume(Size=1, AvailabilityZone="nova")
    ec2.get_waiter("volume_available").wait(VolumeIds=[volume["VolumeId"]], WaiterConfig=WAIT)
    ec2.attach_volume(VolumeId=volume["VolumeId"], InstanceId=instance_id, Device="/dev/vdb")
    ec2.get_waiter("volume_in_use").wait(VolumeIds=[volume["VolumeId"]], WaiterConfig=WAIT)
    attached = ec2.describe_volumes(VolumeIds=[volume["VolumeId"]])["Volumes"][0]
    assert attached["Attachments"][0]["InstanceId"] == instance_id
    os_volume = cloud.openstack("volume", "list", "-f", "json", cloud="cumulo-demo")
    assert any(v["Status"] == "in-use" for v in os_volume)

    # An image of the instance, and a second instance from it.
    made = ec2.create_image(InstanceId=instance_id, Name="ec2-snapshot", NoReboot=True)
    ec2.get_waiter("image_available").wait(ImageIds=[made["ImageId"]], WaiterConfig=WAIT)
    snapshot_image = ec2.describe_images(Owners=["self"])["Images"]
    assert [i["ImageId"] for i in snapshot_image] == [made["ImageId"]]
    second = ec2.run_instances(
        ImageId=made["ImageId"], InstanceType="m1.tiny", MinCount=1, MaxCount=1
    )
    second_id = second["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[second_id], WaiterConfig=WAIT)

    # Tear down: detach, release, terminate, and the terminated instances still shown.
    ec2.detach_volume(VolumeId=volume["VolumeId"])
    ec2.get_waiter("volume_available").wait(VolumeIds=[volume["VolumeId"]], WaiterConfig=WAIT)
    ec2.delete_volume(VolumeId=volume["VolumeId"])
    ec2.disassociate_address(AssociationId=assoc["AssociationId"])
    ec2.release_address(AllocationId=address["AllocationId"])
    gone = ec2.terminate_instances(InstanceIds=[instance_id, second_id])
    assert {c["CurrentState"]["Name"] for c in gone["TerminatingInstances"]} == {"shutting-down"}
    ec2.get_waiter("instance_terminated").wait(
        InstanceIds=[instance_id, second_id], WaiterConfig=WAIT
    )
    with pytest.raises(ClientError) as exc:
        ec2.stop_instances(InstanceIds=[instance_id])
    assert code_of(exc) == ("IncorrectInstanceState", 400)
    servers = cloud.openstack("server", "list", "-f", "json", cloud="cumulo-demo")
    assert instance_id not in [s["Name"] for s in servers]


def test_awscli_describes_runs_and_imports_an_image(
    cloud, endpoint, demo_keys, machine_image, tmp_path
):
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": demo_keys["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": demo_keys["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "RegionOne",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }
    s3_endpoint = f"http://127.0.0.1:{cloud.config.ports.object_store}"

    def aws(*args: str, url: str = endpoint) -> dict | str:
        proc = subprocess.run(
            [str(VENV_BIN / "aws"), "--endpoint-url", url, "--output", "json", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, f"aws {' '.join(args)}: {proc.stderr}"
        return json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else proc.stdout

    images = aws("ec2", "describe-images", "--filters", "Name=name,Values=ec2-machine")
    ami = images["Images"][0]["ImageId"]
    run = aws(
        "ec2", "run-instances", "--image-id", ami, "--instance-type", "m1.tiny", "--count", "2"
    )
    ids = [i["InstanceId"] for i in run["Instances"]]
    assert len(ids) == 2 and len({i["AmiLaunchIndex"] for i in run["Instances"]}) == 2
    aws("ec2", "wait", "instance-running", "--instance-ids", *ids)
    listed = aws("ec2", "describe-instances", "--instance-ids", *ids)
    assert [r["ReservationId"] for r in listed["Reservations"]] == [run["ReservationId"]]

    # import-image of a qcow2 put with `aws s3 cp`.
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    aws("s3", "mb", "s3://ec2-imports", url=s3_endpoint)
    aws("s3", "cp", str(disk), "s3://ec2-imports/disk.qcow2", url=s3_endpoint)
    task = aws(
        "ec2",
        "import-image",
        "--description",
        "imported disk",
        "--disk-containers",
        "Format=qcow2,UserBucket={S3Bucket=ec2-imports,S3Key=disk.qcow2}",
    )
    assert task["ImportTaskId"].startswith("import-ami-")
    for _ in range(100):
        tasks = aws("ec2", "describe-import-image-tasks", "--import-task-ids", task["ImportTaskId"])
        if tasks["ImportImageTasks"][0]["Status"] != "active":
            break
        time.sleep(0.2)
    done = tasks["ImportImageTasks"][0]
    assert done["Status"] == "completed", done
    image = aws("ec2", "describe-images", "--image-ids", done["ImageId"])["Images"][0]
    assert image["State"] == "available" and image["Name"] == "imported disk"
    shown = cloud.openstack("image", "show", "imported disk", "-f", "json", cloud="cumulo-demo")
    assert shown["disk_format"] == "qcow2" and shown["size"] == disk.stat().st_size
    aws("ec2", "terminate-instances", "--instance-ids", *ids)


def _bundle(image: bytes, cert_pem: bytes, name: str, kernel: str, ramdisk: str, part_size: int):
    """The bundling format of euca-bundle-image / ec2-bundle-image: the image tarred,
    gzipped, encrypted with AES-128-CBC under a random key and IV (their hex strings
    encrypted to the cloud's certificate, RSA PKCS#1 v1.5), split into SHA-1-digested
    parts, and a manifest naming them."""
    import gzip
    import hashlib
    import io
    import secrets
    import tarfile

    from cryptography import x509
    from cryptography.hazmat.primitives import padding as sym_padding
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(image)
        tar.addfile(info, io.BytesIO(image))
    key, iv = secrets.token_hex(16), secrets.token_hex(16)
    padder = sym_padding.PKCS7(128).padder()
    plain = padder.update(gzip.compress(tar_bytes.getvalue())) + padder.finalize()
    encryptor = Cipher(algorithms.AES(bytes.fromhex(key)), modes.CBC(bytes.fromhex(iv))).encryptor()
    encrypted = encryptor.update(plain) + encryptor.finalize()
    public = x509.load_pem_x509_certificate(cert_pem).public_key()
    parts = [encrypted[i : i + part_size] for i in range(0, len(encrypted), part_size)]
    part_xml = "".join(
        f'<part index="{i}"><filename>{name}.part.{i}</filename>'
        f'<digest algorithm="SHA1">{hashlib.sha1(p).hexdigest()}</digest></part>'
        for i, p in enumerate(parts)
    )
    manifest = (
        "<?xml version='1.0'?><manifest><version>2007-10-10</version>"
        "<bundler><name>euca-tools</name><version>3.4</version></bundler>"
        f"<machine_configuration><architecture>x86_64</architecture><kernel_id>{kernel}</kernel_id>"
        f"<ramdisk_id>{ramdisk}</ramdisk_id></machine_configuration>"
        f"<image><name>{name}</name><type>machine</type><size>{len(image)}</size>"
        f'<ec2_encrypted_key algorithm="AES-128-CBC">'
        f"{public.encrypt(key.encode(), padding.PKCS1v15()).hex()}</ec2_encrypted_key>"
        "<ec2_encrypted_iv>"
        f"{public.encrypt(iv.encode(), padding.PKCS1v15()).hex()}</ec2_encrypted_iv>"
        f'<parts count="{len(parts)}">{part_xml}</parts></image></manifest>'
    )
    return manifest.encode(), parts


def test_bundled_ami_registered_from_s3_and_run(cloud, endpoint, ec2, demo_keys, machine_image):
    ami = find_image(ec2, "ec2-machine")
    cert = httpx.get(f"{endpoint}/cloud-cert.pem").content
    assert cert.startswith(b"-----BEGIN CERTIFICATE-----")
    disk = os.urandom(300_000)
    manifest, parts = _bundle(disk, cert, "bundled.img", ami["KernelId"], ami["RamdiskId"], 100_000)
    s3 = client(f"http://127.0.0.1:{cloud.config.ports.object_store}", demo_keys, "s3")
    s3.create_bucket(Bucket="ec2-bundles")
    for i, part in enumerate(parts):
        s3.put_object(Bucket="ec2-bundles", Key=f"b/bundled.img.part.{i}", Body=part)
    s3.put_object(Bucket="ec2-bundles", Key="b/bundled.img.manifest.xml", Body=manifest)
    made = ec2.register_image(
        ImageLocation="ec2-bundles/b/bundled.img.manifest.xml", Name="bundled"
    )
    ec2.get_waiter("image_available").wait(ImageIds=[made["ImageId"]], WaiterConfig=WAIT)
    image = ec2.describe_images(ImageIds=[made["ImageId"]])["Images"][0]
    assert image["KernelId"] == ami["KernelId"] and image["RamdiskId"] == ami["RamdiskId"]
    assert image["ImageLocation"] == "ec2-bundles/b/bundled.img.manifest.xml"
    shown = cloud.openstack("image", "show", "bundled", "-f", "json", cloud="cumulo-demo")
    assert (
        shown["size"] == len(disk)
        and shown["checksum"] == __import__("hashlib").md5(disk).hexdigest()
    )
    run = ec2.run_instances(ImageId=made["ImageId"], InstanceType="m1.tiny", MinCount=1, MaxCount=1)
    instance_id = run["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    ec2.terminate_instances(InstanceIds=[instance_id])
    # A manifest encrypted to some other certificate is refused at once.
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "elsewhere")])
    now = datetime.datetime.now(datetime.UTC)
    other = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(other_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(other_key, hashes.SHA256())
    ).public_bytes(serialization.Encoding.PEM)
    manifest, parts = _bundle(disk, other, "other.img", ami["KernelId"], ami["RamdiskId"], 400_000)
    s3.put_object(Bucket="ec2-bundles", Key="other.img.manifest.xml", Body=manifest)
    with pytest.raises(ClientError) as exc:
        ec2.register_image(ImageLocation="ec2-bundles/other.img.manifest.xml", Name="other")
    assert code_of(exc) == ("InvalidManifest", 400)


def test_bad_input_gets_ec2_errors_and_leaves_nothing(
    cloud, endpoint, ec2, demo_keys, machine_image
):
    ami = find_image(ec2, "ec2-machine")
    wrong = client(endpoint, {**demo_keys, "aws_secret_access_key": "not-the-secret"})
    with pytest.raises(ClientError) as exc:
        wrong.describe_instances()
    assert code_of(exc) == ("AuthFailure", 401)
    unknown = client(endpoint, {"aws_access_key_id": "nobody", "aws_secret_access_key": "x"})
    with pytest.raises(ClientError) as exc:
        unknown.describe_regions()
    assert code_of(exc) == ("AuthFailure", 401)
    cases = [
        (lambda: ec2.describe_images(ImageIds=["ami-0123456789abcdef0"]), "InvalidAMIID.NotFound"),
        (lambda: ec2.describe_images(ImageIds=["nonsense"]), "InvalidAMIID.Malformed"),
        (
            lambda: ec2.run_instances(ImageId="ami-0123456789abcdef0", MinCount=1, MaxCount=1),
            "InvalidAMIID.NotFound",
        ),
        (
            lambda: ec2.describe_instances(InstanceIds=["i-0123456789abcdef0"]),
            "InvalidInstanceID.NotFound",
        ),
        (
            lambda: ec2.describe_instances(Filters=[{"Name": "flavour", "Values": ["x"]}]),
            "InvalidParameterValue",
        ),
        (
            lambda: ec2.run_instances(
                ImageId=ami["ImageId"], InstanceType="t9.huge", MinCount=1, MaxCount=1
            ),
            "InvalidParameterValue",
        ),
        (
            lambda: ec2.run_instances(
                ImageId=ami["ImageId"], KeyName="no-such-key", MinCount=1, MaxCount=1
            ),
            "InvalidKeyPair.NotFound",
        ),
        (
            lambda: ec2.run_instances(
                ImageId=ami["ImageId"], SecurityGroups=["no-such-group"], MinCount=1, MaxCount=1
            ),
            "InvalidGroup.NotFound",
        ),
        (
            lambda: ec2.describe_volumes(VolumeIds=["vol-0123456789abcdef0"]),
            "InvalidVolume.NotFound",
        ),
        (
            lambda: ec2.release_address(AllocationId="eipalloc-0123456789abcdef0"),
            "InvalidAllocationID.NotFound",
        ),
    ]
    for call, code in cases:
        with pytest.raises(ClientError) as exc:
            call()
        assert code_of(exc)[0] == code, (code, exc.value.response["Error"])
    ec2.create_key_pair(KeyName="twice")
    with pytest.raises(ClientError) as exc:
        ec2.create_key_pair(KeyName="twice")
    assert code_of(exc) == ("InvalidKeyPair.Duplicate", 400)
    with pytest.raises(ClientError) as exc:
        ec2.run_instances(ImageId=ami["ImageId"], MinCount=1, MaxCount=1, DryRun=True)
    assert code_of(exc) == ("DryRunOperation", 412)

    # Another project's instance is not there for the demo project.
    admin = client(endpoint, keys_of(cloud, "cumulo"))
    theirs = admin.run_instances(
        ImageId=ami["ImageId"], InstanceType="m1.tiny", MinCount=1, MaxCount=1
    )
    their_id = theirs["Instances"][0]["InstanceId"]
    for call in (
        lambda: ec2.describe_instances(InstanceIds=[their_id]),
        lambda: ec2.terminate_instances(InstanceIds=[their_id]),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert code_of(exc)[0] == "InvalidInstanceID.NotFound"
    assert their_id not in str(ec2.describe_instances())
    admin.terminate_instances(InstanceIds=[their_id])

    # Over quota: a RunInstances that cannot have MinCount makes none at all.
    before = len(cloud.openstack("server", "list", "-f", "json", cloud="cumulo-demo"))
    cloud.openstack("quota", "set", "--instances", str(before + 2), "demo")
    try:
        with pytest.raises(ClientError) as exc:
            ec2.run_instances(
                ImageId=ami["ImageId"], InstanceType="m1.tiny", MinCount=3, MaxCount=3
            )
        assert code_of(exc)[0] == "InstanceLimitExceeded"
        assert len(cloud.openstack("server", "list", "-f", "json", cloud="cumulo-demo")) == before
    finally:
        cloud.openstack("quota", "set", "--instances", "10", "demo")

    # The same ClientToken twice: one launch.
    first = ec2.run_instances(
        ImageId=ami["ImageId"],
        InstanceType="m1.tiny",
        MinCount=1,
        MaxCount=1,
        ClientToken="launch-once",
    )
    again = ec2.run_instances(
        ImageId=ami["ImageId"],
        InstanceType="m1.tiny",
        MinCount=1,
        MaxCount=1,
        ClientToken="launch-once",
    )
    assert again["Instances"][0]["InstanceId"] == first["Instances"][0]["InstanceId"]
    ec2.terminate_instances(InstanceIds=[first["Instances"][0]["InstanceId"]])


def test_signature_version_2_and_old_requests(cloud, endpoint, demo_keys):
    from datetime import UTC, datetime, timedelta

    from cumulo.identity.ec2_signature import sign_v2

    host = endpoint.removeprefix("http://")

    def v2(when: datetime, secret: str) -> httpx.Response:
        params = {
            "Action": "DescribeRegions",
            "Version": "2016-11-15",
            "AWSAccessKeyId": demo_keys["aws_access_key_id"],
            "SignatureVersion": "2",
            "SignatureMethod": "HmacSHA256",
            "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        params["Signature"] = sign_v2(secret, "GET", host, "/", params)
        return httpx.get(f"{endpoint}/", params=params)

    now = datetime.now(UTC)
    ok = v2(now, demo_keys["aws_secret_access_key"])
    assert ok.status_code == 200 and b"<regionName>RegionOne</regionName>" in ok.content
    old = v2(now - timedelta(minutes=20), demo_keys["aws_secret_access_key"])
    assert old.status_code == 400 and b"<Code>RequestExpired</Code>" in old.content
    bad = v2(now, "wrong")
    assert bad.status_code == 401 and b"<Code>AuthFailure</Code>" in bad.content
    assert b"<RequestID>" in bad.content


def test_sigv4_post_with_a_signed_query_string(endpoint, demo_keys):
    """A POST whose URL carries parameters too: botocore's SigV4 covers them in the
    canonical query (and the form with the body's hash); the two are merged, as AWS does.
    A parameter added to the URL or the form after signing is refused, and one in both."""
    from botocore.auth import SigV4Auth, SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    keys = Credentials(demo_keys["aws_access_key_id"], demo_keys["aws_secret_access_key"])
    form = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}

    def post(query: str, body: str, *, after: str = "", body_after: str = "") -> httpx.Response:
        request = AWSRequest(method="POST", url=f"{endpoint}/?{query}", data=body, headers=form)
        SigV4Auth(keys, "ec2", "RegionOne").add_auth(request)
        return httpx.post(
            request.url + after, content=(body + body_after).encode(), headers=dict(request.headers)
        )

    action = "Action=DescribeRegions&Version=2016-11-15"
    ok = post(action, "RegionName.1=RegionOne")
    assert ok.status_code == 200, ok.text
    assert b"<regionName>RegionOne</regionName>" in ok.content
    # The form's parameters are read beside the URL's: this one is refused by the action.
    nowhere = post(action, "RegionName.1=Nowhere")
    assert nowhere.status_code == 400 and b"Invalid region: Nowhere" in nowhere.content
    filtered = post(action, "Filter.1.Name=region-name&Filter.1.Value.1=elsewhere")
    assert filtered.status_code == 200 and b"<regionName>" not in filtered.content
    # Only part of the parameters in the URL: the rest in the form.
    split = post("Version=2016-11-15", "Action=DescribeRegions")
    assert split.status_code == 200 and b"<regionName>RegionOne</regionName>" in split.content

    for tampered in (
        post(action, "RegionName.1=RegionOne", after="&RegionName.2=Nowhere"),
        post("Version=2016-11-15", "Action=DescribeRegions", after="&DryRun=true"),
        post(action, "RegionName.1=RegionOne", body_after="&RegionName.2=Nowhere"),
    ):
        assert tampered.status_code == 401, tampered.text
        assert b"<Code>AuthFailure</Code>" in tampered.content
    # A parameter in both the URL and the form: neither is guessed.
    both = post(action, "Version=2016-11-15")
    assert both.status_code == 400 and b"<Code>InvalidParameterCombination</Code>" in both.content
    assert b"Version" in both.content

    # A presigned POST (botocore moves the form into the signed URL).
    request = AWSRequest(method="POST", url=f"{endpoint}/", data={"Action": "DescribeRegions",
                         "Version": "2016-11-15"}, headers=form)  # fmt: skip
    SigV4QueryAuth(keys, "ec2", "RegionOne", expires=300).add_auth(request)
    assert "X-Amz-Signature=" in request.url and not request.data
    presigned = httpx.post(request.url, headers=dict(request.headers))
    assert presigned.status_code == 200, presigned.text
    assert b"<regionName>RegionOne</regionName>" in presigned.content
    unsigned = httpx.post(request.url + "&RegionName.1=Nowhere", headers=dict(request.headers))
    assert unsigned.status_code == 401 and b"<Code>AuthFailure</Code>" in unsigned.content


def test_images_from_snapshots_copies_and_launch_permissions(cloud, endpoint, ec2, machine_image):
    ami = find_image(ec2, "ec2-machine")
    volume = ec2.create_volume(Size=1, AvailabilityZone="nova")
    ec2.get_waiter("volume_available").wait(VolumeIds=[volume["VolumeId"]], WaiterConfig=WAIT)
    snap = ec2.create_snapshot(VolumeId=volume["VolumeId"], Description="root disk")
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap["SnapshotId"]], WaiterConfig=WAIT)
    assert (
        ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"][0]["VolumeId"] == volume["VolumeId"]
    )
    registered = ec2.register_image(
        Name="from-snapshot",
        RootDeviceName="/dev/vda",
        KernelId=ami["KernelId"],
        RamdiskId=ami["RamdiskId"],
        BlockDeviceMappings=[{"DeviceName": "/dev/vda", "Ebs": {"SnapshotId": snap["SnapshotId"]}}],
    )
    ec2.get_waiter("image_available").wait(ImageIds=[registered["ImageId"]], WaiterConfig=WAIT)
    image = ec2.describe_images(ImageIds=[registered["ImageId"]])["Images"][0]
    assert image["KernelId"] == ami["KernelId"] and image["Name"] == "from-snapshot"
    shown = cloud.openstack("image", "show", "from-snapshot", "-f", "json", cloud="cumulo-demo")
    assert shown["size"] == 1024**3  # the snapshot's whole disk
    copy = ec2.copy_image(SourceImageId=ami["ImageId"], SourceRegion="RegionOne", Name="copied")
    ec2.get_waiter("image_available").wait(ImageIds=[copy["ImageId"]], WaiterConfig=WAIT)
    copied = ec2.describe_images(ImageIds=[copy["ImageId"]])["Images"][0]
    assert copied["KernelId"] == ami["KernelId"] and copied["Public"] is False
    # Launch permission for another project: the admin project sees and runs it.
    admin = client(endpoint, keys_of(cloud, "cumulo"))
    admin_project = cloud.openstack("project", "show", "admin", "-f", "json")["id"]
    ec2.modify_image_attribute(
        ImageId=copy["ImageId"], LaunchPermission={"Add": [{"UserId": admin_project}]}
    )
    perms = ec2.describe_image_attribute(ImageId=copy["ImageId"], Attribute="launchPermission")
    assert perms["LaunchPermissions"] == [{"UserId": admin_project}]
    assert admin.describe_images(ImageIds=[copy["ImageId"]])["Images"][0]["Name"] == "copied"
    ec2.reset_image_attribute(ImageId=copy["ImageId"], Attribute="launchPermission")
    perms = ec2.describe_image_attribute(ImageId=copy["ImageId"], Attribute="launchPermission")
    assert perms["LaunchPermissions"] == []
    shown = cloud.openstack("image", "show", "copied", "-f", "json", cloud="cumulo-demo")
    assert shown["visibility"] == "private"
    for image_id in (copy["ImageId"], registered["ImageId"]):
        ec2.deregister_image(ImageId=image_id)
    assert "copied" not in str(ec2.describe_images(Owners=["self"]))
    ec2.delete_snapshot(SnapshotId=snap["SnapshotId"])
    ec2.delete_volume(VolumeId=volume["VolumeId"])


def test_instance_lifecycle_and_attributes(cloud, ec2, machine_image):
    ami = find_image(ec2, "ec2-machine")
    run = ec2.run_instances(ImageId=ami["ImageId"], InstanceType="m1.tiny", MinCount=1, MaxCount=1)
    instance_id = run["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    ec2.reboot_instances(InstanceIds=[instance_id])
    stopping = ec2.stop_instances(InstanceIds=[instance_id])["StoppingInstances"][0]
    assert stopping["PreviousState"]["Name"] == "running"
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "m1.small"})
    for _ in range(150):
        attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="instanceType")
        state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        if attr["InstanceType"]["Value"] == "m1.small" and state["State"]["Name"] == "stopped":
            break
        time.sleep(0.2)
    assert attr["InstanceType"]["Value"] == "m1.small"
    ec2.start_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    statuses = ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"]
    assert statuses[0]["InstanceStatus"]["Status"] == "ok"
    with pytest.raises(ClientError) as exc:
        ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "m1.tiny"})
    assert code_of(exc)[0] == "IncorrectInstanceState"
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "Name", "Value": "web"}])
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]}])["Tags"]
    assert tags == [
        {"Key": "Name", "Value": "web", "ResourceId": instance_id, "ResourceType": "instance"}
    ]
    ec2.delete_tags(Resources=[instance_id], Tags=[{"Key": "Name"}])
    assert not ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]}])["Tags"]
    assert ec2.describe_regions()["Regions"][0]["RegionName"] == "RegionOne"
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert zones and zones[0]["State"] == "available"
    ec2.terminate_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)


def test_vpc_subnet_gateway_and_interfaces(cloud, ec2, machine_image):
    ami = find_image(ec2, "ec2-machine")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]
    with pytest.raises(ClientError) as exc:
        ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.30.1.0/24")
    assert code_of(exc)[0] == "InvalidSubnet.Range"
    subnet = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.20.1.0/24")["Subnet"]
    assert subnet["VpcId"] == vpc["VpcId"] and subnet["CidrBlock"] == "10.20.1.0/24"
    gateway = ec2.create_internet_gateway()["InternetGateway"]
    ec2.attach_internet_gateway(InternetGatewayId=gateway["InternetGatewayId"], VpcId=vpc["VpcId"])
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
    routes = tables["RouteTables"][0]["Routes"]
    assert {
        "DestinationCidrBlock": "0.0.0.0/0",
        "GatewayId": gateway["InternetGatewayId"],
        "State": "active",
        "Origin": "CreateRoute",
    } in routes
    router = cloud.openstack("router", "show", vpc["VpcId"], "-f", "json", cloud="cumulo-demo")
    assert router["external_gateway_info"]
    run = ec2.run_instances(
        ImageId=ami["ImageId"],
        InstanceType="m1.tiny",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet["SubnetId"],
        PrivateIpAddress="10.20.1.50",
    )
    instance_id = run["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert instance["PrivateIpAddress"] == "10.20.1.50"
    enis = ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]
    assert enis[0]["SubnetId"] == subnet["SubnetId"] and enis[0]["VpcId"] == vpc["VpcId"]
    address = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=instance_id)
    with pytest.raises(ClientError) as exc:
        ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    assert code_of(exc)[0] == "DependencyViolation"
    ec2.terminate_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    ec2.release_address(AllocationId=address["AllocationId"])
    eni = ec2.create_network_interface(SubnetId=subnet["SubnetId"])["NetworkInterface"]
    ec2.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])
    with pytest.raises(ClientError) as exc:
        ec2.delete_vpc(VpcId=vpc["VpcId"])
    assert code_of(exc)[0] == "DependencyViolation"
    ec2.detach_internet_gateway(InternetGatewayId=gateway["InternetGatewayId"], VpcId=vpc["VpcId"])
    ec2.delete_internet_gateway(InternetGatewayId=gateway["InternetGatewayId"])
    ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    ec2.delete_vpc(VpcId=vpc["VpcId"])
    assert vpc["VpcId"] not in str(ec2.describe_vpcs())
    routers = cloud.openstack("router", "list", "-f", "json", cloud="cumulo-demo")
    assert vpc["VpcId"] not in [r["Name"] for r in routers]
