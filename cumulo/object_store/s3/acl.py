"""S3 ACLs on Swift's container ACLs: canned ACLs and grants become X-Container-Read and
X-Container-Write, and back. Swift keeps ACLs per container, so an object has its
bucket's; anonymous writes are not offered (public-read-write lets any signed-in user
write)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from cumulo.object_store.s3.errors import S3Error
from cumulo.object_store.s3.xmldoc import element, sub

if TYPE_CHECKING:
    from cumulo.object_store.s3.gateway import Call

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
PUBLIC_READ = ".r:*,.rlistings"
ANY_USER = "*:*"

CANNED = {
    "private": ("", ""),
    "public-read": (PUBLIC_READ, ""),
    "public-read-write": (PUBLIC_READ, ANY_USER),
    "authenticated-read": (ANY_USER, ""),
}


def owner_element(call: Call) -> ET.Element:
    """The bucket's owner: its project, as ID and display name."""
    project = (call.account or "").removeprefix(call.store.config.reseller_prefix)
    return element("Owner", element("ID", text=project), element("DisplayName", text=project))


def _grantee_acl(grantee: str) -> str:
    """One x-amz-grant-* grantee (id="…", uri="…") as a Swift ACL element."""
    kind, _, value = grantee.strip().partition("=")
    value = value.strip().strip('"')
    if kind == "uri" and value == ALL_USERS:
        return PUBLIC_READ
    if kind == "uri" and value == AUTHENTICATED:
        return ANY_USER
    if kind == "id" and value:
        return f"{value}:*"
    raise S3Error("InvalidArgument", f"Invalid grantee: {grantee}")


def container_headers_from_request(headers: dict[str, str], default: str | None = None):
    """X-Container-Read/Write from x-amz-acl or x-amz-grant-* (nothing when neither)."""
    canned = headers.get("x-amz-acl", default)
    grants = {k: v for k, v in headers.items() if k.startswith("x-amz-grant-")}
    if canned is not None and grants:
        raise S3Error(
            "InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed"
        )
    if canned is not None:
        if canned not in CANNED:
            raise S3Error("InvalidArgument", f"Invalid canned ACL: {canned}")
        read, write = CANNED[canned]
        return {"x-container-read": read, "x-container-write": write}
    if not grants:
        return {}
    read, write = [], []
    for name, value in grants.items():
        acls = [_grantee_acl(g) for g in value.split(",") if g.strip()]
        if name in ("x-amz-grant-read", "x-amz-grant-full-control"):
            read += acls
        if name in ("x-amz-grant-write", "x-amz-grant-full-control"):
            write += [a for a in acls if a != PUBLIC_READ] or (
                [ANY_USER] if PUBLIC_READ in acls else []
            )
    return {"x-container-read": ",".join(read), "x-container-write": ",".join(write)}


def container_headers_from_policy(root: ET.Element) -> dict[str, str]:
    if root.tag != "AccessControlPolicy":
        raise S3Error("MalformedXML")
    read, write = [], []
    for grant in root.iter("Grant"):
        grantee = grant.find("Grantee")
        permission = grant.findtext("Permission") or ""
        if grantee is None:
            raise S3Error("MalformedXML")
        uri, ident = grantee.findtext("URI"), grantee.findtext("ID")
        acl = _grantee_acl(f'uri="{uri}"' if uri else f'id="{ident or ""}"')
        if permission in ("READ", "FULL_CONTROL"):
            read.append(acl)
        if permission in ("WRITE", "FULL_CONTROL"):
            write.append(ANY_USER if acl == PUBLIC_READ else acl)
    owner_id = root.findtext("Owner/ID")
    read = [a for a in read if a != f"{owner_id}:*"]
    write = [a for a in write if a != f"{owner_id}:*"]
    return {"x-container-read": ",".join(read), "x-container-write": ",".join(write)}


def grants_from_container(headers: dict[str, str]) -> list[tuple[str, str, str]]:
    """(kind, grantee, permission) of the container's ACLs (the owner's comes apart)."""
    grants = []
    for header, permission in (("x-container-read", "READ"), ("x-container-write", "WRITE")):
        for item in (headers.get(header) or "").split(","):
            item = item.strip()
            if item in (".r:*", ".rlistings") and permission == "READ":
                if ("Group", ALL_USERS, "READ") not in grants:
                    grants.append(("Group", ALL_USERS, "READ"))
            elif item == ANY_USER:
                grants.append(("Group", AUTHENTICATED, permission))
            elif item.endswith(":*"):
                grants.append(("CanonicalUser", item[:-2], permission))
    return grants


def policy_document(owner: ET.Element, grants: list[tuple[str, str, str]]) -> ET.Element:
    ET.register_namespace("xsi", XSI)
    root = element("AccessControlPolicy", ns=True)
    root.append(owner)
    acl = sub(root, "AccessControlList")
    owner_id = owner.findtext("ID") or ""
    for kind, who, permission in [("CanonicalUser", owner_id, "FULL_CONTROL"), *grants]:
        grant = sub(acl, "Grant")
        grantee = ET.SubElement(grant, "Grantee", {f"{{{XSI}}}type": kind})
        if kind == "Group":
            sub(grantee, "URI", who)
        else:
            sub(grantee, "ID", who)
            sub(grantee, "DisplayName", who)
        sub(grant, "Permission", permission)

    return root
