"""Encrypted volumes: a volume of an encrypted type is a LUKS container, its key a secret
of the Key Manager (Barbican's API) owned by the volume's project, as Cinder keeps it
with castellan.

- The API makes the key when it makes the volume (random bytes of the type's key_size,
  stored with the caller's token), or a copy of the source's key for a volume made from
  an encrypted snapshot or volume (their bytes are a copy of the container, so the same
  passphrase opens them: Cinder's clone of the key); the key goes with the volume.
- The LUKS passphrase is the key in hex, as Nova and os-brick use it
  (`binascii.hexlify(key)`): the backend formats the container with it, Compute opens it
  (QEMU's native LUKS driver) with the same passphrase fetched with the user's token.
- `luks` is LUKS1, `luks2` LUKS2, both formatted by cryptsetup (no device-mapper needed
  to format); QEMU's LUKS driver opens LUKS1 (and writes images into it), only a host's
  dm-crypt opens LUKS2: it is made and kept here, but an image cannot be written into
  one on a backend without device-mapper.
- The passphrase is a random key, not something a person typed: the PBKDF's work
  factor adds nothing to its strength, so containers are made with a small one (an
  attach does not spend seconds deriving it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cumulo.common.key_manager_client import secret_payload
from cumulo.common.service_client import ServiceClient

# Cinder's provider names, and the class paths older clouds stored for them.
PROVIDERS = {
    "luks": "luks",
    "luks2": "luks2",
    "LuksEncryptor": "luks",
    "nova.volume.encryptors.luks.LuksEncryptor": "luks",
    "os_brick.encryptors.luks.LuksEncryptor": "luks",
    "Luks2Encryptor": "luks2",
    "os_brick.encryptors.luks.Luks2Encryptor": "luks2",
}
DEFAULT_CIPHER = "aes-xts-plain64"
DEFAULT_KEY_SIZE = 256
LUKS1_MAGIC = b"LUKS\xba\xbe\x00\x01"
LUKS2_MAGIC = b"LUKS\xba\xbe\x00\x02"
# LUKS2's default metadata + keyslots area: the payload starts 16 MiB in.
LUKS2_HEADER = 16 << 20
# PBKDF2 iterations of a container's keyslot (cryptsetup's least).
PBKDF2_ITERATIONS = 1000


class EncryptionError(Exception):
    """The encryption asked for cannot be done here (a 400 at the API)."""


@dataclass(frozen=True)
class Encryption:
    """How an encrypted volume's data is kept: a LUKS container of `provider` (luks,
    luks2) with `cipher`/`key_size`, opened by `passphrase` (empty where only the
    container's bytes are copied)."""

    provider: str
    cipher: str = DEFAULT_CIPHER
    key_size: int = DEFAULT_KEY_SIZE
    passphrase: str = field(default="", repr=False)


def provider_of(name: str | None) -> str:
    provider = PROVIDERS.get(name or "")
    if provider is None:
        raise EncryptionError(
            f"Invalid input received: encryption provider {name!r} is not supported "
            "(supported: luks, luks2)."
        )
    return provider


@dataclass(frozen=True)
class CipherSpec:
    algorithm: str  # aes
    mode: str  # xts, cbc
    ivgen: str  # plain64, plain, essiv
    ivgen_hash: str | None  # essiv's hash (sha256)


def parse_cipher(cipher: str | None) -> CipherSpec:
    """dm-crypt's cipher string (`aes-xts-plain64`, `aes-cbc-essiv:sha256`)."""
    text = cipher or DEFAULT_CIPHER
    parts = text.split("-")
    if len(parts) != 3:
        raise EncryptionError(f"Invalid input received: cipher {text!r} is not alg-mode-iv.")
    algorithm, mode, iv = parts
    ivgen, _, ivgen_hash = iv.partition(":")
    if (
        algorithm != "aes"
        or mode not in ("xts", "cbc")
        or ivgen not in ("plain", "plain64", "essiv")
    ):
        raise EncryptionError(
            f"Invalid input received: cipher {text!r} is not supported (aes with xts or "
            "cbc, and plain, plain64 or essiv)."
        )
    if (ivgen == "essiv") != bool(ivgen_hash):
        raise EncryptionError(f"Invalid input received: cipher {text!r}: essiv takes a hash.")
    return CipherSpec(algorithm, mode, ivgen, ivgen_hash or None)


def check_spec(cipher: str | None, key_size: int | None) -> None:
    """400 for what no container can be made with (checked before anything is made)."""
    spec = parse_cipher(cipher)
    bits = key_size or DEFAULT_KEY_SIZE
    aes_bits = bits // 2 if spec.mode == "xts" else bits
    if aes_bits not in (128, 192, 256) or (spec.mode == "xts" and bits % 2):
        raise EncryptionError(
            f"Invalid input received: key_size {bits} does not fit cipher "
            f"{cipher or DEFAULT_CIPHER}."
        )


def cryptsetup_format_args(encryption: Encryption, key_file: Path, target: Path) -> list[str]:
    """`cryptsetup luksFormat` of a LUKS1 (luks) or LUKS2 (luks2) container."""
    version = "luks2" if encryption.provider == "luks2" else "luks1"
    return [
        "cryptsetup", "luksFormat", "--type", version, "--batch-mode",
        "--cipher", encryption.cipher, "--key-size", str(encryption.key_size),
        "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", str(PBKDF2_ITERATIONS),
        "--key-file", str(key_file), str(target),
    ]  # fmt: skip


@contextlib.contextmanager
def secret_file(directory: Path, passphrase: str) -> Iterator[Path]:
    """The passphrase in a file only its owner reads, for qemu-img's `--object secret,
    file=` and cryptsetup's `--key-file` (never on a command line: `ps` shows those)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix="key-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(passphrase)
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def payload_offset(path: Path) -> int:
    """Where a LUKS container's encrypted payload starts (bytes), from its header: LUKS1's
    payload-offset (sectors), LUKS2's first data segment (its JSON metadata)."""
    with path.open("rb") as f:
        header = f.read(4096)
        if header.startswith(LUKS1_MAGIC):
            return struct.unpack(">I", header[104:108])[0] * 512
        if header.startswith(LUKS2_MAGIC):
            header_size = struct.unpack(">Q", header[8:16])[0]
            metadata = json.loads(f.read(header_size - 4096).split(b"\0", 1)[0])
            segments = metadata["segments"]
            return min(int(s["offset"]) for s in segments.values())
    raise ValueError(f"{path.name} is not a LUKS container")


def luks_version(path: Path) -> str | None:
    """The provider a container's header says it is (luks for LUKS1, luks2), None when
    the file is no LUKS container."""
    with path.open("rb") as f:
        magic = f.read(len(LUKS1_MAGIC))
    return {LUKS1_MAGIC: "luks", LUKS2_MAGIC: "luks2"}.get(magic)


def image_key_id(image: dict[str, Any] | None) -> str | None:
    """An image uploaded from an encrypted volume holds the container's bytes and names
    a clone of the volume's key (Cinder's cinder_encryption_key_id property)."""
    key = (image or {}).get("cinder_encryption_key_id")
    return key if isinstance(key, str) and key else None


def passphrase_of(key: bytes) -> str:
    return key.hex()


# -- the Key Manager (Barbican v1), called with the user's token ---------------------


def key_id_of(secret_ref: str) -> str:
    return secret_ref.rstrip("/").rsplit("/", 1)[-1]


async def create_key(
    client: ServiceClient, token: str, key_size: int, name: str, key: bytes | None = None
) -> str:
    """A new symmetric secret holding `key` (or fresh random bytes): its id."""
    key = key if key is not None else secrets.token_bytes(max(key_size // 8, 16))
    body: dict[str, Any] = {
        "name": name,
        "secret_type": "symmetric",
        "algorithm": "aes",
        "bit_length": len(key) * 8,
        "mode": "xts",
        "payload": base64.b64encode(key).decode(),
        "payload_content_type": "application/octet-stream",
        "payload_content_encoding": "base64",
    }
    made = await client.json("POST", "/v1/secrets", token, json=body)
    return key_id_of(made["secret_ref"])


async def clone_key(client: ServiceClient, token: str, key_id: str, name: str) -> str:
    """A copy of a key under a new id (the new volume's bytes are a copy of the old
    container: the same passphrase opens it)."""
    key = await secret_payload(client, token, key_id)
    return await create_key(client, token, len(key) * 8, name, key)
