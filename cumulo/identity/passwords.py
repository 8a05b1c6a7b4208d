"""Password and secret hashing with bcrypt, off the event loop (bcrypt releases the GIL)."""

from __future__ import annotations

import asyncio

import bcrypt

# bcrypt only reads the first 72 bytes; longer secrets are refused rather than truncated.
MAX_PASSWORD_BYTES = 72


def hash_password_sync(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


async def hash_password(password: str, rounds: int) -> str:
    return await asyncio.to_thread(hash_password_sync, password, rounds)


def _check(password: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False


async def check_password(password: str, hashed: str | None) -> bool:
    if not hashed or len(password.encode()) > MAX_PASSWORD_BYTES:
        return False
    return await asyncio.to_thread(_check, password, hashed)
