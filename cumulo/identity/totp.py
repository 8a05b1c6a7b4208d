"""TOTP passcodes (RFC 6238) as Keystone checks them: 6 digits, 30 s, HMAC-SHA1.

A user's TOTP secrets are their credentials of type `totp`, each blob a base32 secret
(what an authenticator app is given). The `cryptography` library computes the codes.
"""

from __future__ import annotations

import base64
import binascii
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP

PASSCODE_LENGTH = 6
TIME_STEP = 30


def _totp(secret: str) -> TOTP:
    """A TOTP for a base32 secret (padding optional); ValueError when it is not base32."""
    raw = secret.strip().rstrip("=").upper().encode()
    try:
        key = base64.b32decode(raw + b"=" * (-len(raw) % 8))
    except (binascii.Error, ValueError):
        raise ValueError("a TOTP secret is base32") from None
    # Keystone's secrets can be shorter than cryptography's 128-bit minimum: enforce_key_length off.
    return TOTP(key, PASSCODE_LENGTH, hashes.SHA1(), TIME_STEP, enforce_key_length=False)  # noqa: S303 - RFC 6238's default


def passcode(secret: str, at: float | None = None) -> str:
    """The passcode of `secret` at time `at` (now by default)."""
    return _totp(secret).generate(int(at if at is not None else time.time())).decode()


def passcode_matches(
    secret: str, code: str, previous_windows: int, at: float | None = None
) -> bool:
    """Whether `code` is the current passcode, or one of `previous_windows` before it."""
    try:
        totp = _totp(secret)
    except ValueError:
        return False
    now = int(at if at is not None else time.time())
    for window in range(previous_windows + 1):
        try:
            totp.verify(code.encode(), now - window * TIME_STEP)
            return True
        except InvalidToken:
            continue
    return False
