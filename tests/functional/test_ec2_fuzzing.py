"""The EC2 Query API fuzzed past its signature check: Hypothesis builds requests of the
actions cumulo implements (and unknown and unimplemented ones) from botocore's model of
each action's input, with random and semi-valid values — real ids of every kind and ids
of no one, `Filter.N.Name`/`Value.M` with the filters the resources know, counts from
negative to huge, CIDRs, base64 user data and not, block device mappings, tags, unknown
parameters, values that are huge, Unicode or control characters, values of the wrong
type — signed with SigV4 (or SigV2) by botocore's signers as boto3 signs them, as POST
forms and GET query strings over the real HTTP port, and some with their signature
mangled.

What every answer must be: never a 5xx (EC2 answers 5xx only for its own failures); a
success is an `<Action>Response` document botocore parses; an error is EC2's
`<Response><Errors><Error><Code>…<Message>…</Errors><RequestID>` with the request id of
the `x-openstack-request-id` header and the HTTP status AWS gives that code; a correctly
signed request is never refused for its signature, a mangled one never gets past it;
nothing hangs. CUMULO_FUZZ_EXAMPLES and CUMULO_FUZZ_SEED make a longer or another run; a
failure prints the request.
"""

from __future__ import annotations

import base64
import datetime
import os
import re
import string
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode
from xml.etree import ElementTree

import pytest
from botocore.auth import SigV2Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import Shape
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from cumulo.ec2 import protocol
from cumulo.ec2.api import addresses, images, instances, load, security_groups, volumes
from tests.functional.test_ec2 import (  # noqa: F401 - fixtures
    WAIT,
    client,
    cloud,
    demo_keys,
    endpoint,
    find_image,
    machine_image,
)
from tests.fuzzing import Answer, RawClient, fuzz

EXAMPLES = int(os.environ.get("CUMULO_FUZZ_EXAMPLES", "8")) * 60
SEED = int(os.environ.get("CUMULO_FUZZ_SEED", "20261205"))
REGION = "RegionOne"
# fmt: off
# The HTTP status AWS gives the codes that are not a plain 400 (client errors are 4xx,
# server errors 5xx: InternalError, Unavailable, RequestLimitExceeded...).
STATUS = {"AuthFailure": 401, "UnauthorizedOperation": 403, "Blocked": 403,
          "OptInRequired": 403, "PendingVerification": 403, "DryRunOperation": 412,
          "RequestLimitExceeded": 503}
# What is refused before the action is read (a path, a method, a URL over [limits]) keeps
# its HTTP status: 404, 405, 413, 414, 431.
BEFORE_THE_ACTION = "InvalidRequest"
SIGNATURE_REFUSALS = {"AuthFailure", "RequestExpired", "IncompleteSignature",
                      "MissingAuthenticationToken", "InvalidClientTokenId",
                      "SignatureDoesNotMatch"}
ERROR_CODE = r"[A-Z][A-Za-z0-9]*(\.[A-Z][A-Za-z0-9]*)*"
MANGLES = ("signature", "access-key", "garbage", "date", "anonymous", "body", "region", "query")
IMPLEMENTED = sorted(load())
UNIMPLEMENTED = ("CreateLaunchTemplate", "RequestSpotInstances", "CreateNatGateway",
                 "ModifyVolume", "ExportImage", "CreateRoute")
FILTER_NAMES = sorted({*instances.FILTERS, *images.FILTERS, *security_groups.FILTERS,
                       *addresses.FILTERS, *volumes.VOLUME_FILTERS, *volumes.SNAPSHOT_FILTERS,
                       "vpc-id", "subnet-id", "key-name", "resource-id", "resource-type", "key",
                       "value", "tag-key", "tag-value", "tag:Name", "tag:", "cidr", "task-state",
                       "route-table-id", "network-interface-id", "internet-gateway-id",
                       "zone-name", "region-name"})
# fmt: on


