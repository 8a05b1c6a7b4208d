"""Tempest's certified image (`[compute] certified_image_ref` and
`certified_image_trusted_certs`): a signed copy of the tiny image, as Nova's certificate
validation guide makes one, for ServerShowV263Test.

A CA and a signing certificate it issued go into the Key Manager (the admin project's),
with a read ACL naming every Tempest user: servers are booted with the tests' tokens, and
the compute host reads the certificates with them. The copy carries the four
img_signature properties; both certificates are the trusted ones.
"""

from __future__ import annotations

import base64

from cumulo.testing.signing import issue, signature_properties
from cumulo.testing.tempest.accounts import AdminSession, alternate_image


def store_certificate(s: AdminSession, name: str, pem: bytes, readers: list[str]) -> str:
    """The certificate as a Key Manager secret that `readers` (user IDs) may read too."""
    body = {
        "name": name,
        "secret_type": "certificate",
        "payload": base64.b64encode(pem).decode(),
        "payload_content_type": "application/octet-stream",
        "payload_content_encoding": "base64",
    }
    ref = s.call("POST", "key-manager", "/v1/secrets", json=body)["secret_ref"]
    cert_id = ref.rstrip("/").rsplit("/", 1)[-1]
    if readers:
        acl = {"read": {"users": readers, "project-access": True}}
        s.call("PUT", "key-manager", f"/v1/secrets/{cert_id}/acl", json=acl)
    return cert_id


def tempest_users(s: AdminSession) -> list[str]:
    """The IDs of the pre-provisioned Tempest accounts (accounts.py names them tempest-*)."""
    users = s.call("GET", "identity", "/users")["users"]
    return sorted(u["id"] for u in users if u["name"].startswith("tempest-"))


def certified_image(s: AdminSession, image_id: str, readers: list[str]) -> tuple[str, list[str]]:
    """A signed public copy of image_id; its ID and the trusted certificates' IDs."""
    ca = issue("cumulo Tempest CA", ca=True, path_length=0, days=7)
    signer = issue("cumulo Tempest image signer", issuer=ca, days=7)
    ca_id = store_certificate(s, "tempest-ca", ca.pem, readers)
    signer_id = store_certificate(s, "tempest-image-signer", signer.pem, readers)
    certified = alternate_image(
        s, image_id, "tiny-signed", extra=lambda data: signature_properties(data, signer, signer_id)
    )
    return certified, [ca_id, signer_id]
