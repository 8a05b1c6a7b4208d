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
from botocore.exceptions import ClientError, WaiterError

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
            "image", "create", name, "--disk-format", fmt, "--container-format", fmt,
            "--file", str(files / name), "--public", "-f", "json",
        )  # fmt: skip
        ids[fmt] = made["id"]
    (files / "root").write_bytes(b"\0" * 65536)
    made = cloud.openstack(
        "image", "create", "ec2-machine", "--disk-format", "raw", "--container-format", "bare",
        "--file", str(files / "root"), "--public", "--property", f"kernel_id={ids['aki']}",
        "--property", f"ramdisk_id={ids['ari']}", "-f", "json",
    )  # fmt: skip
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
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )  # fmt: skip
    described_group = ec2.describe_security_groups(GroupIds=[group["GroupId"]])["SecurityGroups"][0]
    assert {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}.items() <= (
        described_group["IpPermissions"][0].items()
    )
    assert described_group["IpPermissions"][0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]

    run = ec2.run_instances(
        ImageId=ami["ImageId"], KernelId=ami["KernelId"], RamdiskId=ami["RamdiskId"],
        InstanceType="m1.tiny", MinCount=1, MaxCount=1, KeyName="ec2-key",
        SecurityGroupIds=[group["GroupId"]], UserData="#!/bin/sh\necho hello\n",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "ops"}]}],
    )  # fmt: skip
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
        Filters=[{"Name": "instance-state-name", "Values": ["running"]},
                 {"Name": "tag:team", "Values": ["o*"]}])  # fmt: skip
    assert instance_id in [i["InstanceId"] for r in by_state["Reservations"] for i in r["Instances"]]
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
    second = ec2.run_instances(ImageId=made["ImageId"], InstanceType="m1.tiny", MinCount=1, MaxCount=1)
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
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[instance_id, second_id], WaiterConfig=WAIT)
    with pytest.raises(ClientError) as exc:
        ec2.stop_instances(InstanceIds=[instance_id])
    assert code_of(exc) == ("IncorrectInstanceState", 400)
    servers = cloud.openstack("server", "list", "-f", "json", cloud="cumulo-demo")
    assert instance_id not in [s["Name"] for s in servers]