@dataclass
class Target:
    endpoint: str
    access: str
    secret: str
    ids: dict[str, list[str]] = field(default_factory=dict)  # real ids by kind, names too


@pytest.fixture(scope="module")
def target(cloud, endpoint, demo_keys, machine_image) -> Target:  # noqa: F811
    """The demo project with one of each resource (three instances, an AMI of its own
    beside a public one), whose ids the requests name; quotas that random launches and
    volumes do not use up at once."""
    quotas = {"instances": 100, "cores": 200, "ram": 204800, "volumes": 100, "snapshots": 100}
    cloud.openstack("quota", "set", *(f"--{k}={v}" for k, v in quotas.items()), "demo")
    ec2 = client(endpoint, demo_keys)
    ami = find_image(ec2, "ec2-machine")
    own = ec2.copy_image(SourceImageId=ami["ImageId"], SourceRegion=REGION, Name="fuzz-own")
    vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.99.1.0/24")["Subnet"]["SubnetId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    groups = [ec2.create_security_group(GroupName=f"fuzz-sg{n}", Description="fuzz")["GroupId"]
              for n in range(3)]  # fmt: skip
    keys = [ec2.create_key_pair(KeyName=f"fuzz-key{n}")["KeyPairId"] for n in range(3)]
    volume, spare = (ec2.create_volume(Size=1, AvailabilityZone="nova")["VolumeId"] for _ in "ab")
    run = ec2.run_instances(ImageId=ami["ImageId"], InstanceType="m1.tiny", MinCount=3,
                            MaxCount=3, SubnetId=subnet)  # fmt: skip
    instances = [i["InstanceId"] for i in run["Instances"]]
    ec2.get_waiter("volume_available").wait(VolumeIds=[volume, spare], WaiterConfig=WAIT)
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    address = ec2.allocate_address(Domain="vpc")
    eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    rtb = ec2.describe_route_tables()["RouteTables"][0]["RouteTableId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=instances, WaiterConfig=WAIT)
    ec2.get_waiter("image_available").wait(ImageIds=[own["ImageId"]], WaiterConfig=WAIT)
    ids = {
        "i": instances, "ami": [ami["ImageId"], own["ImageId"]], "aki": [ami["KernelId"]],
        "ari": [ami["RamdiskId"]], "vol": [volume, spare], "snap": [snapshot], "sg": groups,
        "eipalloc": [address["AllocationId"]], "vpc": [vpc], "subnet": [subnet], "igw": [igw],
        "rtb": [rtb], "eni": [eni], "key": keys, "key-name": [f"fuzz-key{n}" for n in range(3)],
        "group-name": ["fuzz-sg0", "fuzz-sg1", "default"],
        "ip": [address["PublicIp"], "10.99.1.50"], "self": ["self", "all", "amazon"],
    }  # fmt: skip
    return Target(endpoint, demo_keys["aws_access_key_id"], demo_keys["aws_secret_access_key"], ids)


# -- values ---------------------------------------------------------------------------

# fmt: off
printable = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
nasty = st.sampled_from(["", " ", "\x00", "a\x07b", "\u00e9\u4e2d\U0001f600", "<x>&amp;", "'\"",
                         "../servers", "..", "a/b?c#d", "%2F%2e", "x" * 5000, "\u00b2", "-1",
                         "9" * 40, "true", "null", "i-", "ami-zz", "sg-0123456789abcdef0"])
any_text = st.one_of(printable, nasty)
integers = st.one_of(st.integers(-3, 5), st.integers(-(2**70), 2**70),
                     st.sampled_from([0, 1, 5, 1000, 1001, 65535, 65536, 2**31, 10**9]))
cidrs = st.one_of(
    st.sampled_from(["0.0.0.0/0", "10.99.0.0/16", "10.99.2.0/24", "10.98.0.0/16", "::/0",
                     "10.0.0.0/33", "10.0.0.1/24", "300.1.1.1/8", "10.0.0.0/-1", "1.2.3.4",
                     "fe80::/64", "10.99.1.0/28", "10.99.1.0/29"]),
    st.builds(lambda a, b, n: f"10.{a}.{b}.0/{n}", st.integers(0, 300), st.integers(0, 255),
              st.integers(0, 40)),
)
user_data = st.one_of(
    st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
    printable,
    st.sampled_from(["not base64!", "aGk", "====", "#!/bin/sh\necho hi\n",
                     base64.b64encode(b"x" * 30000).decode()]),
)
# fmt: on


def _ids(target: Target, kinds: tuple[str, ...], wild: bool):
    real = st.sampled_from([i for k in kinds for i in target.ids.get(k, [])] or ["x"])
    if not wild:
        return real
    every = [i for values in target.ids.values() for i in values]
    made_up = st.builds(
        lambda k, h: f"{k}-{h}",
        st.sampled_from([*kinds, "i", "vol", "zz"]),
        st.text("0123456789abcdef", min_size=8, max_size=17),
    )
    return st.one_of(real, st.sampled_from(every), made_up, any_text)


# What a string member's name says it holds.
ID_KINDS = {
    "InstanceId": ("i",), "ImageId": ("ami",), "SourceImageId": ("ami",), "KernelId": ("aki",),
    "RamdiskId": ("ari",), "VolumeId": ("vol",), "SnapshotId": ("snap",), "GroupId": ("sg",),
    "AllocationId": ("eipalloc",), "AssociationId": ("eipassoc", "eipalloc"), "VpcId": ("vpc",),
    "SubnetId": ("subnet",), "InternetGatewayId": ("igw",), "RouteTableId": ("rtb",),
    "NetworkInterfaceId": ("eni",), "KeyPairId": ("key",), "KeyName": ("key-name",),
    "GroupName": ("group-name",), "SecurityGroupId": ("sg",),
    "SecurityGroup": ("group-name",), "PublicIp": ("ip",), "PrivateIpAddress": ("ip",),
    "Address": ("ip",), "Resource": ("i", "ami", "vol", "sg", "vpc", "subnet", "key"),
    "UserId": ("key",), "ImportTaskId": ("i",), "Owner": ("self",), "ExecutableUser": ("self",),
}  # fmt: skip
HINTS = {
    "UserData": user_data,
    "InstanceType": st.sampled_from(["m1.tiny", "m1.small", "t2.micro"]),
    "AvailabilityZone": st.sampled_from(["nova", "us-east-1a"]),
    "SourceRegion": st.sampled_from([REGION, "us-east-1"]),
    "IpProtocol": st.sampled_from(["tcp", "udp", "icmp", "-1", "6", "58", "300", "all"]),
    "Device": st.sampled_from(["/dev/vdb", "/dev/sdf", "xvdc", "vdz"]),
    "DeviceName": st.sampled_from(["/dev/vda", "/dev/vdb", "/dev/sdf"]),
    "NextToken": st.sampled_from(["5", "0", "1000"]),
    "Attribute": st.sampled_from(["instanceType", "userData", "launchPermission", "description",
                                  "groupSet", "kernel", "blockDeviceMapping"]),
    "Domain": st.just("vpc"),
}  # fmt: skip
PUBLIC_KEY = (
    Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
)
# Members most requests of an action carry (the others: now and then).
USUAL = {*ID_KINDS, *(f"{k}s" for k in ID_KINDS), *HINTS, "Size", "IpPermissions", "Tags",
         "Filters", "Resources", "CidrBlock", "Name", "Description", "PublicKeyMaterial",
         "LaunchPermission", "MinCount", "MaxCount", "SecurityGroupIds", "BlockDeviceMappings",
         "TagSpecifications", "DiskContainers", "ImageLocation", "RootDeviceName"}  # fmt: skip
plain = st.text(string.ascii_letters + string.digits + "-_ .", min_size=1, max_size=16)


def _string_for(target: Target, name: str, shape: Shape, wild: bool):
    """Semi-valid values for what the member's name says it holds; `wild`: anything too."""
    singular = name[:-1] if name.endswith("s") and name[:-1] in ID_KINDS else name
    if singular in ID_KINDS:
        return _ids(target, ID_KINDS[singular], wild)
    if "Cidr" in name:
        plausible = cidrs
    elif name in HINTS:
        plausible = HINTS[name]
    elif name == "Name" and shape.name == "String":  # Filter.N.Name among others
        plausible = st.sampled_from(FILTER_NAMES)
    elif name in ("Value", "Values"):  # Filter.N.Value.M, tags
        plausible = st.one_of(plain, _ids(target, tuple(target.ids), False))
    elif shape.enum:
        plausible = st.sampled_from(shape.enum)
    else:
        plausible = plain
    return st.one_of(plausible, any_text) if wild else plausible


def value_of(draw, target: Target, shape: Shape, name: str, wild: bool, depth: int = 0) -> Any:
    """A value of the shape: plausible for its member's name, or (`wild`) anything,
    the wrong type included."""
    kind = shape.type_name
    if kind == "structure":
        members = list(shape.members.items())
        chosen = [(n, m) for n, m in members if n in shape.required_members]
        if members and depth < 4:
            chosen += draw(st.lists(st.sampled_from(members), max_size=3))
        return {n: value_of(draw, target, m, n, wild, depth + 1) for n, m in dict(chosen).items()}
    if kind == "list":
        singular = shape.member.serialization.get("name") or name
        count = draw(st.integers(0, 3) if wild else st.integers(1, 2))
        return [
            value_of(draw, target, shape.member, singular, wild, depth + 1) for _ in range(count)
        ]
    if kind == "map":
        return {}
    if (
        wild
        and kind not in ("timestamp", "blob", "float", "double")
        and draw(st.integers(0, 20)) == 0
    ):
        return draw(any_text)  # the wrong type
    if kind in ("integer", "long"):
        return draw(integers if wild else st.just(1) if name == "MinCount" else st.integers(1, 3))
    if kind in ("float", "double"):
        return draw(st.floats(allow_nan=True) if wild else st.floats(0, 10))
    if kind == "boolean":
        return draw(st.booleans())
    if kind == "timestamp":
        return draw(st.datetimes(timezones=st.just(datetime.UTC)))
    if kind == "blob":
        return PUBLIC_KEY if name == "PublicKeyMaterial" and not wild else draw(st.binary())
    return draw(_string_for(target, name, shape, wild))


EXTRA_FIELDS = st.one_of(
    st.sampled_from(["Foo", "InstanceId.0", "InstanceId.99999999999999999999", "Filter.1.Value.x",
                     "Filter.a.Name", "Filter.1.Name", "Tag.1.Key", "Version", "MaxCount",
                     "BlockDeviceMapping.1.Ebs.VolumeSize", "Action.1", ".", "a..b", "\u00e9"]),
    printable,
)  # fmt: skip


@st.composite
def requests(draw, target: Target) -> dict:
    """One EC2 request: its action, form fields, HTTP method, signing and mangling. The
    odds (Hypothesis favours the ends of a range) come from a Random it seeds."""
    odds = draw(st.randoms(use_true_random=True))
    odd = ("", "NoSuchAction", "describeinstances", "DescribeInstances\x00", *UNIMPLEMENTED)
    action = draw(st.sampled_from(IMPLEMENTED if odds.random() < 0.94 else odd))
    model = protocol.operation(action)
    params: dict[str, Any] = {}
    if model is not None and model.input_shape is not None:
        # Semi-valid: the required members and a few others, plausible (real ids...);
        # one or two of them anything at all.
        shape = model.input_shape
        wanted = set(shape.required_members) if odds.random() < 0.9 else set()
        wanted |= {m for m in shape.members if m in USUAL and odds.random() < 0.7}
        wanted |= set(draw(st.lists(st.sampled_from(list(shape.members)), max_size=3)))
        wanted -= {"DryRun"}
        wild = set(odds.sample(sorted(wanted), min(len(wanted), odds.choice([0, 1, 1, 2]))))
        for name in sorted(wanted):
            params[name] = value_of(draw, target, shape.members[name], name, name in wild)
        if odds.random() < 0.03:
            params["DryRun"] = True
    fields = _serialize(action, params)
    if len(fields) > 2 and odds.random() < 0.1:  # a value of the wrong type or form
        fields[odds.choice(sorted(set(fields) - {"Action", "Version"}))] = draw(any_text)
    if odds.random() < 0.2:
        fields.update(draw(st.dictionaries(EXTRA_FIELDS, any_text, min_size=1, max_size=3)))
    signer = "v2" if odds.random() < 0.15 else "v4"
    mangle = odds.choice(MANGLES) if odds.random() < 0.15 else "none"
    method = "GET" if odds.random() < 0.2 else "POST"
    if odds.random() < 0.02:
        method = odds.choice(["PUT", "DELETE", "PATCH"])
    return {
        "action": action,
        "fields": fields,
        "path": odds.choice(["/nope", "//", "/2016-11-15/"]) if odds.random() < 0.02 else "/",
        "method": method,
        "signer": signer,
        "mangle": "none" if (signer, mangle) == ("v2", "region") else mangle,  # v2 has none
    }


def _serialize(action: str, params: dict[str, Any]) -> dict[str, str]:
    """The flat form fields, as boto3 writes them (without its type checks)."""
    model = protocol.operation(action) or protocol.operation("DescribeRegions")
    body = create_serializer("ec2", include_validation=False).serialize_to_request(params, model)
    fields = {k: _text(v) for k, v in body["body"].items()}
    fields["Action"] = action
    return fields


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- signing, sending and judging ---------------------------------------------------


def _query(fields: dict[str, str]) -> str:
    """A query string in SigV4's canonical encoding (botocore signs a URL's as written)."""
    return "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(fields.items())
    )


