"""EC2 errors: the AWS codes and the XML error document EC2 clients parse."""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element, SubElement, tostring

# What XML 1.0 cannot carry, even escaped (control characters, lone surrogates...).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """Text as an XML document can hold it: each character XML forbids as U+FFFD."""
    return _NOT_XML.sub("\ufffd", value)


# The HTTP status of the codes that are not a plain 400 (client error).
_STATUS = {
    "AuthFailure": 401,
    "UnauthorizedOperation": 403,
    "Blocked": 403,
    "OptInRequired": 403,
    "DryRunOperation": 412,
    "InternalError": 500,
    "Unavailable": 503,
    "RequestLimitExceeded": 503,
    "InvalidAction": 400,
}


class Ec2Error(Exception):
    def __init__(self, code: str, message: str = "", status: int | None = None) -> None:
        super().__init__(message or code)
        self.code, self.message = code, message or code
        self.status = status or _STATUS.get(code, 400)

    def document(self, request_id: str) -> bytes:
        root = Element("Response")
        error = SubElement(SubElement(root, "Errors"), "Error")
        SubElement(error, "Code").text = xml_text(self.code)
        SubElement(error, "Message").text = xml_text(self.message)
        SubElement(root, "RequestID").text = request_id
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root)


def not_found(kind: str, ec2_id: str) -> Ec2Error:
    """`Invalid<Kind>ID.NotFound` with the message AWS writes."""
    code, label = _NOT_FOUND.get(kind, ("InvalidID", "ID"))
    return Ec2Error(f"{code}.NotFound", f"The {label} '{ec2_id}' does not exist")


_NOT_FOUND = {
    "i": ("InvalidInstanceID", "instance ID"),
    "ami": ("InvalidAMIID", "image id"),
    "aki": ("InvalidAMIID", "image id"),
    "ari": ("InvalidAMIID", "image id"),
    "vol": ("InvalidVolume", "volume"),
    "snap": ("InvalidSnapshot", "snapshot"),
    "sg": ("InvalidGroup", "security group"),
    "eipalloc": ("InvalidAllocationID", "allocation ID"),
    "eipassoc": ("InvalidAssociationID", "association ID"),
    "vpc": ("InvalidVpcID", "vpc ID"),
    "subnet": ("InvalidSubnetID", "subnet ID"),
    "igw": ("InvalidInternetGatewayID", "internetGateway ID"),
    "rtb": ("InvalidRouteTableID", "routeTable ID"),
    "eni": ("InvalidNetworkInterfaceID", "networkInterface ID"),
    "key": ("InvalidKeyPair", "key pair"),
    "import-ami": ("InvalidConversionTaskId", "import task"),
}
