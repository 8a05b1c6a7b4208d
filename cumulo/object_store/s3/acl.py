"""S3 ACLs. A bucket's are Swift's container ACLs: canned ACLs and grants become
X-Container-Read and X-Container-Write, and back; anonymous writes are not offered
(public-read-write lets any signed-in user write).

A grantee named by its email address (`emailAddress="..."`, AmazonCustomerByEmail) is the
canonical user it resolves to: the default project of the Keystone user with that email.

An object may have its own ACL (x-amz-acl / x-amz-grant-* on PutObject, CopyObject,
CreateMultipartUpload and POST Object forms, or PutObjectAcl), kept in the object's
system metadata as its grants. An object without one has its bucket's. For callers
other than the bucket's project, an object's own ACL decides: what it grants them is done
with the rights of the service (the reseller admin, on the owner's behalf), what it does
not is AccessDenied, even where the bucket's ACL would let them read."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

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
    """X-Container-Read/Write from x-amz-acl or x-amz-grant-* (`default`, a canned ACL,
    when neither; nothing without one)."""
    grants = {k: v for k, v in headers.items() if k.startswith("x-amz-grant-")}
    canned = headers.get("x-amz-acl", None if grants else default)
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


# -- grantees named by their email address -------------------------------------------------


async def project_of_email(call: Call, email: str) -> str:
    """The canonical user (a project: S3's account) an email grantee names: the default
    project of the enabled Keystone users whose `email` it is. None found, or none with
    a default project: UnresolvableGrantByEmailAddress; users of different projects:
    AmbiguousGrantByEmailAddress."""
    client = call.store.validator.client  # type: ignore[union-attr]
    users = await client.users_by_email(email)
    projects = {u["default_project_id"] for u in users if u.get("default_project_id")}
    if not projects:
        raise S3Error("UnresolvableGrantByEmailAddress", EmailAddress=email)
    if len(projects) > 1:
        raise S3Error("AmbiguousGrantByEmailAddress", EmailAddress=email)
    return projects.pop()


async def resolve_grant_emails(call: Call, headers: dict[str, str]) -> None:
    """x-amz-grant-* headers (or POST form fields) with every `emailAddress="..."`
    grantee replaced, in place, by the `id="<project>"` it resolves to."""

    async def resolved(grantee: str) -> str:
        kind, _, who = grantee.strip().partition("=")
        if kind.strip() != "emailAddress":
            return grantee
        return f'id="{await project_of_email(call, who.strip().strip(chr(34)))}"'

    for name, value in list(headers.items()):
        if name.startswith("x-amz-grant-") and "emailAddress" in value:
            headers[name] = ",".join([await resolved(g) for g in value.split(",")])


async def resolve_policy_emails(call: Call, root: ET.Element) -> ET.Element:
    """An AccessControlPolicy whose AmazonCustomerByEmail grantees are made the
    CanonicalUser (ID) each resolves to, as S3 shows them once granted."""
    for grantee in root.iter("Grantee"):
        email = grantee.find("EmailAddress")
        if email is None:
            continue
        project = await project_of_email(call, (email.text or "").strip())
        grantee.remove(email)
        sub(grantee, "ID", project)
        grantee.set(f"{{{XSI}}}type", "CanonicalUser")
    return root


# -- objects' own ACLs ---------------------------------------------------------------------

OBJECT_ACL = "x-object-sysmeta-s3api-acl"
PERMISSIONS = ("READ", "WRITE", "READ_ACP", "WRITE_ACP", "FULL_CONTROL")
# Canned ACLs of objects: their grants besides the owner's FULL_CONTROL (the bucket's
# owner owns every object of its bucket here, so bucket-owner-* add nothing).
OBJECT_CANNED: dict[str, list[tuple[str, str, str]]] = {
    "private": [],
    "public-read": [("Group", ALL_USERS, "READ")],
    "public-read-write": [("Group", ALL_USERS, "READ"), ("Group", ALL_USERS, "WRITE")],
    "authenticated-read": [("Group", AUTHENTICATED, "READ")],
    "aws-exec-read": [],
    "bucket-owner-read": [],
    "bucket-owner-full-control": [],
}
GRANT_HEADERS = {
    "x-amz-grant-read": "READ",
    "x-amz-grant-write": "WRITE",
    "x-amz-grant-read-acp": "READ_ACP",
    "x-amz-grant-write-acp": "WRITE_ACP",
    "x-amz-grant-full-control": "FULL_CONTROL",
}


def _grantee(kind: str, value: str) -> tuple[str, str]:
    """(grantee type, id or URI) of a grantee named by id or uri (an emailAddress one
    not resolved first, by resolve_grant_emails: UnresolvableGrantByEmailAddress)."""
    if kind == "uri" and value in (ALL_USERS, AUTHENTICATED):
        return "Group", value
    if kind == "id" and value:
        return "CanonicalUser", value
    if kind == "emailAddress":
        raise S3Error("UnresolvableGrantByEmailAddress", EmailAddress=value)
    raise S3Error("InvalidArgument", f"Invalid grantee: {kind}={value}")


def object_grants_from_request(headers: dict[str, str]) -> list[tuple[str, str, str]] | None:
    """An object's grants from x-amz-acl or x-amz-grant-* (None: neither was given)."""
    canned = headers.get("x-amz-acl")
    named = {k: v for k, v in headers.items() if k in GRANT_HEADERS}
    if canned is not None and named:
        raise S3Error(
            "InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed"
        )
    if canned is not None:
        if canned not in OBJECT_CANNED:
            raise S3Error("InvalidArgument", f"Invalid canned ACL: {canned}",
                          ArgumentName="x-amz-acl", ArgumentValue=canned)  # fmt: skip
        return list(OBJECT_CANNED[canned])
    if not named:
        return None
    grants = []
    for header, value in named.items():
        for item in value.split(","):
            if not item.strip():
                continue
            kind, _, who = item.strip().partition("=")
            grants.append((*_grantee(kind.strip(), who.strip().strip('"')), GRANT_HEADERS[header]))
    return grants


def object_grants_from_policy(root: ET.Element, owner_id: str) -> list[tuple[str, str, str]]:
    """An object's grants from an AccessControlPolicy (the owner's own grant left out)."""
    if root.tag != "AccessControlPolicy" or root.find("AccessControlList") is None:
        raise S3Error("MalformedACLError")
    grants = []
    for grant in root.iter("Grant"):
        grantee, permission = grant.find("Grantee"), grant.findtext("Permission") or ""
        if grantee is None or permission not in PERMISSIONS:
            raise S3Error("MalformedACLError")
        if grantee.findtext("URI") is not None:
            found = _grantee("uri", grantee.findtext("URI") or "")
        elif grantee.findtext("EmailAddress") is not None:
            found = _grantee("emailAddress", grantee.findtext("EmailAddress") or "")
        else:
            found = _grantee("id", grantee.findtext("ID") or "")
        if found != ("CanonicalUser", owner_id):
            grants.append((*found, permission))
    return grants


def encode_grants(grants: list[tuple[str, str, str]] | None) -> str:
    """The system metadata value of an object's grants ("" for none of its own)."""
    return "" if grants is None else quote(json.dumps([list(g) for g in grants]), safe="")


def decode_grants(value: str | None) -> list[tuple[str, str, str]] | None:
    if not value:
        return None
    try:
        return [(str(k), str(w), str(p)) for k, w, p in json.loads(unquote(value))]
    except (ValueError, TypeError):
        return []  # unreadable: as private


def owns_bucket(call: Call) -> bool:
    cred = call.credential
    prefix = call.store.config.reseller_prefix
    return cred is not None and call.account == f"{prefix}{cred.project_id}"


def grants_allow(call: Call, grants: list[tuple[str, str, str]], permission: str) -> bool:
    """Whether the grants give the caller (anonymous: AllUsers only) the permission."""
    cred = call.credential
    for kind, who, granted in grants:
        if granted not in (permission, "FULL_CONTROL"):
            continue
        if who == ALL_USERS or (cred is not None and who == AUTHENTICATED):
            return True
        if kind == "CanonicalUser" and cred is not None and who == cred.project_id:
            return True
    return False


async def object_access(
    call: Call, path: str, query: dict[str, str], permission: str
) -> bool | None:
    """For a caller who does not own the bucket, what the object's own ACL says: True
    (granted: go on with the service's rights), or None (the object has no ACL of its
    own, or is not there: the caller's own rights decide); AccessDenied when refused."""
    if owns_bucket(call):
        return None
    head = await call.swift("HEAD", path, query=query, as_service=True)
    grants = decode_grants(head.headers.get(OBJECT_ACL)) if head.status == 200 else None
    if grants is None:
        return None
    if not grants_allow(call, grants, permission):
        raise S3Error("AccessDenied")
    return True