def signed(target: Target, r: dict) -> tuple[str, dict[str, str], bytes]:
    """URL, headers and body of the request, signed (and mangled) as `r` says."""
    url, body = target.endpoint + r["path"], b""
    if r["method"] == "GET":
        url += "?" + _query(r["fields"])
    else:
        body = urlencode(r["fields"]).encode()  # boto3's form: quote_plus, UTF-8
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    mangle = r["mangle"]
    if mangle == "anonymous":
        return url, headers, body
    access = "AKIANOSUCHKEY0000000" if mangle == "access-key" else target.access
    request = AWSRequest(method=r["method"], url=url, data=body, headers=headers)
    if r["signer"] == "v2":  # it signs the parameters themselves, then writes them
        request.url = target.endpoint + r["path"]
        if r["method"] != "GET":
            request.data, request.params = dict(r["fields"]), {}
        else:
            request.data, request.params = b"", dict(r["fields"])
        SigV2Auth(Credentials(access, target.secret)).add_auth(request)
        if r["method"] != "GET":
            body = urlencode(request.data).encode()
        else:
            url = target.endpoint + r["path"] + "?" + _query(request.params)
    else:
        region = "eu-west-1" if mangle == "region" else REGION
        SigV4Auth(Credentials(access, target.secret), "ec2", region).add_auth(request)
    out = {k: str(v) for k, v in request.headers.items()}
    if mangle == "signature":
        url, body, out = _reverse_signature(url, body, out)
    elif mangle == "garbage":
        out["Authorization"] = "AWS4-HMAC-SHA256 Credential=/,SignedHeaders=,Signature=zz"
    elif mangle == "date":
        out["X-Amz-Date"] = "20000101T000000Z"
        if r["signer"] == "v2":
            body = body.replace(b"Timestamp=", b"Timestamp=2000-01-01T00%3A00%3A00Z&Old=")
            url = url.replace("Timestamp=", "Timestamp=2000-01-01T00%3A00%3A00Z&Old=")
    elif mangle == "query":  # a parameter added to a signed POST's URL, or a GET's
        url += ("&" if "?" in url else "?") + "InstanceId.7=i-0123456789abcdef0"
    elif mangle == "body":
        body += b"&Tampered=1"
        url += "&Tampered=1" if r["method"] == "GET" else ""
    return url, out, body


