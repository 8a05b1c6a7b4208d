"""Password and secret hashing with bcrypt, off the event loop (bcrypt releases the GIL).

bcrypt runs on its own pool of one thread per core: more threads cannot make a
CPU-bound hash faster, and a burst of logins then never takes the default
executor's threads from the rest of the process.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import bcrypt

# bcrypt only reads the first 72 bytes; longer secrets are refused rather than truncated.
MAX_PASSWORD_BYTES = 72

_BCRYPT_POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="bcrypt")


def hash_password_sync(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


async def hash_password(password: str, rounds: int) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_BCRYPT_POOL, hash_password_sync, password, rounds)


def _check(password: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False


async def check_password(password: str, hashed: str | None) -> bool:
    if not hashed or len(password.encode()) > MAX_PASSWORD_BYTES:
        return False
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_BCRYPT_POOL, _check, password, hashed)
