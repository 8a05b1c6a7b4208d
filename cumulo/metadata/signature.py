"""The proxy's proof of who is asking: Nova's X-Instance-ID-Signature.

The network side's metadata proxy knows which instance owns a source address; it signs
that instance id with the secret it shares with the metadata service
(HMAC-SHA256, hex, as Nova's `metadata_proxy_shared_secret`). The metadata service
believes only signed ids, so a guest that sends the headers itself gets nothing.
"""

from __future__ import annotations

import hashlib
import hmac

INSTANCE_ID = "X-Instance-ID"
TENANT_ID = "X-Tenant-ID"
SIGNATURE = "X-Instance-ID-Signature"
FORWARDED_FOR = "X-Forwarded-For"
# What a guest must never be able to set: the proxy drops these from its requests.
PROXY_HEADERS = (INSTANCE_ID, TENANT_ID, SIGNATURE, FORWARDED_FOR)


def sign_instance_id(secret: str, instance_id: str) -> str:
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def signature_is_valid(secret: str, instance_id: str, signature: str) -> bool:
    """Constant-time check; an empty secret never validates anything."""
    if not secret:
        return False
    return hmac.compare_digest(sign_instance_id(secret, instance_id), signature)
