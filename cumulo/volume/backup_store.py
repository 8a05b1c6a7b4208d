"""Volume backups as objects in the Object Storage, laid out as Cinder's Swift backup
driver lays them out, in the backup owner's account (`AUTH_<project>`, where its owner
sees them, as with Cinder's `backup_swift_auth = per_user`), written with the volume
service's token (the
service user holds Swift's reseller admin role, so the work never depends on a user's
token still being valid: a delete after a restart, an admin's restore):

    <container>/volume_<volume id>/<YYYYMMDDHHMMSS>/az_<zone>_backup_<backup id>-00001 ...
    <container>/<the same prefix>_metadata     what the backup holds (JSON, below)
    <container>/<the same prefix>_sha256file   a SHA-256 of every 32 KiB block

A full backup stores the extents of the volume that are not zeros (a restore starts
from a sparse file of zeros); an incremental one compares each block's SHA-256 with its
parent's and stores only the extents that changed. A restore applies the chain from the
full backup to the one asked for. Each extent is one object of at most OBJECT_SIZE bytes,
sent with its MD5 as ETag (the object store refuses a corrupted upload)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cumulo.common.faults import BadRequest
from cumulo.common.service_client import ServiceClient, ServiceError, url_path

BLOCK = 32 * 1024  # Cinder's backup_swift_block_size / sha block size
OBJECT_SIZE = 32 * 1024 * 1024  # the most one extent object holds
VERSION = "1.0.0"
ZERO_SHA = hashlib.sha256(bytes(BLOCK)).hexdigest()


def object_prefix(volume_id: str, backup_id: str, zone: str | None, when: str) -> str:
    return f"volume_{volume_id}/{when}/az_{zone or 'None'}_backup_{backup_id}"


class BackupStore:
    """The backups in one account, through the object store's API with a token that
    may write there (the volume service's: it holds the reseller admin role)."""

    def __init__(self, client: ServiceClient, token: str, account: str) -> None:
        self.client, self.token, self.account = client, token, account

    def _path(self, container: str, name: str = "") -> str:
        if not name:
            return url_path("/v1/{}/{}", self.account, container)
        return url_path("/v1/{}/{}/", self.account, container) + "/".join(
            url_path("{}", part) for part in name.split("/")
        )

    async def _put(self, container: str, name: str, data: bytes) -> None:
        await self.client.request(
            "PUT",
            self._path(container, name),
            self.token,
            content=data,
            headers={
                "ETag": hashlib.md5(data).hexdigest(),  # noqa: S324 - Swift's ETag
                "Content-Type": "application/octet-stream",
            },  # fmt: skip
            ok=(201,),
            timeout=None,
        )

    async def _get(self, container: str, name: str) -> bytes:
        response = await self.client.request(
            "GET", self._path(container, name), self.token, ok=(200,), timeout=None
        )
        return response.content

    # -- backup --------------------------------------------------------------------

    async def write(
        self,
        raw: Path,
        container: str,
        prefix: str,
        header: dict[str, Any],
        parent: tuple[str, str] | None,
    ) -> int:
        """Back up the raw image `raw` as objects under `prefix` (against `parent`:
        (container, prefix) of the backup it increments); the number of data objects."""
        await self.client.request(
            "PUT", self._path(container), self.token, ok=(201, 202), timeout=None
        )
        shas = await asyncio.to_thread(block_hashes, raw)
        if parent is not None:
            before = json.loads(await self._get(parent[0], f"{parent[1]}_sha256file"))["sha256s"]
            changed = [i for i, sha in enumerate(shas) if i >= len(before) or before[i] != sha]
        else:
            changed = [i for i, sha in enumerate(shas) if sha != ZERO_SHA]
        extents = []
        with raw.open("rb") as f:
            for number, (offset, length) in enumerate(runs(changed), start=1):
                data = await asyncio.to_thread(os.pread, f.fileno(), length, offset)
                data = data.ljust(length, b"\0")
                name = f"{prefix}-{number:05d}"
                await self._put(container, name, data)
                extents.append({name: {"offset": offset, "length": length,
                                       "md5": hashlib.md5(data).hexdigest(),  # noqa: S324
                                       "compression": "none"}})  # fmt: skip
        await self._put(container, f"{prefix}_sha256file",
                        json.dumps({"chunk_size": BLOCK, "sha256s": shas}).encode())  # fmt: skip
        metadata = {**header, "version": VERSION, "objects": extents,
                    "parent": parent[1] if parent else None}  # fmt: skip
        await self._put(container, f"{prefix}_metadata", json.dumps(metadata).encode())
        return len(extents)

    # -- restore --------------------------------------------------------------------

    async def apply(self, container: str, prefix: str, target: Path) -> dict[str, Any]:
        """Write one backup's extents into the raw image `target` (its chain's earlier
        backups applied before); its metadata object."""
        metadata = json.loads(await self._get(container, f"{prefix}_metadata"))
        fd = os.open(target, os.O_WRONLY)
        try:
            for entry in metadata["objects"]:
                ((name, extent),) = entry.items()
                data = await self._get(container, name)
                if len(data) != extent["length"] or (
                    hashlib.md5(data).hexdigest() != extent["md5"]  # noqa: S324
                ):
                    raise ValueError(f"backup object {name} does not match its metadata")
                await asyncio.to_thread(os.pwrite, fd, data, extent["offset"])
        finally:
            os.close(fd)
        return metadata

    # -- delete ---------------------------------------------------------------------

    async def delete(self, container: str, prefix: str) -> None:
        """Every object of the backup (a missing container or object is already gone)."""
        async for name in self._names(container, prefix):
            await self.client.request(
                "DELETE", self._path(container, name), self.token, ok=(204, 404)
            )

    async def _names(self, container: str, prefix: str) -> AsyncIterator[str]:
        marker = ""
        while True:
            try:
                response = await self.client.request(
                    "GET", self._path(container), self.token, ok=(200, 204),
                    params={"format": "json", "prefix": prefix, "marker": marker},
                )  # fmt: skip
            except ServiceError as exc:
                if exc.status == 404:
                    return
                raise
            rows = response.json() if response.status_code == 200 else []
            if not rows:
                return
            for row in rows:
                yield row["name"]
            marker = rows[-1]["name"]


def block_hashes(raw: Path) -> list[str]:
    """A SHA-256 per BLOCK of the file; the holes of a sparse file are not read."""
    size = raw.stat().st_size
    shas = [ZERO_SHA] * ((size + BLOCK - 1) // BLOCK)
    with raw.open("rb") as f:
        fd = f.fileno()
        for start, end in data_regions(fd, size):
            first = start // BLOCK
            for i in range(first, (end + BLOCK - 1) // BLOCK):
                block = os.pread(fd, BLOCK, i * BLOCK)
                shas[i] = hashlib.sha256(block.ljust(BLOCK, b"\0")).hexdigest()
    return shas


def data_regions(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of the parts of the file that hold data (SEEK_DATA/SEEK_HOLE; the
    whole file where the filesystem cannot tell)."""
    regions, offset = [], 0
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            regions.append((start, end))
            offset = end
    except (AttributeError, OSError):
        return [(0, size)]
    return regions


def runs(blocks: list[int]) -> list[tuple[int, int]]:
    """(offset, length) extents of consecutive block numbers, each at most OBJECT_SIZE."""
    extents: list[tuple[int, int]] = []
    per_object = OBJECT_SIZE // BLOCK
    start = previous = None
    for i in blocks:
        if start is not None and i == previous + 1 and i - start < per_object:
            previous = i
            continue
        if start is not None:
            extents.append((start * BLOCK, (previous - start + 1) * BLOCK))
        start = previous = i
    if start is not None:
        extents.append((start * BLOCK, (previous - start + 1) * BLOCK))
    return extents


async def backup_chain(session: Any, backup: Any) -> list[list[str]]:
    """[container, prefix] of the backups a restore of `backup` applies, from the full
    one to it (rows of cumulo.volume.models.Backup)."""
    chain = [[backup.container, backup.object_prefix]]
    parent_id = backup.parent_id
    while parent_id is not None:
        parent = await session.get(type(backup), parent_id)
        if parent is None:
            raise BadRequest(f"Invalid backup: its parent backup {parent_id} is gone.")
        chain.insert(0, [parent.container, parent.object_prefix])
        parent_id = parent.parent_id
    return chain
