"""The config drive: an ISO9660 filesystem labelled config-2 holding the metadata files.

Laid out as Nova's (openstack/latest/meta_data.json, ec2/latest/meta-data.json, ...):
cloud-init and the tiny test guest find it by its label. Rock Ridge and Joliet names
keep the file names exactly as given (lower case, dashes, dots).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import pycdlib

LABEL = "config-2"


class ConfigDriveError(ValueError):
    pass


def build_config_drive(files: Mapping[str, bytes], target: Path | str) -> None:
    """Write an ISO with `files` (relative path -> content) to `target`."""
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=4,
        joliet=3,
        rock_ridge="1.09",
        vol_ident=LABEL,
        app_ident_str="cumulo",
    )
    try:
        directories: set[PurePosixPath] = set()
        paths = {_relative(name): data for name, data in files.items()}
        for path in paths:
            directories.update(p for p in path.parents if p != PurePosixPath("."))
        iso_names = _IsoNames()
        for directory in sorted(directories, key=lambda p: len(p.parts)):
            iso.add_directory(
                iso_names.of(directory), rr_name=directory.name, joliet_path=f"/{directory}"
            )
        for path, data in sorted(paths.items()):
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                iso_names.of(path),
                rr_name=path.name,
                joliet_path=f"/{path}",
            )
        tmp = Path(f"{target}.part")
        iso.write(str(tmp))
        tmp.replace(target)
    finally:
        iso.close()


def read_config_drive(source: Path | str) -> dict[str, bytes]:
    """Every file of a config drive by its Rock Ridge path (for tests and diagnostics)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(source))
    try:
        found: dict[str, bytes] = {}
        for root, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                path = f"{root.rstrip('/')}/{name}"
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path=path)
                found[path.lstrip("/")] = out.getvalue()
        return found
    finally:
        iso.close()


def volume_label(source: Path | str) -> str:
    iso = pycdlib.PyCdlib()
    iso.open(str(source))
    try:
        return iso.pvd.volume_identifier.decode().strip()
    finally:
        iso.close()


def _relative(name: str) -> PurePosixPath:
    parts = name.lstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ConfigDriveError(f"bad config drive path {name!r}")
    return PurePosixPath(*parts)


class _IsoNames:
    """Plain ISO9660 names (upper case, unique per directory); Rock Ridge keeps the real ones."""

    def __init__(self) -> None:
        self.names: dict[PurePosixPath, str] = {PurePosixPath("."): ""}

    def of(self, path: PurePosixPath) -> str:
        if path not in self.names:
            parent = self.names[path.parent]
            base = path.name.upper().replace("-", "_")
            name, n = base, 1
            while f"{parent}/{name}" in self.names.values():
                n += 1
                name = f"{base}{n}"
            self.names[path] = f"{parent}/{name}"
        return self.names[path]
