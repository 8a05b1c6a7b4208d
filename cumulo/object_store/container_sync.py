"""Container sync realms (Swift's container-sync-realms.conf and container_sync
middleware): validating X-Container-Sync-To, signing and verifying the sync daemon's
requests (X-Container-Sync-Auth: <realm> <nonce> <HMAC-SHA1 hex>)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlparse

from cumulo.common.config import ContainerSyncRealmConfig, CumuloConfig, ObjectStoreConfig
from cumulo.object_store.errors import SwiftError

SYNC_TO = "X-Container-Sync-To"
SYNC_KEY = "X-Container-Sync-Key"
FULL_URLS_REFUSED = (
    "Full URLs are not allowed for X-Container-Sync-To values. Only realm values of the "
    "format //realm/cluster/account/container are allowed.\n"
)
AUTH_REFUSED = "X-Container-Sync-Auth header not valid; contact cluster operator for support."


@dataclass(frozen=True)
class SyncTarget:
    url: str  # the destination container's URL
    realm: str | None  # upper-cased, as Swift; None for an old-style full URL
    realm_key: str | None


def find_realm(config: ObjectStoreConfig, name: str) -> ContainerSyncRealmConfig | None:
    for realm in config.container_sync_realms:
        if realm.name.upper() == name.upper():
            return realm
    return None


def own_endpoint(config: CumuloConfig) -> str:
    """This cloud's Swift endpoint: what a realm's cluster with an empty endpoint names
    (the realm `cumulo init` makes), so that it follows the proxy's host and port."""
    return f"{config.public_url(config.ports.object_store)}/v1/"


def cluster_endpoint(config: CumuloConfig, realm: ContainerSyncRealmConfig, cluster: str) -> str:
    for name, endpoint in realm.clusters.items():
        if name.upper() == cluster.upper():
            return endpoint or own_endpoint(config)
    return ""


def validate_sync_to(cloud: CumuloConfig, value: str) -> SyncTarget | None:
    """The destination of an X-Container-Sync-To value (None for an empty one), or a 400
    with Swift's message (its utils.validate_sync_to)."""
    config = cloud.object_store
    original = value
    value = value.rstrip("/")
    if not value:
        return None
    if value.startswith("//"):
        parts = value[2:].split("/")
        if len(parts) != 4:
            raise SwiftError(400, f"Invalid X-Container-Sync-To format {original!r}")
        realm_name, cluster, account, container = parts
        realm = find_realm(config, realm_name)
        if realm is None:
            raise SwiftError(400, f"No realm key for {realm_name!r}")
        endpoint = cluster_endpoint(cloud, realm, cluster)
        if not endpoint:
            raise SwiftError(400, f"No cluster endpoint for {realm_name!r} {cluster!r}")
        url = f"{endpoint.rstrip('/')}/{account}/{container}"
        return SyncTarget(url, realm_name.upper(), realm.key)
    if not config.container_sync_allow_full_urls:
        raise SwiftError(400, FULL_URLS_REFUSED)
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https"):
        raise SwiftError(
            400,
            f"Invalid scheme {parsed.scheme!r} in X-Container-Sync-To, must be "
            '"//", "http", or "https".',
        )
    if not parsed.path:
        raise SwiftError(400, "Path required in X-Container-Sync-To")
    if parsed.params or parsed.query or parsed.fragment:
        raise SwiftError(400, "Params, queries, and fragments not allowed in X-Container-Sync-To")
    if parsed.hostname not in config.container_sync_allowed_hosts:
        raise SwiftError(400, f"Invalid host {parsed.hostname!r} in X-Container-Sync-To")
    return SyncTarget(value, None, None)


def signature(
    method: str, path: str, x_timestamp: str, nonce: str, realm_key: str, user_key: str
) -> str:
    """Swift's ContainerSyncRealms.get_sig: HMAC-SHA1 keyed by the realm's key over the
    method, the (URL-encoded) path, X-Timestamp, the nonce and the container's sync key."""
    message = "\n".join((method, path, x_timestamp, nonce, user_key)).encode()
    return hmac.new(realm_key.encode(), message, hashlib.sha1).hexdigest()


def verify_auth(
    config: ObjectStoreConfig,
    header: str,
    method: str,
    path: str,
    x_timestamp: str,
    container_key: str | None,
) -> None:
    """Accept an X-Container-Sync-Auth signed with one of the realm's keys and the
    destination container's own X-Container-Sync-Key; 401 otherwise (as Swift)."""
    parts = header.split()
    valid = False
    if len(parts) == 3 and container_key:
        realm_name, nonce, sig = parts
        realm = find_realm(config, realm_name)
        keys = [k for k in (realm.key, realm.key2) if k] if realm else []
        for key in keys:
            expected = signature(method, path, x_timestamp, nonce, key, container_key)
            valid = hmac.compare_digest(sig, expected) or valid
    if not valid:
        raise SwiftError(
            401,
            AUTH_REFUSED,
            headers={
                "WWW-Authenticate": 'SwiftContainerSync realm="unknown"',
                "Content-Type": "text/plain",
            },
        )


def info(cloud: CumuloConfig) -> dict:
    """/info's container_sync: each realm's clusters, this one marked `current`."""
    realms: dict[str, dict] = {}
    own = own_endpoint(cloud).rstrip("/")
    for realm in cloud.object_store.container_sync_realms:
        clusters = {
            name.upper(): ({"current": True} if (url or own).rstrip("/") == own else {})
            for name, url in realm.clusters.items()
        }
        if clusters:
            realms[realm.name.upper()] = {"clusters": clusters}
    return {"realms": realms}


__all__ = [
    "SYNC_KEY",
    "SYNC_TO",
    "SyncTarget",
    "info",
    "own_endpoint",
    "signature",
    "validate_sync_to",
    "verify_auth",
]
