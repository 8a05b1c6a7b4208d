"""The Key Manager's encryption at rest and key generation: the master key file, project
keys wrapped by it, payloads sealed under a project key and bound to their secret."""

from __future__ import annotations

import base64
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from cumulo.key_manager import crypto


def test_master_key_is_made_once_with_owner_only_modes(tmp_path):
    directory = tmp_path / "key-manager"
    first = crypto.load_master_key(directory)
    assert len(first) == 32
    assert stat.S_IMODE((directory / "master.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert crypto.load_master_key(directory) == first


def test_a_master_key_file_of_the_wrong_size_is_refused(tmp_path):
    (tmp_path / "master.key").write_bytes(b"short")
    with pytest.raises(RuntimeError):
        crypto.load_master_key(tmp_path)


def test_project_key_unwraps_only_with_its_master_key_and_project():
    master = bytes(range(32))
    key, wrapped = crypto.new_project_key(master, "project-a")
    assert key not in base64.b64decode(wrapped)
    assert crypto.unwrap_project_key(master, "project-a", wrapped) == key
    with pytest.raises(crypto.DecryptionError):
        crypto.unwrap_project_key(master, "project-b", wrapped)
    with pytest.raises(crypto.DecryptionError):
        crypto.unwrap_project_key(bytes(32), "project-a", wrapped)


def test_payload_round_trips_every_byte_and_is_bound_to_its_secret():
    key = bytes(32)
    payload = bytes(range(256)) * 3
    sealed = crypto.encrypt(key, payload, b"secret-1")
    assert payload not in base64.b64decode(sealed)
    assert crypto.encrypt(key, payload, b"secret-1") != sealed  # a fresh nonce each time
    assert crypto.decrypt(key, sealed, b"secret-1") == payload
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(key, sealed, b"secret-2")
    raw = base64.b64decode(sealed)
    tampered = base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode()
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(key, tampered, b"secret-1")
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(key, "not base64!", b"secret-1")


@pytest.mark.parametrize(
    ("algorithm", "bits", "supported"),
    [
        ("aes", 128, True),
        ("AES", 256, True),
        ("aes", 192, True),
        ("aes", 512, False),
        ("aes", 100, False),
        ("hmacsha256", 256, True),
        ("hmacsha256", 12, False),
        ("des", 64, False),
    ],
)
def test_symmetric_generation_supports_what_simple_crypto_does(algorithm, bits, supported):
    assert crypto.symmetric_supported(algorithm, bits) is supported


def test_generated_symmetric_key_has_the_bit_length_asked_for():
    assert len(crypto.generate_symmetric_key(256)) == 32
    assert crypto.generate_symmetric_key(128) != crypto.generate_symmetric_key(128)


def test_rsa_key_pair_is_pem_and_the_private_key_needs_its_passphrase():
    private, public = crypto.generate_rsa_key_pair(1024, "open sesame")
    assert private.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----")
    key = serialization.load_pem_private_key(private, password=b"open sesame")
    assert key.key_size == 1024
    loaded_public = serialization.load_pem_public_key(public)
    assert loaded_public.public_numbers() == key.public_key().public_numbers()
    plain, _ = crypto.generate_rsa_key_pair(1024)
    assert plain.startswith(b"-----BEGIN PRIVATE KEY-----")
