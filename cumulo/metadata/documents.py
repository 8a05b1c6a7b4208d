"""Which document a metadata path names: Nova's URL layout, as pure functions.

`/` lists the EC2 versions, `/openstack` the OpenStack ones; `/openstack/<version>/`
lists that version's files and `/<ec2 version>/meta-data/...` walks the EC2 tree.
`password` is not a document (it is read and written by the service itself).
"""

from __future__ import annotations

from dataclasses import dataclass

from cumulo.metadata import vendordata
from cumulo.metadata.content import (
    CONTENT_DIR,
    EC2_VERSIONS,
    OPENSTACK_VERSIONS,
    InstanceMetadata,
    content_files,
    ec2_lookup,
    ec2_meta_data,
    openstack_files,
)

PASSWORD = "password"
_PASSWORD_SINCE = "2013-04-04"


@dataclass(frozen=True)
class Document:
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def _listing(names: list[str] | tuple[str, ...]) -> Document:
    return Document("\n".join(names).encode())


def openstack_version(version: str) -> bool:
    return version == "latest" or version in OPENSTACK_VERSIONS


def has_password(version: str) -> bool:
    return version == "latest" or version >= _PASSWORD_SINCE


def is_password_path(path: str) -> bool:
    parts = [p for p in path.split("/") if p]
    return (
        len(parts) == 3
        and parts[0] == "openstack"
        and parts[2] == PASSWORD
        and openstack_version(parts[1])
        and has_password(parts[1])
    )


def names_vendor_data(path: str) -> bool:
    """Whether `path` is an OpenStack vendor data file (vendor_data.json, vendor_data2.json)."""
    parts = [p for p in path.split("/") if p]
    return len(parts) == 3 and parts[0] == "openstack" and parts[2] in vendordata.FILES


def resolve(inst: InstanceMetadata, path: str) -> Document | None:
    """The document at `path` for this guest, or None (404)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return _listing((*EC2_VERSIONS, "latest"))
    if parts[0] == "openstack":
        return _openstack(inst, parts[1:])
    return _ec2(inst, parts[0], parts[1:])


def _openstack(inst: InstanceMetadata, parts: list[str]) -> Document | None:
    if not parts:
        return _listing((*OPENSTACK_VERSIONS, "latest"))
    if parts[0] == CONTENT_DIR:  # the personality files, as Nova's _handle_content
        contents = content_files(inst)
        if len(parts) == 1:
            return _listing(sorted(contents))
        data = contents.get(parts[1]) if len(parts) == 2 else None
        return None if data is None else Document(data, "application/octet-stream")
    version = parts[0]
    if not openstack_version(version) or len(parts) > 2:
        return None
    files = openstack_files(inst, version)
    if len(parts) == 1:
        names = list(files) + ([PASSWORD] if has_password(version) else [])
        return _listing(sorted(names))
    data = files.get(parts[1])
    if data is None:
        return None
    if parts[1].endswith(".json"):
        return Document(data, "application/json")
    return Document(data, "application/octet-stream")


def _ec2(inst: InstanceMetadata, version: str, parts: list[str]) -> Document | None:
    if version != "latest" and version not in EC2_VERSIONS:
        return None
    if not parts:
        return _listing(["meta-data/"] + (["user-data"] if inst.user_data is not None else []))
    if parts[0] == "user-data" and len(parts) == 1 and inst.user_data is not None:
        return Document(inst.user_data, "application/octet-stream")
    if parts[0] == "meta-data":
        value = ec2_lookup(ec2_meta_data(inst), "/".join(parts[1:]))
        return None if value is None else Document(value.encode())
    return None
