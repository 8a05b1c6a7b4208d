"""The filesystem store and the staging writer: bytes and hashes exact, nothing leaked."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from cumulo.image.store import CHUNK, FilesystemStore, TooLarge, write_staged

DATA = os.urandom(CHUNK * 2 + 12345)


async def _pieces(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("piece", [1000, 256 << 10, CHUNK * 3])
async def test_staged_data_and_hashes_match_whatever_the_piece_size(tmp_path: Path, piece: int):
    written = await write_staged(_pieces(DATA, piece), tmp_path / "staged", 1 << 40)
    assert (tmp_path / "staged").read_bytes() == DATA
    assert written.size == len(DATA)
    assert written.checksum == hashlib.md5(DATA).hexdigest()
    assert written.os_hash_value == hashlib.sha512(DATA).hexdigest()


async def test_too_large_leaves_no_partial_file(tmp_path: Path):
    with pytest.raises(TooLarge):
        await write_staged(_pieces(DATA, 1 << 20), tmp_path / "staged", CHUNK)
    assert not (tmp_path / "staged").exists()


async def test_reads_whole_and_ranges(tmp_path: Path):
    store = FilesystemStore(tmp_path / "store")
    (tmp_path / "staged").write_bytes(DATA)
    location = await store.add("img", tmp_path / "staged")
    assert b"".join([c async for c in store.read(location)]) == DATA
    start, end = CHUNK - 7, 2 * CHUNK + 99
    assert b"".join([c async for c in store.read(location, start, end)]) == DATA[start:end]
    assert [c async for c in store.read(location, 5, 5)] == []


async def test_a_download_stopped_early_closes_its_file(tmp_path: Path):
    store = FilesystemStore(tmp_path / "store")
    (tmp_path / "staged").write_bytes(DATA)
    location = await store.add("img", tmp_path / "staged")
    before = _open_fds()
    reader = store.read(location)
    assert await anext(reader) == DATA[:CHUNK]  # the next chunk is being read ahead
    await reader.aclose()
    for _ in range(100):
        if _open_fds() == before:
            break
        await asyncio.sleep(0.01)
    assert _open_fds() == before
