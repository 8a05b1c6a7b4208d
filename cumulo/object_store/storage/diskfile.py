"""Objects on a device: each replica one file plus its metadata.

Layout (as Swift): <device>/objects[-<policy>]/<partition>/<hash[-3:]>/<hash>/<timestamp>.data
with a `<timestamp>.ts` tombstone for a delete and a `<timestamp>.meta` for a newer
metadata update. The metadata (JSON) is in the file's xattr, or in a sidecar
`<timestamp>.data.json` where the filesystem has no user xattrs. A write goes to a
temp file in <device>/tmp, is fsynced and renamed into place, so a reader sees the
whole object or none of it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

XATTR = "user.cumulo.metadata"
CHUNK = 1 << 20


class DeviceUnavailable(OSError):
    """The device is not mounted (its directory is gone): Swift's 507."""


class ObjectMissing(Exception):
    def __init__(self, timestamp: str | None = None, metadata: dict | None = None) -> None:
        super().__init__(timestamp)
        self.timestamp = timestamp  # of the tombstone, when deleted
        self.metadata = metadata or {}


class Quarantined(Exception):
    pass


def objects_dirname(policy_index: int) -> str:
    return "objects" if policy_index == 0 else f"objects-{policy_index}"


def hash_dir(device: Path, kind: str, part: int, name_hash: str) -> Path:
    # One join (pathlib parses each operand of `/`: four joins cost a small GET ~3 %).
    return device / f"{kind}/{part}/{name_hash[-3:]}/{name_hash}"


def check_device(device: Path) -> None:
    if not device.is_dir():
        raise DeviceUnavailable(errno.ENODEV, f"device {device.name} is not mounted")


def make_dirs(path: Path) -> bool:
    """mkdir -p, trying the leaf first (its parents usually exist: one syscall), then
    each missing parent once; True when the leaf was made now (it holds nothing yet)."""
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:
        make_dirs(path.parent)
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_metadata(fd: int, sidecar: Path, metadata: dict[str, Any]) -> bool:
    """Store metadata in the xattr; False when the filesystem has none (sidecar written)."""
    raw = json.dumps(metadata).encode()
    try:
        os.setxattr(fd, XATTR, raw)
        return True
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.E2BIG):
            raise
    sidecar.write_bytes(raw)
    return False


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        raw = os.getxattr(path, XATTR)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise
        raw = Path(f"{path}.json").read_bytes()
    return json.loads(raw)


class ObjectWriter:
    """One replica being written: a temp file, renamed into place by commit()."""

    def __init__(self, device: Path, datadir: Path) -> None:
        self.datadir = datadir
        self.tmp = device / "tmp" / uuid.uuid4().hex
        try:
            self._file = self.tmp.open("wb")
        except FileNotFoundError:
            check_device(device)
            self.tmp.parent.mkdir(exist_ok=True)
            self._file = self.tmp.open("wb")
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)

    def commit(self, metadata: dict[str, Any]) -> None:
        """The bytes and their metadata fsynced, renamed into place, the directory
        fsynced: on disk for good before this returns."""
        timestamp = metadata["X-Timestamp"]
        fresh = make_dirs(self.datadir)
        target = self.datadir / f"{timestamp}.data"
        self._file.flush()
        fd = self._file.fileno()
        if not set_metadata(fd, Path(f"{target}.json"), metadata):
            _fsync_file(Path(f"{target}.json"))
        os.fsync(fd)  # after the xattr: one fsync makes both durable
        self._file.close()
        os.replace(self.tmp, target)
        _fsync_dir(self.datadir)
        if not fresh:  # a directory made just now holds no older file
            cleanup_older(self.datadir)

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


def write_marker(device: Path, datadir: Path, timestamp: str, ext: str, metadata: dict) -> None:
    """A tombstone (.ts) or a metadata update (.meta): an empty file with metadata."""
    writer = ObjectWriter(device, datadir)
    metadata = {**metadata, "X-Timestamp": timestamp}
    fresh = make_dirs(datadir)
    target = datadir / f"{timestamp}{ext}"
    if not set_metadata(writer._file.fileno(), Path(f"{target}.json"), metadata):
        _fsync_file(Path(f"{target}.json"))
    os.fsync(writer._file.fileno())
    writer._file.close()
    os.replace(writer.tmp, target)
    _fsync_dir(datadir)
    if not fresh:
        cleanup_older(datadir)


def _files(datadir: Path) -> list[str]:
    try:
        return sorted((n for n in os.listdir(datadir) if not n.endswith(".json")), reverse=True)
    except FileNotFoundError:
        return []


def cleanup_older(datadir: Path) -> None:
    """Remove what the newest files make obsolete (a newer .meta keeps its .data)."""
    names = _files(datadir)
    newest_data = next((n for n in names if n.endswith((".data", ".ts"))), None)
    newest_meta = next((n for n in names if n.endswith(".meta")), None)
    for name in names:
        if name in (newest_data, newest_meta):
            continue
        _unlink_with_sidecar(datadir / name)
    if newest_meta and newest_data and newest_meta < newest_data:
        _unlink_with_sidecar(datadir / newest_meta)


def _unlink_with_sidecar(path: Path) -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.json").unlink(missing_ok=True)


@dataclass
class StoredObject:
    path: Path | None  # the .data file; None for a replica another host holds
    metadata: dict[str, Any]  # with a newer .meta's user metadata applied
    data_timestamp: str
    # A replica on another host: its bytes streamed from there when read
    # (remote.RemoteBody; storage/reading.py reads either kind).
    remote: Any = None


def open_object(datadir: Path) -> StoredObject:
    """The newest state of an object, or ObjectMissing (with the tombstone's time)."""
    names = _files(datadir)
    newest = next((n for n in names if n.endswith((".data", ".ts"))), None)
    if newest is None:
        raise ObjectMissing()
    path = datadir / newest
    try:
        metadata = read_metadata(path)
    except (OSError, ValueError):
        raise Quarantined(f"unreadable metadata in {path}") from None
    if newest.endswith(".ts"):
        raise ObjectMissing(metadata["X-Timestamp"], metadata)
    if os.path.getsize(path) != int(metadata["Content-Length"]):
        raise Quarantined(f"{path} is not as long as its metadata says")
    data_ts = metadata["X-Timestamp"]
    meta_name = next((n for n in names if n.endswith(".meta")), None)
    if meta_name and meta_name > newest:
        update = read_metadata(datadir / meta_name)
        metadata = {k: v for k, v in metadata.items() if not is_user_metadata(k)}
        metadata.update(update)
    return StoredObject(path, metadata, data_ts)


def is_user_metadata(key: str) -> bool:
    """What a POST replaces: user metadata and the headers an object may carry."""
    lower = key.lower()
    return lower.startswith("x-object-meta-") or lower in POST_HEADERS


# Headers a POST may set on an object (Swift's allowed_headers and X-Delete-At).
POST_HEADERS = {
    "content-type",
    "content-disposition",
    "content-encoding",
    "x-delete-at",
    "x-object-manifest",
    "x-static-large-object",
    "cache-control",
    "content-language",
    "expires",
    "x-robots-tag",
}


def quarantine(device: Path, kind: str, datadir: Path) -> Path:
    """Move a damaged object out of the way; the replicator restores a good copy."""
    target = device / "quarantined" / kind / f"{datadir.name}-{uuid.uuid4().hex[:8]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(datadir), target)
    return target


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
