"""Certificates and image signatures made the way a user makes them for signed images
(Glance's and Nova's guides, with `cryptography` instead of openssl): a CA, a signing
certificate it issues, and the four img_signature properties of some data."""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

from cumulo.common.image_signatures import HASH_METHODS

KEY_TYPES = ("RSA-PSS", "DSA", "ECC_SECP384R1", "ECC_SECP521R1")


def new_key(key_type: str = "RSA-PSS") -> Any:
    if key_type == "RSA-PSS":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "DSA":
        return dsa.generate_private_key(key_size=2048)
    curve = {"ECC_SECP384R1": ec.SECP384R1(), "ECC_SECP521R1": ec.SECP521R1()}[key_type]
    return ec.generate_private_key(curve)


@dataclass
class Issued:
    key: Any
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def issue(
    name: str,
    *,
    issuer: Issued | None = None,
    ca: bool = False,
    path_length: int | None = None,
    key_type: str = "RSA-PSS",
    days: int = 30,
    not_before: datetime.datetime | None = None,
) -> Issued:
    """A certificate for `name`, signed by issuer (None: self-signed). ca: it may sign
    certificates (basic constraints CA, key usage keyCertSign)."""
    key = new_key(key_type)
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )  # fmt: skip
    )
    signer = issuer.key if issuer else key
    return Issued(key, builder.sign(signer, hashes.SHA256()))


def signature(data: bytes, key: Any, hash_method: str = "SHA-256") -> str:
    """base64 of data's signature with key, as cursive verifies it (RSA-PSS with the
    maximum salt length, ECDSA, DSA)."""
    algorithm = HASH_METHODS[hash_method]()
    digest = hashes.Hash(algorithm)
    digest.update(data)
    prehashed = utils.Prehashed(algorithm)
    if isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(padding.MGF1(algorithm), padding.PSS.MAX_LENGTH)
        raw = key.sign(digest.finalize(), pss, prehashed)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(digest.finalize(), ec.ECDSA(prehashed))
    else:
        raw = key.sign(digest.finalize(), prehashed)
    return base64.b64encode(raw).decode()


def signature_properties(
    data: bytes,
    signer: Issued,
    cert_id: str,
    key_type: str = "RSA-PSS",
    hash_method: str = "SHA-256",
) -> dict[str, str]:
    """The four image properties of data signed by signer (its certificate `cert_id`)."""
    return {
        "img_signature": signature(data, signer.key, hash_method),
        "img_signature_hash_method": hash_method,
        "img_signature_key_type": key_type,
        "img_signature_certificate_uuid": cert_id,
    }
