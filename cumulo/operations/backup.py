"""`cumulo backup DIR` / `cumulo restore DIR`: a consistent copy of a state dir, taken while
the cloud runs, and a new state dir made from it (on this machine or another).

SQLite databases are copied with SQLite's online backup API (a consistent snapshot even
while the cloud writes), everything else (config, Fernet and credential keys, image data,
volume files, guests' disks) file by file, sparse files kept sparse. What only makes sense
on the running host is left out: the lock/pid file, sockets, SQLite's WAL/SHM files (the
backup API already folded them in) and the network data plane's runtime files, which the
restored cloud's network agent writes anew.

Databases on PostgreSQL/MariaDB are not in the state dir: back them up with their own
tools (pg_dump / mariadb-dump) at the same time; `backup` says so.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cumulo.common.config import load_config

MANIFEST = "cumulo-backup.json"
SKIPPED_NAMES = {"cumulo.pid"}
SKIPPED_SUFFIXES = (".db-wal", ".db-shm", ".sock")
SKIPPED_DIRS = {Path("network") / "dhcp", Path("network") / "routers"}


@dataclass
class BackupReport:
    databases: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    server_database: str | None = None  # a URL (password hidden) to back up with its tools


class BackupError(Exception):
    pass


def _empty_or_new(path: Path) -> None:
    if path.exists() and any(path.iterdir()):
        raise BackupError(f"{path} is not empty")
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def _wanted(relative: Path, mode: int) -> bool:
    if not stat.S_ISREG(mode):
        return False  # sockets, fifos: runtime only
    if relative.name in SKIPPED_NAMES or relative.name.endswith(SKIPPED_SUFFIXES):
        return False
    return not any(parent in SKIPPED_DIRS for parent in relative.parents)


def _copy_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # cp keeps holes (volume files are sparse) and the mode (keys stay 0600).
    subprocess.run(
        ["cp", "--sparse=always", "--preserve=mode,timestamps", str(source), str(target)],
        check=True,
        capture_output=True,
    )


def _copy_database(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    target.chmod(stat.S_IMODE(source.stat().st_mode))


def _copy_tree(source_root: Path, target_root: Path, report: BackupReport) -> None:
    for dirpath, _dirnames, filenames in os.walk(source_root):
        for name in filenames:
            source = Path(dirpath) / name
            relative = source.relative_to(source_root)
            try:
                st = source.lstat()
            except FileNotFoundError:
                continue  # removed while we walked (a deleted image, a finished upload)
            if relative == Path(MANIFEST) or not _wanted(relative, st.st_mode):
                continue
            if relative.suffix == ".db" and relative.parent == Path("."):
                _copy_database(source, target_root / relative)
                report.databases.append(relative.stem)
            else:
                try:
                    _copy_file(source, target_root / relative)
                except subprocess.CalledProcessError:
                    if source.exists():
                        raise
                    continue
            report.files += 1
            report.bytes += st.st_size


def backup(state_dir: Path, target: Path) -> BackupReport:
    if not (state_dir / "cumulo.toml").exists():
        raise BackupError(f"{state_dir} is not a cumulo state dir")
    _empty_or_new(target)
    report = BackupReport()
    url = load_config(state_dir).database.url
    if url:
        report.server_database = url.split("@")[-1]
    _copy_tree(state_dir, target, report)
    manifest = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "state_dir": str(state_dir.resolve()),
        "databases": sorted(report.databases),
        "server_database": report.server_database,
        "files": report.files,
        "bytes": report.bytes,
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def restore(source: Path, state_dir: Path) -> BackupReport:
    if not (source / MANIFEST).exists():
        raise BackupError(f"{source} is not a cumulo backup (no {MANIFEST})")
    _empty_or_new(state_dir)
    report = BackupReport()
    _copy_tree(source, state_dir, report)
    return report
