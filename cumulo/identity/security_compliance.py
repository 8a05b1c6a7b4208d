"""Keystone's security compliance rules for local users' passwords, enforced.

What `[identity.security_compliance]` turns on (each is off by default): lockout after
failed logins, password expiry, password history and minimum age, a change of password
upon first use, and a password regex. Users may be exempted one by one with their
`ignore_*` options, as in Keystone. The messages are Keystone's.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import update

from cumulo.common.config import SecurityComplianceConfig
from cumulo.common.db import Database, utcnow
from cumulo.common.faults import BadRequest, Unauthorized
from cumulo.identity.models import User
from cumulo.identity.passwords import check_password

IGNORE_LOCKOUT = "ignore_lockout_failure_attempts"
IGNORE_EXPIRY = "ignore_password_expiry"
IGNORE_FIRST_USE = "ignore_change_password_upon_first_use"


def _option(user: User, name: str) -> bool:
    return (user.options or {}).get(name) is True


def password_expiry_text(expires_at: datetime | None) -> str | None:
    """`password_expires_at` as Keystone renders it in users and tokens (no zone suffix)."""
    return expires_at.strftime("%Y-%m-%dT%H:%M:%S.%f") if expires_at else None


# -- logins -----------------------------------------------------------------------------


def account_locked(rules: SecurityComplianceConfig, user: User, now: datetime) -> bool:
    """Too many failed logins in a row, and the lockout has not run out yet."""
    if not rules.lockout_failure_attempts or _option(user, IGNORE_LOCKOUT):
        return False
    if (user.failed_auth_count or 0) < rules.lockout_failure_attempts:
        return False
    if not rules.lockout_duration or user.failed_auth_at is None:
        return True
    return user.failed_auth_at + timedelta(seconds=rules.lockout_duration) > now


def locked_error(user_id: str) -> Unauthorized:
    return Unauthorized(f"The account is locked for user: {user_id}.")


def password_expired(user: User, now: datetime) -> bool:
    return (
        user.password_expires_at is not None
        and not _option(user, IGNORE_EXPIRY)
        and now >= user.password_expires_at
    )


def expired_error(user_id: str) -> Unauthorized:
    return Unauthorized(f"The password is expired and needs to be changed for user: {user_id}.")


async def record_failed_login(
    db: Database, rules: SecurityComplianceConfig, user: User, now: datetime
) -> None:
    """Count a wrong password (only while lockout is on and the user is not exempt).

    Written with the database's own writer, not Identity.write(): no cached token,
    scope or catalog depends on the count, so a burst of wrong passwords must not
    empty those caches for everyone.
    """
    if not rules.lockout_failure_attempts or _option(user, IGNORE_LOCKOUT):
        return
    # A lockout that ran out starts a new count, as Keystone resets it.
    expired_lock = (user.failed_auth_count or 0) >= rules.lockout_failure_attempts
    async with db.write() as session:
        await session.execute(
            update(User)
            .where(User.id == user.id)
            .values(
                failed_auth_count=1 if expired_lock else User.failed_auth_count + 1,
                failed_auth_at=now,
            )
        )


async def reset_failed_logins(db: Database, user: User) -> None:
    if user.failed_auth_count:
        async with db.write() as session:
            await session.execute(
                update(User)
                .where(User.id == user.id)
                .values(failed_auth_count=0, failed_auth_at=None)
            )


# -- new passwords ----------------------------------------------------------------------


def check_password_rules(rules: SecurityComplianceConfig, password: str) -> None:
    """The configured regex (Keystone: re.match), on every password set by anyone."""
    if rules.password_regex and not re.match(rules.password_regex, password):
        raise BadRequest(
            "The password does not match the requirements: "
            f"{rules.password_regex_description or rules.password_regex}."
        )


async def check_self_service_change(
    rules: SecurityComplianceConfig, user: User, password: str, now: datetime
) -> None:
    """What a user changing their own password must respect: minimum age, history."""
    if rules.minimum_password_age and user.password_self_service and user.password_created_at:
        usable_from = user.password_created_at + timedelta(days=rules.minimum_password_age)
        if now < usable_from:
            raise BadRequest(
                "You cannot change your password at this time due to the minimum password "
                "age. Once you change your password, it must be used for "
                f"{rules.minimum_password_age} day(s) before it can be changed. Please try "
                f"again in {(usable_from - now).days} day(s) or contact your administrator "
                "to reset your password."
            )
    count = rules.unique_last_password_count
    if count:
        recent = [user.password_hash, *reversed(user.password_history or [])][:count]
        for old_hash in recent:
            if await check_password(password, old_hash):
                raise BadRequest(
                    "The new password cannot be identical to a previous password. The total "
                    f"number which includes the new password must be unique is {count}."
                )


def set_password(
    rules: SecurityComplianceConfig,
    user: User,
    new_hash: str | None,
    *,
    self_service: bool,
    now: datetime | None = None,
) -> None:
    """Store a new password hash with its history, expiry and origin.

    An admin's reset (or a new user) must be changed upon first use when that is on.
    """
    now = now or utcnow()
    if user.password_hash:
        user.password_history = [*(user.password_history or []), user.password_hash][
            -max(rules.unique_last_password_count, 1) :
        ]
    user.password_hash = new_hash
    user.password_created_at = now if new_hash else None
    user.password_self_service = self_service
    user.password_expires_at = None
    if new_hash is None:
        return
    if (
        not self_service
        and rules.change_password_upon_first_use
        and not _option(user, IGNORE_FIRST_USE)
    ):
        user.password_expires_at = now
    elif rules.password_expires_days and not _option(user, IGNORE_EXPIRY):
        user.password_expires_at = (now + timedelta(days=rules.password_expires_days)).replace(
            microsecond=0
        )