def _reverse_signature(url: str, body: bytes, headers: dict) -> tuple[str, bytes, dict]:
    if "Authorization" in headers:
        head, _, sig = headers["Authorization"].rpartition("Signature=")
        headers["Authorization"] = head + "Signature=" + sig[::-1]
    for name in ("Signature=", "X-Amz-Signature="):
        url = url.replace(name, name + "AAAA")
        body = body.replace(name.encode(), name.encode() + b"AAAA")
    return url, body, headers


def judge(r: dict, answer: Answer) -> None:
    status, request_id = answer.status_code, answer.headers.get("x-openstack-request-id")
    assert request_id, "no x-openstack-request-id"
    assert status < 500 or status == 503, f"a server error {status}"  # 503: throttled
    assert "xml" in answer.headers.get("content-type", ""), answer.headers.get("content-type")
    document = ElementTree.fromstring(answer.content)  # well-formed XML, or it raises
    if status < 300:
        assert r["mangle"] == "none", "a mangled signature was accepted"
        assert r["path"] == "/" and r["method"] in ("GET", "POST"), "served off its path"
        model = protocol.operation(r["action"])
        assert model is not None and document.tag == f"{{{protocol.XMLNS}}}{r['action']}Response"
        parsed = create_parser("ec2").parse(
            {"body": answer.content, "headers": answer.headers, "status_code": status},
            model.output_shape,
        )
        assert "Error" not in parsed, parsed
        return
    assert document.tag == "Response", answer.text
    code, message = (
        document.findtext("Errors/Error/Code"),
        document.findtext("Errors/Error/Message"),
    )
    assert code and message is not None, answer.text
    assert document.findtext("RequestID") == request_id, answer.text
    assert re.fullmatch(ERROR_CODE, code), f"not an EC2 error code: {code!r}"
    if code == BEFORE_THE_ACTION:
        assert 400 <= status < 500, f"{code} answered {status}"
    else:
        assert status == STATUS.get(code, 400), (
            f"{code} answered {status}, AWS gives {STATUS.get(code, 400)}"
        )
    # AuthFailure is also EC2's "Not authorized for images: ..." (a resource, not a signature).
    refused = code in SIGNATURE_REFUSALS and not message.startswith("Not authorized for")
    if r["mangle"] == "none":
        assert not refused, f"a correctly signed request refused: {code}"
    elif r["fields"].get("Action"):
        before = ("MissingParameter", BEFORE_THE_ACTION)  # refused before it is checked
        assert refused or code in before, f"past the signature: {code}"


def test_ec2_fuzzing_finds_no_server_error_and_only_ec2_errors(target: Target):
    http = RawClient(target.endpoint)
    seen = fuzz(http, lambda: requests(target), lambda r: signed(target, r), judge,
                seed_value=SEED, examples=EXAMPLES)  # fmt: skip
    # It reached past the signature check into the actions (not only errors).
    assert sum(n for s, n in seen.items() if s < 300) >= EXAMPLES // 10, seen
    # The API still answers as before.
    again = {
        "action": "DescribeRegions",
        "fields": _serialize("DescribeRegions", {}),
        "path": "/",
        "method": "POST",
        "signer": "v4",
        "mangle": "none",
    }
    answer = http.request("POST", *signed(target, again))
    assert answer.status_code == 200, answer.text
