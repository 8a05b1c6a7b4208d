"""Container and account quotas (Swift's container_quotas and account_quotas):
`X-Container-Meta-Quota-Bytes` / `-Quota-Count` set by the container's owner,
`X-Account-Meta-Quota-Bytes` / `-Quota-Count` and per storage policy
`X-Account-Quota-Bytes-Policy-<policy name>` set by a reseller admin only; an upload
that would go over answers 413 "Upload exceeds quota." (usage as last reported, as
Swift's cached container and account info; a container with a quota is read anew)."""

from __future__ import annotations

from starlette.requests import Request

from cumulo.object_store.api.common import Caller, store_of
from cumulo.object_store.errors import SwiftError


def check_container_quota_headers(request: Request) -> None:
    for kind in ("bytes", "count"):
        value = request.headers.get(f"x-container-meta-quota-{kind}")
        if value and not value.isdecimal():
            raise SwiftError(400, f"Invalid {kind} quota.")


# The account quota headers: the legacy metadata form and Swift 2.34's own headers.
ACCOUNT_QUOTA_HEADERS = ("x-account-quota-bytes", "x-account-quota-count")
POLICY_QUOTA = "x-account-quota-bytes-policy-"


def account_quota_headers(request: Request) -> tuple[str, ...]:
    """The quota headers an account POST stores (or removes): the fixed ones and the
    per-policy ones it names."""
    per_policy = {
        name.lower().removeprefix("x-remove-").removeprefix("x-")
        for name in request.headers
        if name.lower().removeprefix("x-remove-").removeprefix("x-").startswith(POLICY_QUOTA[2:])
    }
    return ACCOUNT_QUOTA_HEADERS + tuple(f"x-{name}" for name in sorted(per_policy))


def check_account_quota_headers(request: Request, caller: Caller) -> None:
    for kind in ("bytes", "count"):
        for name in (
            f"x-account-meta-quota-{kind}",
            f"x-remove-account-meta-quota-{kind}",
            f"x-account-quota-{kind}",
            f"x-remove-account-quota-{kind}",
        ):
            if name not in request.headers:
                continue
            if not caller.reseller_admin:
                raise SwiftError(403)
            value = request.headers[name]
            if name.startswith("x-account") and value and not value.isdecimal():
                raise SwiftError(400, f"Invalid {kind} quota.")
    policies = store_of(request).policies
    for name, value in request.headers.items():
        lower = name.lower()
        if not lower.removeprefix("x-remove-").removeprefix("x-").startswith(POLICY_QUOTA[2:]):
            continue
        if not caller.reseller_admin:
            raise SwiftError(403)
        policy = lower.removeprefix("x-remove-").removeprefix("x-")[len(POLICY_QUOTA) - 2 :]
        if policies.by_name(policy) is None:
            raise SwiftError(400, f"Invalid storage policy: {policy}")
        if lower.startswith(POLICY_QUOTA) and value and not value.isdecimal():
            raise SwiftError(400, "Invalid bytes quota.")


def _limit(metadata: dict, key: str) -> int | None:
    value = metadata.get(key, "")
    return int(value) if value.isdecimal() else None


def _is_account_quota(key: str) -> bool:
    lowered = key.lower()
    return lowered.startswith((POLICY_QUOTA, "x-account-meta-quota-")) or lowered in (
        "x-account-quota-bytes",
        "x-account-quota-count",
    )


async def check_upload(
    request: Request, caller: Caller, account: str, container: str, length: int
) -> None:
    if caller.reseller_admin:
        return
    proxy = store_of(request).proxy
    info = await proxy.container_info(account, container)
    meta = info.metadata or {}
    if "X-Container-Meta-Quota-Bytes" in meta or "X-Container-Meta-Quota-Count" in meta:
        # A container with a quota is read fresh: the cached usage may be seconds old.
        info = await proxy.container_info(account, container, fresh=True)
        meta = info.metadata or {}
    limit = _limit(meta, "X-Container-Meta-Quota-Bytes")
    if limit is not None and info.bytes_used + length > limit:
        raise SwiftError(413, "Upload exceeds quota.")
    limit = _limit(meta, "X-Container-Meta-Quota-Count")
    if limit is not None and info.object_count + 1 > limit:
        raise SwiftError(413, "Upload exceeds quota.")
    account_info = await proxy.account_info(account, cached=True)
    if account_info is None:
        return
    ameta = {k: v for k, (v, _ts) in account_info["metadata"].items()}
    if any(_is_account_quota(k) for k in ameta):
        # An account with a quota is read fresh, as a container with one is.
        account_info = await proxy.account_info(account)
        if account_info is None:
            return
        ameta = {k: v for k, (v, _ts) in account_info["metadata"].items()}
    for key in ("X-Account-Quota-Bytes", "X-Account-Meta-Quota-Bytes"):
        limit = _limit(ameta, key)
        if limit is not None and account_info["bytes"] + length > limit:
            raise SwiftError(413, "Upload exceeds quota.")
    for key in ("X-Account-Quota-Count", "X-Account-Meta-Quota-Count"):
        limit = _limit(ameta, key)
        if limit is not None and account_info["objects"] + 1 > limit:
            raise SwiftError(413, "Upload exceeds quota.")
    if info.policy is not None:
        lowered = {k.lower(): v for k, v in ameta.items()}
        limit = _limit(lowered, f"{POLICY_QUOTA}{info.policy.name.lower()}")
        used = next((p["bytes"] or 0 for p in account_info.get("policies", [])
                     if p["policy"] == info.policy.index), 0)  # fmt: skip
        if limit is not None and used + length > limit:
            raise SwiftError(413, "Upload exceeds quota.")
