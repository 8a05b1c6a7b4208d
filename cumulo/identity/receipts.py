"""Multi-factor rules and auth receipts (Keystone's MFA).

A user's `multi_factor_auth_rules` option lists the sets of methods that may make a
token, e.g. [["password", "totp"]]. When the methods that succeeded satisfy none, no
token is issued: the answer is 401 with an auth receipt (a Fernet blob in the
`Openstack-Auth-Receipt` header recording who succeeded with which methods, and the
rules still open). Sending the receipt back with the missing methods completes it.
Receipts are sealed with the token keys under a payload version of their own, so a
receipt is never taken for a token nor a token for a receipt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cumulo.common.faults import Unauthorized
from cumulo.identity.core import Identity, isotime
from cumulo.identity.models import Domain, User
from cumulo.identity.tokens import pack_id, pack_methods, unpack_id, unpack_methods

RECEIPT_HEADER = "Openstack-Auth-Receipt"
RECEIPT_PAYLOAD_VERSION = 2
MFA_ENABLED = "multi_factor_auth_enabled"
MFA_RULES = "multi_factor_auth_rules"


def _rules(options: dict[str, Any], auth_methods: tuple[str, ...]) -> list[set[str]]:
    """The user's rules reduced to methods this cloud offers (Keystone ignores the rest)."""
    raw = options.get(MFA_RULES) or []
    if options.get(MFA_ENABLED, True) is False or not isinstance(raw, list):
        return []
    rules = []
    for rule in raw:
        if isinstance(rule, list) and rule and all(isinstance(m, str) for m in rule):
            offered = set(rule) & set(auth_methods)
            if offered:
                rules.append(offered)
    return rules


def rules_satisfied(
    options: dict[str, Any], methods: set[str], auth_methods: tuple[str, ...]
) -> bool:
    """No rule (or only rules of unknown methods, so nobody is locked out), or one met."""
    rules = _rules(options, auth_methods)
    return not rules or any(methods >= rule for rule in rules)


def required_methods(
    options: dict[str, Any], methods: set[str], auth_methods: tuple[str, ...]
) -> list[list[str]]:
    """The rules the methods already given are part of (Keystone's required_auth_methods)."""
    return [sorted(rule) for rule in _rules(options, auth_methods) if rule & methods]


@dataclass(frozen=True)
class Receipt:
    user_id: str
    methods: tuple[str, ...]
    expires_at: float


def _not_found(receipt_id: str) -> Unauthorized:
    return Unauthorized(f"Could not find auth receipt: {receipt_id}.")


def validate_receipt(identity: Identity, receipt_id: str) -> Receipt:
    try:
        fields = identity.formatter.unseal(receipt_id)
    except ValueError:
        raise _not_found(receipt_id) from None
    if len(fields) != 5 or fields[0] != RECEIPT_PAYLOAD_VERSION:
        raise _not_found(receipt_id)
    _, user, methods, expires_at, _issued_at = fields
    if float(expires_at) <= time.time():
        raise _not_found(receipt_id)
    return Receipt(unpack_id(user), unpack_methods(methods), float(expires_at))  # type: ignore[arg-type]


async def issue_receipt(
    identity: Identity, user_id: str, methods: tuple[str, ...], auth_methods: tuple[str, ...]
) -> tuple[str, dict[str, Any]]:
    """The receipt id and the 401 body Keystone answers with."""
    now = time.time()
    expires_at = now + identity.config.identity.receipt_expiration
    receipt_id = identity.formatter.seal(
        [RECEIPT_PAYLOAD_VERSION, pack_id(user_id), pack_methods(methods), expires_at, now]
    )
    async with identity.read() as session:
        user = await session.get(User, user_id)
        domain = await session.get(Domain, user.domain_id) if user else None
    if user is None or domain is None:
        raise Unauthorized()
    body = {
        "receipt": {
            "methods": list(methods),
            "user": {
                "id": user.id,
                "name": user.name,
                "domain": {"id": domain.id, "name": domain.name},
            },
            "expires_at": isotime(expires_at),
            "issued_at": isotime(now),
        },
        "required_auth_methods": required_methods(user.options or {}, set(methods), auth_methods),
    }
    return receipt_id, body
