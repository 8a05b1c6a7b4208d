"""The cloud's EC2 certificate: the RSA key bundled AMIs are encrypted to.

`euca-bundle-image`/`ec2-bundle-image` encrypt each bundle's AES key and IV with the
cloud's public certificate (`--ec2cert`); the cloud decrypts them with its private key
when the bundle is registered. Made once per state dir; the certificate is served at
GET /cloud-cert.pem on the EC2 port (it is public)."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

CERT_FILE, KEY_FILE = "cloud-cert.pem", "cloud-pk.pem"


def ensure(state_dir: Path) -> Path:
    """The directory holding the certificate and key, made on first use."""
    folder = state_dir / "ec2"
    folder.mkdir(mode=0o700, exist_ok=True)
    if (folder / CERT_FILE).exists() and (folder / KEY_FILE).exists():
        return folder
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cumulo EC2 cloud certificate")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_path = folder / KEY_FILE
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (folder / CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return folder


def certificate_pem(state_dir: Path) -> bytes:
    return (ensure(state_dir) / CERT_FILE).read_bytes()


def decrypt(state_dir: Path, data: bytes) -> bytes:
    """RSA PKCS#1 v1.5 decryption with the cloud's key (what the bundling tools use)."""
    pem = (ensure(state_dir) / KEY_FILE).read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.decrypt(data, padding.PKCS1v15())
