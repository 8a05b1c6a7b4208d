"""Encryption at rest and key generation (Barbican's simple_crypto model).

A master key-encryption key lives in the state dir (`key-manager/master.key`, 32
random bytes, mode 0600, made on first start). Each project has its own 256-bit key,
stored in the database only wrapped (AES-GCM) by the master key; each payload is
encrypted with AES-GCM under its project's key, with the secret's id as associated
data (a cipher text copied onto another secret's row does not decrypt).
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
MASTER_KEY_FILE = "master.key"


class DecryptionError(Exception):
    """A cipher text that does not decrypt under the key given (tampered, or wrong key)."""


def load_master_key(directory: Path) -> bytes:
    """The master key in `directory`, generated on first use (directory 0700, file 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / MASTER_KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(KEY_BYTES)
        # O_EXCL: two processes starting at once keep the first one's key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes()
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(key)
    if len(key) != KEY_BYTES:
        raise RuntimeError(f"{path} is not a {KEY_BYTES}-byte key")
    return key


def encrypt(key: bytes, plain: bytes, associated: bytes) -> str:
    """base64(nonce || AES-GCM(key, plain, associated)), the tag included."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plain, associated)).decode()


def decrypt(key: bytes, sealed: str, associated: bytes) -> bytes:
    try:
        raw = base64.b64decode(sealed, validate=True)
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError("the cipher text does not decrypt under this key") from exc


def new_project_key(master: bytes, project_id: str) -> tuple[bytes, str]:
    """A fresh project key: (the key, the key wrapped by the master key)."""
    key = secrets.token_bytes(KEY_BYTES)
    return key, encrypt(master, key, project_id.encode())


def unwrap_project_key(master: bytes, project_id: str, wrapped: str) -> bytes:
    return decrypt(master, wrapped, project_id.encode())


# -- generation (orders) -----------------------------------------------------------

# What a key order may ask for: algorithm -> allowed bit lengths (None: any multiple of 8).
SYMMETRIC_ALGORITHMS: dict[str, tuple[int, ...] | None] = {
    "aes": (128, 192, 256),
    "hmacsha1": None,
    "hmacsha256": None,
    "hmacsha384": None,
    "hmacsha512": None,
}
RSA_BIT_LENGTHS = (1024, 2048, 3072, 4096)
MAX_SYMMETRIC_BITS = 4096


def symmetric_supported(algorithm: str, bit_length: int) -> bool:
    allowed = SYMMETRIC_ALGORITHMS.get(algorithm.lower(), ())
    if allowed is None:
        return 0 < bit_length <= MAX_SYMMETRIC_BITS and bit_length % 8 == 0
    return bit_length in allowed


def generate_symmetric_key(bit_length: int) -> bytes:
    return secrets.token_bytes(bit_length // 8)


def generate_rsa_key_pair(bit_length: int, passphrase: str | None = None) -> tuple[bytes, bytes]:
    """(private key PKCS#8 PEM, encrypted with `passphrase` when given; public key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bit_length)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public
