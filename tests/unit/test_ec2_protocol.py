"""The EC2 Query protocol against botocore itself: what botocore's serializer sends is
parsed back into the same kwargs, and what we render is what botocore's parser reads."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest
from botocore import parsers, serialize

from cumulo.ec2 import filters, protocol
from cumulo.ec2.errors import Ec2Error


def _sent(operation: str, kwargs: dict) -> dict[str, str]:
    op = protocol.operation(operation)
    request = serialize.create_serializer("ec2").serialize_to_request(kwargs, op)
    return dict(
        parse_qsl(request["body"], keep_blank_values=True)
        if isinstance(request["body"], str)
        else request["body"].items()
    )


@pytest.mark.parametrize(
    ("operation", "kwargs"),
    [
        (
            "RunInstances",
            {
                "ImageId": "ami-1",
                "MinCount": 1,
                "MaxCount": 3,
                "InstanceType": "m1.tiny",
                "SecurityGroupIds": ["sg-1", "sg-2"],
                "UserData": "aGVsbG8=",
                "BlockDeviceMappings": [
                    {
                        "DeviceName": "/dev/vdb",
                        "Ebs": {"VolumeSize": 2, "DeleteOnTermination": False},
                    }
                ],
                "TagSpecifications": [
                    {"ResourceType": "instance", "Tags": [{"Key": "a", "Value": "b"}]}
                ],
                "Placement": {"AvailabilityZone": "nova"},
                "ClientToken": "t",
                "PrivateIpAddress": "10.0.0.5",
            },
        ),
        (
            "DescribeInstances",
            {"Filters": [{"Name": "tag:x", "Values": ["1", "2"]}], "MaxResults": 5},
        ),
        (
            "AuthorizeSecurityGroupIngress",
            {
                "GroupId": "sg-1",
                "IpPermissions": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 22,
                        "ToPort": 22,
                        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                        "UserIdGroupPairs": [{"GroupId": "sg-2"}],
                    }
                ],
            },
        ),
        ("CreateTags", {"Resources": ["i-1"], "Tags": [{"Key": "k", "Value": ""}]}),
        (
            "ModifyImageAttribute",
            {"ImageId": "ami-1", "LaunchPermission": {"Add": [{"UserId": "p"}]}},
        ),
    ],
)
def test_parse_is_the_inverse_of_botocores_serializer(operation, kwargs):
    fields = _sent(operation, kwargs)
    fields.pop("Action"), fields.pop("Version")
    assert protocol.parse(protocol.operation(operation), fields) == kwargs


def test_parse_refuses_wrong_types_and_missing_members():
    op = protocol.operation("RunInstances")
    with pytest.raises(Ec2Error) as exc:
        protocol.parse(op, {"ImageId": "ami-1", "MinCount": "one", "MaxCount": "1"})
    assert exc.value.code == "InvalidParameterValue"
    with pytest.raises(Ec2Error) as exc:
        protocol.parse(op, {"ImageId": "ami-1"})
    assert exc.value.code == "MissingParameter"


def test_rendered_documents_parse_back_with_botocore():
    op = protocol.operation("DescribeInstances")
    launched = datetime(2026, 12, 5, 6, 0, 1, 250000, tzinfo=UTC)
    data = {
        "Reservations": [
            {
                "ReservationId": "r-1",
                "OwnerId": "p",
                "Groups": [],
                "Instances": [
                    {
                        "InstanceId": "i-1",
                        "State": {"Code": 16, "Name": "running"},
                        "LaunchTime": launched,
                        "Tags": [{"Key": "k", "Value": "v"}],
                        "SecurityGroups": [{"GroupName": "d", "GroupId": "sg-1"}],
                        "EbsOptimized": False,
                    }
                ],
            }
        ]
    }
    body = protocol.render(op, data, "req-1")
    parsed = parsers.create_parser("ec2").parse(
        {"body": body, "headers": {}, "status_code": 200}, op.output_shape
    )
    assert parsed["Reservations"] == data["Reservations"]
    assert parsed["ResponseMetadata"]["RequestId"] == "req-1"


def test_error_document_is_what_botocore_reads():
    body = Ec2Error("InvalidInstanceID.NotFound", "gone").document("req-2")
    parsed = parsers.create_parser("ec2").parse(
        {"body": body, "headers": {}, "status_code": 400}, None
    )
    assert parsed["Error"] == {"Code": "InvalidInstanceID.NotFound", "Message": "gone"}
    assert parsed["ResponseMetadata"]["RequestId"] == "req-2"


def test_filters_wildcards_tags_and_unknown_names():
    wanted = filters.check(
        [
            {"Name": "instance-state-name", "Values": ["running", "stopp*"]},
            {"Name": "tag:env", "Values": ["pr?d"]},
        ],
        ["instance-state-name"],
    )
    assert filters.matches(wanted, {"instance-state-name": "stopped"}, {"env": "prod"})
    assert not filters.matches(wanted, {"instance-state-name": "pending"}, {"env": "prod"})
    assert not filters.matches(wanted, {"instance-state-name": "running"}, {"env": "production"})
    with pytest.raises(Ec2Error):
        filters.check([{"Name": "colour", "Values": ["x"]}], ["instance-state-name"])
    with pytest.raises(Ec2Error):
        filters.check([{"Name": "instance-state-name", "Values": []}], ["instance-state-name"])
