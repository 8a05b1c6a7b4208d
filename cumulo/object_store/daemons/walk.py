"""Walking what a device holds: partitions of objects, containers and accounts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def local_devices(devices: Path) -> list[Path]:
    try:
        return sorted(p for p in devices.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []


def partitions(device: Path, kind: str) -> Iterator[tuple[int, Path]]:
    base = device / kind
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return
    for name in names:
        if name.isdecimal():
            yield int(name), base / name


def hash_dirs(partition_dir: Path) -> Iterator[Path]:
    try:
        suffixes = os.listdir(partition_dir)
    except FileNotFoundError:
        return
    for suffix in suffixes:
        try:
            hashes = os.listdir(partition_dir / suffix)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name_hash in hashes:
            yield partition_dir / suffix / name_hash


def remove_empty(path: Path, stop: Path) -> None:
    """Remove path and its empty parents up to (not including) stop."""
    while path != stop and path.is_relative_to(stop):
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent
