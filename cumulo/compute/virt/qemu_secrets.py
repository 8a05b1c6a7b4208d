"""The passphrases of a QEMU guest's encrypted volumes, kept on its host.

As libvirt keeps the secrets Nova defines for encrypted volumes on the compute host, so
that a guest starts again (power on, hard reboot, a host restart) without asking the
Key Manager: one root-only file per guest (secrets.json, mode 0600) in its instance
directory beside guest.json (which names only the secret objects' ids), a secret
removed when its volume is detached, the whole file with the guest.

QEMU reads a passphrase from a file of its own (`-object secret,file=`, or QMP
`object-add`) that exists only while it starts or adds the object: written 0600,
removed right after, so no passphrase is on a command line or left in a stray file.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from cumulo.compute.virt.driver import DriverError

SECRETS = "secrets.json"


def _write_private(path: Path, data: bytes) -> None:
    """`path` holding `data`, readable by its owner only from its first byte on."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load(directory: Path) -> dict[str, str]:
    """The guest's passphrases by secret id."""
    try:
        return json.loads((directory / SECRETS).read_text())
    except FileNotFoundError:
        return {}


def _save(directory: Path, secrets: dict[str, str]) -> None:
    path = directory / SECRETS
    if not secrets:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".part")
    _write_private(tmp, json.dumps(secrets).encode())
    tmp.replace(path)


def keep(directory: Path, secrets: dict[str, str]) -> None:
    """These passphrases kept (by secret id) beside the guest's others."""
    if secrets:
        _save(directory, {**load(directory), **secrets})


def forget(directory: Path, *secret_ids: str | None) -> None:
    kept = load(directory)
    if any(s in kept for s in secret_ids):
        _save(directory, {k: v for k, v in kept.items() if k not in secret_ids})


@contextlib.contextmanager
def secret_files(directory: Path, secret_ids: Iterable[str]) -> Iterator[dict[str, Path]]:
    """A 0600 file holding each passphrase for QEMU to read (by secret id), removed when
    the block ends; DriverError for a secret this host does not keep."""
    kept = load(directory)
    files: dict[str, Path] = {}
    try:
        for secret_id in secret_ids:
            if secret_id not in kept:
                raise DriverError(
                    f"the passphrase of encrypted volume secret {secret_id} is not kept on "
                    "this host: attach the volume again"
                )
            files[secret_id] = directory / f"{secret_id}.key"
            _write_private(files[secret_id], kept[secret_id].encode())
        yield files
    finally:
        for path in files.values():
            path.unlink(missing_ok=True)
