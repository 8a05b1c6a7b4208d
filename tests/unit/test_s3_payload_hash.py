"""The S3 gateway's SHA-256 of a streamed body (hashed in a worker thread a MiB at a
time): the same digest as hashlib's of the whole body, whatever the pieces."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random

import pytest

from cumulo.object_store.s3.gateway import HASH_BATCH, INLINE_HASH, PayloadHash


@pytest.mark.parametrize(
    "size",
    [0, 1, 4096, INLINE_HASH - 1, INLINE_HASH, HASH_BATCH, HASH_BATCH + INLINE_HASH + 7,
     3 * HASH_BATCH + 100],
)  # fmt: skip
def test_payload_hash_is_the_bodys_sha256(size: int):
    body = os.urandom(size)
    rng = random.Random(size)

    async def streamed() -> tuple[str, str]:
        digest = PayloadHash()
        at = 0
        while at < len(body):
            step = rng.choice((1, 100, 65536, 300_000, HASH_BATCH))
            await digest.update(body[at : at + step])
            at += step
        await digest.update(b"")
        first = await digest.hexdigest()
        return first, await digest.hexdigest()  # asked again (the last message twice)

    first, again = asyncio.run(streamed())
    assert first == again == hashlib.sha256(body).hexdigest()
