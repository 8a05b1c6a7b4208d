"""Two projects through the EC2 API, each with its own EC2 credentials (Identity's
/v3/credentials) and boto3: project B neither sees, changes nor uses what project A owns
— instances, AMIs, key pairs, security groups, volumes, snapshots, Elastic IPs, VPCs,
subnets, internet gateways, route tables, network interfaces, tags — by id in every
action that takes one, through every listing and its filters (`owner-id`, `Owners`,
`ExecutableUsers`, `OwnerIds`, ids in `Filter.N`), nor by naming it in its own requests
(RunInstances into A's subnet, with A's AMI, group, key or snapshot; attaching A's
volume; associating A's address). Each refusal is the error AWS gives (the resource's
`Invalid...ID.NotFound`, `AuthFailure` for an AMI B may launch but not change), and A's
own view is the same afterwards.

tests/functional/test_tenant_isolation.py proves the same through the OpenStack APIs.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from botocore import xform_name
from botocore.exceptions import ClientError

from cumulo.ec2.api import load
from cumulo.ec2.protocol import operation
from tests.cloudrunner import CloudRunner, password_auth
from tests.functional.test_ec2 import (
    WAIT,
    client,
    find_image,
    machine_image,  # noqa: F401 - fixture
)

INGRESS = [
    {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
]


@dataclass
class Project:
    """A project's member seen through EC2: its client, project id, and what it made
    (by name: `instance`, `ami`, `group`...)."""

    ec2: Any
    project_id: str
    ids: dict[str, str]
    view: dict[str, Any] | None = None  # owner_view once everything was made


def member_with_ec2_keys(cloud: CloudRunner, admin_token: str, name: str) -> tuple[str, str, dict]:
    """A new project with one member, who makes its own EC2 credential (POST
    /v3/credentials with its own token): the project id, the member's token and the
    boto3 keys."""
    password = f"{name}-password-1"
    with cloud.http(admin_token) as admin:
        project = admin.post("/v3/projects", json={"project": {"name": name}}).json()["project"]
        user = admin.post(
            "/v3/users",
            json={
                "user": {"name": name, "password": password, "default_project_id": project["id"]}
            },
        ).json()["user"]
        role = admin.get("/v3/roles", params={"name": "member"}).json()["roles"][0]
        path = f"/v3/projects/{project['id']}/users/{user['id']}/roles/{role['id']}"
        assert admin.put(path).status_code == 204
    login = httpx.post(
        f"{cloud.auth_url}/auth/tokens",
        json=password_auth({"id": user["id"]}, password, {"project": {"id": project["id"]}}),
    )
    keys = {"access": uuid.uuid4().hex, "secret": uuid.uuid4().hex}
    made = httpx.post(
        f"{cloud.auth_url}/credentials",
        headers={"X-Auth-Token": login.headers["X-Subject-Token"]},
        json={
            "credential": {
                "type": "ec2",
                "user_id": user["id"],
                "project_id": project["id"],
                "blob": json.dumps(keys),
            }
        },
    )
    assert made.status_code == 201, made.text
    return (
        project["id"],
        login.headers["X-Subject-Token"],
        {
            "aws_access_key_id": keys["access"],
            "aws_secret_access_key": keys["secret"],
        },
    )


def build_tenant(ec2, cidr: str, public_ami: str) -> dict[str, str]:
    """One of each: a VPC with a subnet and internet gateway, a security group, a key
    pair, an instance in the subnet, an Elastic IP, volumes and a snapshot."""
    ids: dict[str, str] = {}
    vpc = ec2.create_vpc(CidrBlock=f"{cidr}.0.0/16")["Vpc"]["VpcId"]
    ids["vpc"] = vpc
    ids["subnet"] = ec2.create_subnet(VpcId=vpc, CidrBlock=f"{cidr}.1.0/24")["Subnet"]["SubnetId"]
    ids["igw"] = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=ids["igw"], VpcId=vpc)
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])
    ids["rtb"] = tables["RouteTables"][0]["RouteTableId"]
    ids["group_name"] = f"web-{cidr.replace('.', '-')}"
    ids["group"] = ec2.create_security_group(GroupName=ids["group_name"], Description="web")[
        "GroupId"
    ]
    ec2.authorize_security_group_ingress(GroupId=ids["group"], IpPermissions=INGRESS)
    ids["key_name"] = f"key-{cidr.replace('.', '-')}"
    ids["key"] = ec2.create_key_pair(KeyName=ids["key_name"])["KeyPairId"]
    run = ec2.run_instances(
        ImageId=public_ami,
        InstanceType="m1.tiny",
        MinCount=1,
        MaxCount=1,
        SubnetId=ids["subnet"],
        SecurityGroupIds=[ids["group"]],
        KeyName=ids["key_name"],
    )
    ids["instance"] = run["Instances"][0]["InstanceId"]
    ids["volume"] = ec2.create_volume(Size=1, AvailabilityZone="nova")["VolumeId"]
    ids["attached_volume"] = ec2.create_volume(Size=1, AvailabilityZone="nova")["VolumeId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[ids["instance"]], WaiterConfig=WAIT)
    volumes = [ids["volume"], ids["attached_volume"]]
    ec2.get_waiter("volume_available").wait(VolumeIds=volumes, WaiterConfig=WAIT)
    ec2.attach_volume(
        VolumeId=ids["attached_volume"], InstanceId=ids["instance"], Device="/dev/vdb"
    )
    ec2.get_waiter("volume_in_use").wait(VolumeIds=[ids["attached_volume"]], WaiterConfig=WAIT)
    ids["snapshot"] = ec2.create_snapshot(VolumeId=ids["volume"])["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[ids["snapshot"]], WaiterConfig=WAIT)
    address = ec2.allocate_address(Domain="vpc")
    ids["allocation"], ids["public_ip"] = address["AllocationId"], address["PublicIp"]
    return ids


def made_through_openstack(cloud: CloudRunner, token: str, a: Project) -> dict[str, str]:
    """An image uploaded with the Image API and a volume attached with the Compute API:
    EC2 first meets them in A's DescribeImages and DescribeInstances."""
    ports = cloud.config.ports

    def api(port: int, prefix: str = "") -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{port}{prefix}", headers={"X-Auth-Token": token}, timeout=60
        )

    name = f"a-upload-{a.project_id[:6]}"
    with api(ports.image) as image_api:
        body = {"name": name, "disk_format": "raw", "container_format": "bare"}
        image = image_api.post("/v2/images", json=body).json()
        put = image_api.put(
            f"/v2/images/{image['id']}/file",
            content=b"\0" * 65536,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert put.status_code == 204, put.text
    with api(ports.block_storage, f"/v3/{a.project_id}") as volume_api:
        volume = volume_api.post("/volumes", json={"volume": {"size": 1}}).json()["volume"]
        for _ in range(300):
            if volume_api.get(f"/volumes/{volume['id']}").json()["volume"]["status"] != "creating":
                break
            time.sleep(0.1)
    with api(ports.compute, "/v2.1") as compute:
        server = compute.get("/servers", params={"name": a.ids["instance"]}).json()["servers"][0]
        attach = compute.post(
            f"/servers/{server['id']}/os-volume_attachments",
            json={"volumeAttachment": {"volumeId": volume["id"]}},
        )
        assert attach.status_code == 200, attach.text
    ami = find_image(a.ec2, name)["ImageId"]
    for _ in range(300):
        instance = a.ec2.describe_instances(InstanceIds=[a.ids["instance"]])
        disks = instance["Reservations"][0]["Instances"][0]["BlockDeviceMappings"]
        attached = {d["Ebs"]["VolumeId"] for d in disks} - {a.ids["attached_volume"]}
        if attached:
            return {"uploaded_ami": ami, "os_volume": attached.pop()}
        time.sleep(0.1)
    raise AssertionError(f"the volume attached through Compute never shows: {disks}")


@pytest.fixture(scope="module")
def projects(cloud: CloudRunner, admin_token: str, machine_image) -> tuple[Project, Project]:  # noqa: F811
    """A: one of each resource (its address on its instance, an interface, a private
    AMI and one shared with B, every resource tagged); B: a tenant of its own to name in
    its requests."""
    endpoint = f"http://127.0.0.1:{cloud.config.ports.ec2}"
    suffix = uuid.uuid4().hex[:6]
    a_id, a_token, a_keys = member_with_ec2_keys(cloud, admin_token, f"ec2-iso-a-{suffix}")
    b_id, _, b_keys = member_with_ec2_keys(cloud, admin_token, f"ec2-iso-b-{suffix}")
    a_ec2, b_ec2 = client(endpoint, a_keys), client(endpoint, b_keys)
    public_ami = find_image(a_ec2, "ec2-machine")["ImageId"]
    a = Project(a_ec2, a_id, build_tenant(a_ec2, "10.81", public_ami))
    b = Project(b_ec2, b_id, build_tenant(b_ec2, "10.82", public_ami))
    a.ids["association"] = a_ec2.associate_address(
        AllocationId=a.ids["allocation"], InstanceId=a.ids["instance"]
    )["AssociationId"]
    a.ids["eni"] = a_ec2.create_network_interface(SubnetId=a.ids["subnet"])["NetworkInterface"][
        "NetworkInterfaceId"
    ]
    for name in ("ami", "shared_ami"):
        copy = a_ec2.copy_image(SourceImageId=public_ami, SourceRegion="RegionOne", Name=name)
        a.ids[name] = copy["ImageId"]
    a_ec2.get_waiter("image_available").wait(
        ImageIds=[a.ids["ami"], a.ids["shared_ami"]], WaiterConfig=WAIT
    )
    a_ec2.modify_image_attribute(
        ImageId=a.ids["shared_ami"], LaunchPermission={"Add": [{"UserId": b_id}]}
    )
    a.ids.update(made_through_openstack(cloud, a_token, a))
    b.ids["spare_igw"] = b_ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    a_ec2.create_tags(Resources=sorted(tagged(a)), Tags=[{"Key": "owner", "Value": "a"}])
    b.ids["public_ami"] = a.ids["public_ami"] = public_ami
    a.view = owner_view(a)
    yield a, b
    a_ec2.disassociate_address(AssociationId=a.ids["association"])
    for project in (a, b):
        project.ec2.release_address(AllocationId=project.ids["allocation"])
        project.ec2.terminate_instances(InstanceIds=[project.ids["instance"]])


def tagged(project: Project) -> set[str]:
    """The ids of the project's own taggable resources."""
    names = ("ami", "shared_ami", "uploaded_ami", "instance", "volume", "attached_volume",
             "os_volume", "snapshot", "group", "allocation", "vpc", "subnet", "igw", "rtb", "eni",
             "key")  # fmt: skip
    return {project.ids[n] for n in names if n in project.ids}


def _canonical(value: Any) -> Any:
    """A describe answer in an order of its own (lists sorted), without the metadata."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, default=str))
    return value


def owner_view(project: Project) -> dict[str, Any]:
    """Everything the project sees of its own resources through EC2."""
    ec2 = project.ec2
    shared = project.ids.get("shared_ami")
    return _canonical(
        {
            "instances": ec2.describe_instances(),
            "images": ec2.describe_images(Owners=["self"]),
            "launch": shared
            and ec2.describe_image_attribute(ImageId=shared, Attribute="launchPermission"),
            "keys": ec2.describe_key_pairs(),
            "groups": ec2.describe_security_groups(),
            "volumes": ec2.describe_volumes(),
            "snapshots": ec2.describe_snapshots(OwnerIds=["self"]),
            "addresses": ec2.describe_addresses(),
            "vpcs": ec2.describe_vpcs(),
            "subnets": ec2.describe_subnets(),
            "gateways": ec2.describe_internet_gateways(),
            "tables": ec2.describe_route_tables(),
            "interfaces": ec2.describe_network_interfaces(),
            "tags": ec2.describe_tags(),
        }
    )


# -- calls: `$name` is A's id of that name, `%name` B's own --------------------------


def _fill(value: Any, a: Project, b: Project) -> Any:
    if isinstance(value, str) and value[:1] in "$%" and len(value) > 1:
        return (a if value[0] == "$" else b).ids[value[1:]]
    if isinstance(value, dict):
        return {k: _fill(v, a, b) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, a, b) for v in value]
    return value


def call(project: Project, action: str, params: dict[str, Any]) -> dict[str, Any]:
    return getattr(project.ec2, xform_name(action))(**params)


RUN = {"ImageId": "%public_ami", "InstanceType": "m1.tiny", "MinCount": 1, "MaxCount": 1,
       "SubnetId": "%subnet"}  # fmt: skip

# B reading A's resources by id.
READS = [
    ("DescribeInstances", {"InstanceIds": ["$instance"]}, "InvalidInstanceID.NotFound"),
    ("DescribeInstanceStatus", {"InstanceIds": ["$instance"]}, "InvalidInstanceID.NotFound"),
    ("DescribeInstanceAttribute", {"InstanceId": "$instance", "Attribute": "userData"},
     "InvalidInstanceID.NotFound"),
    ("GetConsoleOutput", {"InstanceId": "$instance"}, "InvalidInstanceID.NotFound"),
    ("GetPasswordData", {"InstanceId": "$instance"}, "InvalidInstanceID.NotFound"),
    ("DescribeImages", {"ImageIds": ["$ami"]}, "InvalidAMIID.NotFound"),
    ("DescribeImages", {"ImageIds": ["$uploaded_ami"]}, "InvalidAMIID.NotFound"),
    ("DescribeVolumes", {"VolumeIds": ["$os_volume"]}, "InvalidVolume.NotFound"),
    ("DescribeImageAttribute", {"ImageId": "$ami", "Attribute": "launchPermission"},
     "InvalidAMIID.NotFound"),
    ("DescribeKeyPairs", {"KeyNames": ["$key_name"]}, "InvalidKeyPair.NotFound"),
    ("DescribeKeyPairs", {"KeyPairIds": ["$key"]}, "InvalidKeyPair.NotFound"),
    ("DescribeSecurityGroups", {"GroupIds": ["$group"]}, "InvalidGroup.NotFound"),
    ("DescribeSecurityGroups", {"GroupNames": ["$group_name"]}, "InvalidGroup.NotFound"),
    ("DescribeVolumes", {"VolumeIds": ["$volume"]}, "InvalidVolume.NotFound"),
    ("DescribeVolumeStatus", {"VolumeIds": ["$attached_volume"]}, "InvalidVolume.NotFound"),
    ("DescribeSnapshots", {"SnapshotIds": ["$snapshot"]}, "InvalidSnapshot.NotFound"),
    ("DescribeAddresses", {"AllocationIds": ["$allocation"]}, "InvalidAllocationID.NotFound"),
    ("DescribeAddresses", {"PublicIps": ["$public_ip"]}, "InvalidAddress.NotFound"),
    ("DescribeVpcs", {"VpcIds": ["$vpc"]}, "InvalidVpcID.NotFound"),
    ("DescribeSubnets", {"SubnetIds": ["$subnet"]}, "InvalidSubnetID.NotFound"),
    ("DescribeInternetGateways", {"InternetGatewayIds": ["$igw"]},
     "InvalidInternetGatewayID.NotFound"),
    ("DescribeRouteTables", {"RouteTableIds": ["$rtb"]}, "InvalidRouteTableID.NotFound"),
    ("DescribeNetworkInterfaces", {"NetworkInterfaceIds": ["$eni"]},
     "InvalidNetworkInterfaceID.NotFound"),
]  # fmt: skip

# B changing or deleting A's resources.
WRITES = [
    ("StopInstances", {"InstanceIds": ["$instance"]}, "InvalidInstanceID.NotFound"),
    ("StartInstances", {"InstanceIds": ["$instance"]}, "InvalidInstanceID.NotFound"),
    ("RebootInstances", {"InstanceIds": ["$instance"]}, "InvalidInstanceID.NotFound"),
    ("TerminateInstances", {"InstanceIds": ["$instance"]}, "InvalidInstanceID.NotFound"),
    ("TerminateInstances", {"InstanceIds": ["%instance", "$instance"]},
     "InvalidInstanceID.NotFound"),
    ("ModifyInstanceAttribute", {"InstanceId": "$instance",
                                 "DisableApiTermination": {"Value": True}},
     "InvalidInstanceID.NotFound"),
    ("CreateImage", {"InstanceId": "$instance", "Name": "b-steals"}, "InvalidInstanceID.NotFound"),
    ("DeregisterImage", {"ImageId": "$ami"}, "InvalidAMIID.NotFound"),
    ("ModifyImageAttribute", {"ImageId": "$ami", "LaunchPermission": {"Add": [{"Group": "all"}]}},
     "InvalidAMIID.NotFound"),
    ("ResetImageAttribute", {"ImageId": "$ami", "Attribute": "launchPermission"},
     "InvalidAMIID.NotFound"),
    # An AMI shared with B: B may see and launch it, not change it.
    ("DeregisterImage", {"ImageId": "$shared_ami"}, "AuthFailure"),
    ("ModifyImageAttribute", {"ImageId": "$shared_ami",
                              "LaunchPermission": {"Add": [{"Group": "all"}]}}, "AuthFailure"),
    ("ModifyImageAttribute", {"ImageId": "$shared_ami", "Description": {"Value": "B's"}},
     "AuthFailure"),
    ("ResetImageAttribute", {"ImageId": "$shared_ami", "Attribute": "launchPermission"},
     "AuthFailure"),
    ("DeleteKeyPair", {"KeyPairId": "$key"}, "InvalidKeyPair.NotFound"),
    ("DeleteKeyPair", {"KeyName": "$key_name"}, None),  # EC2: a key pair B lacks, quietly
    ("DeleteSecurityGroup", {"GroupId": "$group"}, "InvalidGroup.NotFound"),
    ("DeleteSecurityGroup", {"GroupName": "$group_name"}, "InvalidGroup.NotFound"),
    ("AuthorizeSecurityGroupIngress", {"GroupId": "$group", "IpPermissions": INGRESS},
     "InvalidGroup.NotFound"),
    ("AuthorizeSecurityGroupIngress", {"GroupName": "$group_name", "IpPermissions": INGRESS},
     "InvalidGroup.NotFound"),
    ("AuthorizeSecurityGroupEgress", {"GroupId": "$group", "IpPermissions": INGRESS},
     "InvalidGroup.NotFound"),
    ("RevokeSecurityGroupIngress", {"GroupId": "$group", "IpPermissions": INGRESS},
     "InvalidGroup.NotFound"),
    ("RevokeSecurityGroupIngress", {"GroupName": "$group_name", "IpPermissions": INGRESS},
     "InvalidGroup.NotFound"),
    ("RevokeSecurityGroupEgress", {"GroupId": "$group", "IpPermissions": INGRESS},
     "InvalidGroup.NotFound"),
    ("DeleteVolume", {"VolumeId": "$volume"}, "InvalidVolume.NotFound"),
    ("DetachVolume", {"VolumeId": "$attached_volume"}, "InvalidVolume.NotFound"),
    ("CreateSnapshot", {"VolumeId": "$volume"}, "InvalidVolume.NotFound"),
    ("DeleteSnapshot", {"SnapshotId": "$snapshot"}, "InvalidSnapshot.NotFound"),
    ("DisassociateAddress", {"AssociationId": "$association"}, "InvalidAssociationID.NotFound"),
    ("DisassociateAddress", {"PublicIp": "$public_ip"}, "InvalidAddress.NotFound"),
    ("ReleaseAddress", {"AllocationId": "$allocation"}, "InvalidAllocationID.NotFound"),
    ("ReleaseAddress", {"PublicIp": "$public_ip"}, "InvalidAddress.NotFound"),
    ("DeleteVpc", {"VpcId": "$vpc"}, "InvalidVpcID.NotFound"),
    ("CreateSubnet", {"VpcId": "$vpc", "CidrBlock": "10.81.9.0/24"}, "InvalidVpcID.NotFound"),
    ("DeleteSubnet", {"SubnetId": "$subnet"}, "InvalidSubnetID.NotFound"),
    ("DetachInternetGateway", {"InternetGatewayId": "$igw", "VpcId": "$vpc"},
     "InvalidInternetGatewayID.NotFound"),
    ("DeleteInternetGateway", {"InternetGatewayId": "$igw"}, "InvalidInternetGatewayID.NotFound"),
    ("DeleteNetworkInterface", {"NetworkInterfaceId": "$eni"},
     "InvalidNetworkInterfaceID.NotFound"),
]  # fmt: skip

# B naming A's resources in requests on its own.
USES = [
    ("RunInstances", {**RUN, "ImageId": "$ami"}, "InvalidAMIID.NotFound"),
    ("RunInstances", {**RUN, "SubnetId": "$subnet"}, "InvalidSubnetID.NotFound"),
    ("RunInstances", {**RUN, "SubnetId": None,
                      "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": "$subnet"}]},
     "InvalidSubnetID.NotFound"),
    ("RunInstances", {**RUN, "SecurityGroupIds": ["$group"]}, "InvalidGroup.NotFound"),
    ("RunInstances", {**RUN, "SecurityGroups": ["$group_name"]}, "InvalidGroup.NotFound"),
    ("RunInstances", {**RUN, "KeyName": "$key_name"}, "InvalidKeyPair.NotFound"),
    ("RunInstances", {**RUN, "BlockDeviceMappings": [
        {"DeviceName": "/dev/vdb", "Ebs": {"SnapshotId": "$snapshot"}}]},
     "InvalidSnapshot.NotFound"),
    ("ModifyInstanceAttribute", {"InstanceId": "%instance", "Groups": ["$group"]},
     "InvalidGroup.NotFound"),
    ("AuthorizeSecurityGroupIngress", {"GroupId": "%group", "IpPermissions": [
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
         "UserIdGroupPairs": [{"GroupId": "$group"}]}]}, "InvalidGroup.NotFound"),
    ("CreateSecurityGroup", {"GroupName": "b-in-a", "Description": "x", "VpcId": "$vpc"},
     "InvalidVpcID.NotFound"),
    ("AttachVolume", {"VolumeId": "$volume", "InstanceId": "%instance", "Device": "/dev/vdc"},
     "InvalidVolume.NotFound"),
    ("AttachVolume", {"VolumeId": "%volume", "InstanceId": "$instance", "Device": "/dev/vdc"},
     "InvalidInstanceID.NotFound"),
    ("DetachVolume", {"VolumeId": "%attached_volume", "InstanceId": "$instance"},
     "InvalidInstanceID.NotFound"),
    ("CreateVolume", {"SnapshotId": "$snapshot", "AvailabilityZone": "nova"},
     "InvalidSnapshot.NotFound"),
    ("CopyImage", {"SourceImageId": "$ami", "SourceRegion": "RegionOne", "Name": "b-copy"},
     "InvalidAMIID.NotFound"),
    ("RegisterImage", {"Name": "b-from-a", "RootDeviceName": "/dev/vda", "BlockDeviceMappings": [
        {"DeviceName": "/dev/vda", "Ebs": {"SnapshotId": "$snapshot"}}]},
     "InvalidSnapshot.NotFound"),
    ("RegisterImage", {"Name": "b-kernel", "KernelId": "$ami", "RootDeviceName": "/dev/vda",
                       "BlockDeviceMappings": [
                           {"DeviceName": "/dev/vda", "Ebs": {"SnapshotId": "%snapshot"}}]},
     "InvalidAMIID.Malformed"),  # an ami- where an aki- goes: refused before it is looked up
    ("AssociateAddress", {"AllocationId": "$allocation", "InstanceId": "%instance"},
     "InvalidAllocationID.NotFound"),
    ("AssociateAddress", {"PublicIp": "$public_ip", "InstanceId": "%instance"},
     "InvalidAddress.NotFound"),
    ("AssociateAddress", {"AllocationId": "%allocation", "InstanceId": "$instance"},
     "InvalidInstanceID.NotFound"),
    ("AssociateAddress", {"AllocationId": "%allocation", "NetworkInterfaceId": "$eni"},
     "InvalidNetworkInterfaceID.NotFound"),
    ("AttachInternetGateway", {"InternetGatewayId": "%spare_igw", "VpcId": "$vpc"},
     "InvalidVpcID.NotFound"),
    ("AttachInternetGateway", {"InternetGatewayId": "$igw", "VpcId": "%vpc"},
     "InvalidInternetGatewayID.NotFound"),
    ("CreateNetworkInterface", {"SubnetId": "$subnet"}, "InvalidSubnetID.NotFound"),
    ("CreateNetworkInterface", {"SubnetId": "%subnet", "Groups": ["$group"]},
     "InvalidGroup.NotFound"),
]  # fmt: skip

TAG_CODES = {"i": "InvalidInstanceID", "ami": "InvalidAMIID", "vol": "InvalidVolume",
             "snap": "InvalidSnapshot", "sg": "InvalidGroup", "eipalloc": "InvalidAllocationID",
             "vpc": "InvalidVpcID", "subnet": "InvalidSubnetID", "igw": "InvalidInternetGatewayID",
             "rtb": "InvalidRouteTableID", "eni": "InvalidNetworkInterfaceID",
             "key": "InvalidKeyPair"}  # fmt: skip


def _refused(b: Project, a: Project, calls: list) -> list[str]:
    """The calls that were not refused with their code (or, for None, that failed)."""
    wrong = []
    for action, params, code in calls:
        filled = {k: v for k, v in _fill(params, a, b).items() if v is not None}
        try:
            answer = call(b, action, filled)
        except ClientError as exc:
            got = exc.response["Error"]["Code"]
            status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
            if got != code or status >= 500:
                wrong.append(f"{action} {filled}: {got} ({status}), not {code}")
            continue
        if code is not None:
            wrong.append(f"{action} {filled}: answered {answer}, not {code}")
    return wrong


def test_b_cannot_read_a_s_resources_by_id(projects):
    a, b = projects
    wrong = _refused(b, a, READS)
    assert not wrong, "\n".join(wrong)


def test_b_cannot_change_or_delete_a_s_resources(projects):
    a, b = projects
    wrong = _refused(b, a, WRITES)
    assert not wrong, "\n".join(wrong)


def test_b_cannot_use_a_s_resources_in_its_own_requests(projects):
    a, b = projects
    before = owner_view(b)
    wrong = _refused(b, a, USES)
    assert not wrong, "\n".join(wrong)
    # Nothing B tried left anything behind in B's project either.
    assert owner_view(b) == before


def test_b_cannot_tag_a_s_resources(projects):
    a, b = projects
    calls = []
    for rid in sorted(tagged(a) - {a.ids["shared_ami"]}):
        code = TAG_CODES[rid.rsplit("-", 1)[0]] + ".NotFound"
        calls.append(
            ("CreateTags", {"Resources": [rid], "Tags": [{"Key": "b", "Value": "x"}]}, code)
        )
        calls.append(("CreateTags", {"Resources": ["%instance", rid],
                                     "Tags": [{"Key": "b", "Value": "x"}]}, code))  # fmt: skip
        calls.append(("DeleteTags", {"Resources": [rid], "Tags": [{"Key": "owner"}]}, code))
    wrong = _refused(b, a, calls)
    assert not wrong, "\n".join(wrong)
    shown = b.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": sorted(tagged(a))}])[
        "Tags"
    ]
    assert shown == []
    # B's instance did not get the tag of the refused call either (all or nothing).
    mine = b.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [b.ids["instance"]]}])
    assert mine["Tags"] == []
    # The AMI A shared with B: B tags it for itself, as EC2 allows; A never sees B's tags,
    # and B's DeleteTags removes only B's own.
    shared = a.ids["shared_ami"]
    b.ec2.create_tags(Resources=[shared], Tags=[{"Key": "b", "Value": "mine"}])
    b.ec2.delete_tags(Resources=[shared], Tags=[{"Key": "owner"}])
    seen = b.ec2.describe_images(ImageIds=[shared])["Images"][0]["Tags"]
    assert seen == [{"Key": "b", "Value": "mine"}]
    assert a.ec2.describe_images(ImageIds=[shared])["Images"][0]["Tags"] == [
        {"Key": "owner", "Value": "a"}
    ]
    b.ec2.delete_tags(Resources=[shared])


# -- listings: every Describe, unfiltered and given A's ids in its filters -------------


def listings(a: Project) -> list[tuple[str, dict[str, Any]]]:
    ids, owner = a.ids, a.project_id

    def by(name: str, *values: str) -> dict[str, Any]:
        return {"Filters": [{"Name": name, "Values": list(values)}]}

    return [
        ("DescribeInstances", {}),
        ("DescribeInstances", by("instance-id", ids["instance"])),
        ("DescribeInstances", by("owner-id", owner)),
        ("DescribeInstances", by("subnet-id", ids["subnet"])),
        ("DescribeInstances", by("vpc-id", ids["vpc"])),
        ("DescribeInstances", by("group-id", ids["group"])),
        ("DescribeInstances", by("key-name", ids["key_name"])),
        ("DescribeInstances", {"Filters": [{"Name": "tag:owner", "Values": ["a"]}]}),
        ("DescribeInstances", {"Filters": [{"Name": "tag-key", "Values": ["owner"]}]}),
        ("DescribeInstances", by("instance-state-name", "pending", "running", "stopped")),
        ("DescribeInstanceStatus", {"IncludeAllInstances": True}),
        ("DescribeInstanceStatus", by("instance-state-name", "running")),
        ("DescribeImages", {}),
        ("DescribeImages", {"Owners": [owner]}),
        ("DescribeImages", {"Owners": ["self"]}),
        ("DescribeImages", {"ExecutableUsers": [owner]}),
        ("DescribeImages", {"ExecutableUsers": ["self"]}),
        ("DescribeImages", {"ExecutableUsers": ["all"]}),
        ("DescribeImages", by("owner-id", owner)),
        ("DescribeImages", by("image-id", ids["ami"])),
        ("DescribeImages", by("is-public", "false")),
        ("DescribeKeyPairs", {}),
        ("DescribeKeyPairs", by("key-name", ids["key_name"])),
        ("DescribeKeyPairs", by("key-pair-id", ids["key"])),
        ("DescribeSecurityGroups", {}),
        ("DescribeSecurityGroups", by("group-id", ids["group"])),
        ("DescribeSecurityGroups", by("owner-id", owner)),
        ("DescribeVolumes", {}),
        ("DescribeVolumes", by("volume-id", ids["volume"], ids["attached_volume"])),
        ("DescribeVolumes", by("attachment.instance-id", ids["instance"])),
        ("DescribeVolumes", by("snapshot-id", ids["snapshot"])),
        ("DescribeVolumeStatus", {}),
        ("DescribeSnapshots", {}),
        ("DescribeSnapshots", {"OwnerIds": [owner]}),
        ("DescribeSnapshots", {"RestorableByUserIds": [owner]}),
        ("DescribeSnapshots", by("owner-id", owner)),
        ("DescribeSnapshots", by("volume-id", ids["volume"])),
        ("DescribeSnapshots", by("snapshot-id", ids["snapshot"])),
        ("DescribeAddresses", {}),
        ("DescribeAddresses", by("allocation-id", ids["allocation"])),
        ("DescribeAddresses", by("public-ip", ids["public_ip"])),
        ("DescribeAddresses", by("instance-id", ids["instance"])),
        ("DescribeVpcs", {}),
        ("DescribeVpcs", by("vpc-id", ids["vpc"])),
        ("DescribeVpcs", by("owner-id", owner)),
        ("DescribeSubnets", {}),
        ("DescribeSubnets", by("vpc-id", ids["vpc"])),
        ("DescribeSubnets", by("subnet-id", ids["subnet"])),
        ("DescribeInternetGateways", {}),
        ("DescribeInternetGateways", by("attachment.vpc-id", ids["vpc"])),
        ("DescribeInternetGateways", by("owner-id", owner)),
        ("DescribeRouteTables", {}),
        ("DescribeRouteTables", by("vpc-id", ids["vpc"])),
        ("DescribeRouteTables", by("route-table-id", ids["rtb"])),
        ("DescribeNetworkInterfaces", {}),
        ("DescribeNetworkInterfaces", by("subnet-id", ids["subnet"])),
        ("DescribeNetworkInterfaces", by("attachment.instance-id", ids["instance"])),
        ("DescribeNetworkInterfaces", by("network-interface-id", ids["eni"])),
        ("DescribeTags", {}),
        ("DescribeTags", by("resource-id", *sorted(tagged(a)))),
        ("DescribeTags", by("key", "owner")),
        ("DescribeImportImageTasks", {}),
    ]


def _names(answer, value):
    """Whether the answer names the value as a whole word: B's 172.24.4.32 does not
    name A's 172.24.4.3."""
    return re.search(rf"(?<![\w.-]){re.escape(value)}(?![\w-]|\.\w)", answer) is not None


def test_b_s_listings_and_filters_never_show_a_s_resources(projects):
    a, b = projects
    secret = (tagged(a) - {a.ids["shared_ami"]}) | {
        a.ids["public_ip"],
        a.ids["key_name"],
        a.ids["association"],
        a.ids["group_name"],
    }
    for action, params in listings(a):
        answer = json.dumps(call(b, action, params), default=str)
        leaked = {s for s in secret if _names(answer, s)}
        assert not leaked, f"{action} {params} shows A's {leaked}"
        if action != "DescribeImages":  # the AMI shared with B names A as its owner
            assert a.project_id not in answer, f"{action} {params} names A's project"
    # What A shared with B is what B sees of A.
    shared = call(b, "DescribeImages", {"Owners": [a.project_id]})["Images"]
    assert [i["ImageId"] for i in shared] == [a.ids["shared_ami"]]
    assert b.ec2.describe_images(ImageIds=[a.ids["shared_ami"]])["Images"][0]["OwnerId"] == (
        a.project_id
    )


def test_executable_users_of_another_project_lists_what_it_may_launch(projects):
    a, b = projects
    shared = a.ids["shared_ami"]

    def launchable(project: Project, *users: str) -> set[str]:
        images = project.ec2.describe_images(ExecutableUsers=list(users))["Images"]
        return {i["ImageId"] for i in images}

    public = launchable(a, "all")
    assert a.ids["public_ami"] in public and public == launchable(b, "all")
    # What B may launch, asked by A: the public images and what A shared with B.
    assert launchable(a, b.project_id) == public | {shared}
    # What A may launch, asked by B: of what B sees, the public images and A's own
    # (the one A shared with B); A's private images stay unseen.
    assert launchable(b, a.project_id) == public | {shared}
    assert launchable(b, b.project_id) == launchable(b, "self") == public | {shared}
    assert launchable(a, a.project_id) >= public | {shared, a.ids["ami"], a.ids["uploaded_ami"]}
    # A project no image is shared with: the public images; several users: any of them.
    assert launchable(a, uuid.uuid4().hex) == public
    assert launchable(a, uuid.uuid4().hex, b.project_id) == public | {shared}
    # Filters and ImageIds narrow it as they do the rest.
    assert launchable(a, b.project_id, "all") == public | {shared}
    named = a.ec2.describe_images(ImageIds=[shared, a.ids["ami"]], ExecutableUsers=[b.project_id])
    assert [i["ImageId"] for i in named["Images"]] == [shared]


# -- every action that takes an id is in one of the lists above -----------------------

ID_MEMBERS = {
    "InstanceId", "InstanceIds", "ImageId", "ImageIds", "SourceImageId", "KernelId", "RamdiskId",
    "VolumeId", "VolumeIds", "SnapshotId", "SnapshotIds", "GroupId", "GroupIds", "GroupName",
    "GroupNames", "SecurityGroupIds", "SecurityGroups", "Groups", "AllocationId", "AllocationIds",
    "AssociationId", "PublicIp", "PublicIps", "VpcId", "VpcIds", "SubnetId", "SubnetIds",
    "InternetGatewayId", "InternetGatewayIds", "NetworkInterfaceId", "NetworkInterfaceIds",
    "RouteTableIds", "KeyName", "KeyNames", "KeyPairId", "KeyPairIds", "Resources", "Owners",
    "OwnerIds", "ExecutableUsers", "RestorableByUserIds", "ImportTaskIds", "BlockDeviceMappings",
    "NetworkInterfaces", "IpPermissions", "Filters",
}  # fmt: skip
# (action, member) pairs that name nothing of another project's.
NOT_FOREIGN = {
    ("CreateKeyPair", "KeyName"): "B's own new key pair: names are per user",
    ("ImportKeyPair", "KeyName"): "B's own new key pair: names are per user",
    ("CreateSecurityGroup", "GroupName"): "B's own new group: names are per project",
    ("AllocateAddress", "Address"): "not an id",
    ("RunInstances", "RamdiskId"): "A has no ramdisk of its own (checked as KernelId is)",
    ("RunInstances", "KernelId"): "A has no kernel of its own (RegisterImage: an ami- refused)",
    ("RegisterImage", "RamdiskId"): "A has no ramdisk of its own (checked as KernelId is)",
    ("DescribeImportImageTasks", "ImportTaskIds"): "A has no import task (tasks are per "
    "project in EC2's own table)",
    ("DescribeImportImageTasks", "Filters"): "task-state only",
    ("DescribeRegions", "Filters"): "no resource",
    ("DescribeAvailabilityZones", "Filters"): "no resource",
    ("CreateImage", "BlockDeviceMappings"): "not read: the image is the instance's disk",
    ("RevokeSecurityGroupIngress", "IpPermissions"): "group pairs: as Authorize's",
    ("RevokeSecurityGroupEgress", "IpPermissions"): "group pairs: as Authorize's",
    ("AuthorizeSecurityGroupEgress", "IpPermissions"): "group pairs: as Ingress's",
    ("ModifyInstanceAttribute", "BlockDeviceMappings"): "not read",
    ("DescribeVolumeStatus", "Filters"): "no id filter",
}  # fmt: skip


def _named(calls) -> set[tuple[str, str]]:
    out = set()
    for action, params, *_ in calls:
        for member in params:
            out.add((action, "Filters" if member == "Filters" else member))
    return out


def test_every_action_given_a_s_ids_is_tried(projects):
    a, _ = projects
    tried = _named(READS + WRITES + USES + listings(a))
    tried |= {("CreateTags", "Resources"), ("DeleteTags", "Resources")}
    tried |= {("RunInstances", "ImageId"), ("RegisterImage", "KernelId")}
    missing = []
    for action in sorted(load()):
        shape = operation(action).input_shape
        for member in shape.members if shape else {}:
            pair = (action, member)
            if member in ID_MEMBERS and pair not in tried and pair not in NOT_FOREIGN:
                missing.append(pair)
    assert not missing, f"actions given no id of A's: {missing}"


def test_a_s_resources_are_intact_and_still_its_own(projects):
    a, b = projects
    assert owner_view(a) == a.view
    ids = a.ids
    instance = a.ec2.describe_instances(InstanceIds=[ids["instance"]])["Reservations"][0][
        "Instances"
    ][0]
    assert instance["State"]["Name"] == "running" and instance["KeyName"] == ids["key_name"]
    assert instance["PublicIpAddress"] == ids["public_ip"]
    assert a.ec2.describe_key_pairs(KeyNames=[ids["key_name"]])["KeyPairs"]
    volume = a.ec2.describe_volumes(VolumeIds=[ids["attached_volume"]])["Volumes"][0]
    assert volume["Attachments"][0]["InstanceId"] == ids["instance"]
    tags = a.ec2.describe_tags(Filters=[{"Name": "key", "Values": ["owner"]}])["Tags"]
    assert {t["ResourceId"] for t in tags} == tagged(a)
    assert not a.ec2.describe_tags(Filters=[{"Name": "key", "Values": ["b"]}])["Tags"]
    image = a.ec2.describe_images(ImageIds=[ids["shared_ami"]])["Images"][0]
    assert image["Public"] is False and image.get("Description") in (None, "")
    # B can still launch what A shared with it (the refusals above changed nothing).
    assert b.ec2.describe_images(ImageIds=[ids["shared_ami"]])["Images"]
