"""Signed images: the signature of an image's data and the certificates behind it.

An image is signed when it carries the four properties Glance and Nova read (cursive's
rules): `img_signature` (base64), `img_signature_hash_method` (SHA-224/256/384/512),
`img_signature_key_type` (RSA-PSS, DSA, ECC_SECP384R1, ECC_SECP521R1) and
`img_signature_certificate_uuid` (an X.509 certificate in the Key Manager). The Image
service checks the signature over uploaded data; compute hosts check it again over the
data they download, and, given trusted certificates, that the signing certificate
chains up to one of them (`verify_certificate`).

Both read certificates with the caller's token; every failure is a SignatureError whose
message is cursive's ("Signature verification for the image failed: <reason>.").
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa, utils
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtensionOID

from cumulo.common.key_manager_client import secret_payload
from cumulo.common.service_client import ServiceClient, ServiceError, url_path

LOG = logging.getLogger(__name__)

SIGNATURE = "img_signature"
HASH_METHOD = "img_signature_hash_method"
KEY_TYPE = "img_signature_key_type"
CERT_UUID = "img_signature_certificate_uuid"
PROPERTIES = (SIGNATURE, HASH_METHOD, KEY_TYPE, CERT_UUID)

HASH_METHODS: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA-224": hashes.SHA224,
    "SHA-256": hashes.SHA256,
    "SHA-384": hashes.SHA384,
    "SHA-512": hashes.SHA512,
}
with warnings.catch_warnings():  # cryptography deprecates DSA; cursive still offers it
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    _DSA_PUBLIC_KEY = dsa.DSAPublicKey
# cursive's key types this cryptography still has (its SECT* binary curves are gone).
KEY_TYPES: dict[str, type] = {
    "RSA-PSS": rsa.RSAPublicKey,
    "DSA": _DSA_PUBLIC_KEY,
    "ECC_SECP384R1": ec.EllipticCurvePublicKey,
    "ECC_SECP521R1": ec.EllipticCurvePublicKey,
}


class SignatureError(Exception):
    """The image's signature or certificate does not hold (cursive's message)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"Signature verification for the image failed: {reason}.")


def is_signed(properties: Mapping[str, Any]) -> bool:
    """All four signature properties are there (Glance verifies only then)."""
    return all(properties.get(name) is not None for name in PROPERTIES)


def has_signature_properties(properties: Mapping[str, Any]) -> bool:
    """Any of the four is there (a compute host that verifies then wants all four)."""
    return any(properties.get(name) is not None for name in PROPERTIES)


def missing_property(properties: Mapping[str, Any]) -> str | None:
    # cursive names the certificate property img_signature_uuid in this message.
    names = {CERT_UUID: "img_signature_uuid"}
    for name in (CERT_UUID, HASH_METHOD, SIGNATURE, KEY_TYPE):
        if properties.get(name) is None:
            return names.get(name, name)
    return None


# -- certificates -------------------------------------------------------------------


def load_certificate(payload: bytes) -> x509.Certificate:
    """An X.509 certificate stored as PEM or DER (Barbican keeps what it was given)."""
    try:
        if payload.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(payload)
        return x509.load_der_x509_certificate(payload)
    except ValueError as exc:
        raise SignatureError(f"The certificate could not be read: {exc}") from None


async def fetch_certificate(
    key_manager: ServiceClient | None, token: str, cert_id: str
) -> x509.Certificate:
    """The certificate `cert_id` from the Key Manager, read with the caller's token."""
    if key_manager is None:
        raise SignatureError(f"Unable to retrieve certificate with ID: {cert_id}")
    try:
        meta = await key_manager.json("GET", url_path("/v1/secrets/{}", cert_id), token)
        if meta.get("secret_type") != "certificate":
            # castellan's object for any other secret type is not X.509.
            raise SignatureError(
                f"Invalid certificate format: {meta.get('secret_type') or 'unknown'}"
            )
        payload = await secret_payload(key_manager, token, cert_id)
    except ServiceError as exc:
        if exc.status == 404:
            raise SignatureError(f"Certificate not found with ID: {cert_id}") from None
        LOG.warning("certificate %s could not be read (%s)", cert_id, exc.status)
        raise SignatureError(f"Unable to retrieve certificate with ID: {cert_id}") from None
    return load_certificate(payload)


def within_valid_dates(cert: x509.Certificate, now: datetime.datetime | None = None) -> bool:
    now = now or datetime.datetime.now(datetime.UTC)
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def check_valid_dates(cert: x509.Certificate, now: datetime.datetime | None = None) -> None:
    if not within_valid_dates(cert, now):
        raise SignatureError("The certificate is outside its valid date range")


# -- the data's signature -------------------------------------------------------------


@dataclass
class Verifier:
    """Hashes the data as it comes (update), then checks the signature (verify)."""

    signature: bytes
    algorithm: hashes.HashAlgorithm
    public_key: Any

    def __post_init__(self) -> None:
        self._hash = hashes.Hash(self.algorithm)

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def verify(self) -> None:
        digest = self._hash.finalize()
        prehashed = utils.Prehashed(self.algorithm)
        key = self.public_key
        try:
            if isinstance(key, rsa.RSAPublicKey):
                pss = padding.PSS(padding.MGF1(self.algorithm), padding.PSS.MAX_LENGTH)
                key.verify(self.signature, digest, pss, prehashed)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(self.signature, digest, ec.ECDSA(prehashed))
            else:
                key.verify(self.signature, digest, prehashed)
        except (InvalidSignature, UnsupportedAlgorithm, ValueError):
            raise SignatureError("Signature verification failed") from None


@dataclass(frozen=True)
class SignatureProperties:
    """An image's signature properties, checked."""

    signature: bytes
    hash_method: str
    key_type: str
    cert_id: str


def signature_properties(properties: Mapping[str, Any]) -> SignatureProperties:
    """The signature properties checked as cursive's get_verifier does, before any
    certificate or data is read."""
    missing = missing_property(properties)
    if missing:
        raise SignatureError(
            "Required image properties for signature verification do not exist. "
            f"Cannot verify signature. Missing property: {missing}"
        )
    try:
        signature = base64.b64decode(str(properties[SIGNATURE]), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("The signature data was not properly encoded using base64") from None
    method = str(properties[HASH_METHOD])
    if method not in HASH_METHODS:
        raise SignatureError(f"Invalid signature hash method: {method}")
    key_type = str(properties[KEY_TYPE])
    if key_type not in KEY_TYPES:
        raise SignatureError(f"Invalid signature key type: {key_type}")
    return SignatureProperties(signature, method, key_type, str(properties[CERT_UUID]))


def make_verifier(props: SignatureProperties, certificate: x509.Certificate) -> Verifier:
    """The verifier of the data signed with certificate's key."""
    public_key = certificate.public_key()
    if not isinstance(public_key, KEY_TYPES[props.key_type]):
        raise SignatureError(f"Invalid public key type for signature key type: {props.key_type}")
    return Verifier(props.signature, HASH_METHODS[props.hash_method](), public_key)


async def verifier_for(
    key_manager: ServiceClient | None, token: str, properties: Mapping[str, Any]
) -> Verifier:
    """The properties checked, the certificate read (and within its dates), the verifier."""
    props = signature_properties(properties)
    certificate = await fetch_certificate(key_manager, token, props.cert_id)
    check_valid_dates(certificate)
    return make_verifier(props, certificate)


# -- certificate validation (cursive's verify_certificate) -----------------------------


def can_sign_certificates(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
        usage = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    except x509.ExtensionNotFound:
        return False
    return bool(constraints.ca and usage.key_cert_sign)


def is_issuer(issuer: x509.Certificate, cert: x509.Certificate) -> bool:
    """issuer's subject is cert's issuer and its key verifies cert's signature."""
    if issuer.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def verify_chain(
    cert: x509.Certificate,
    trusted: Iterable[tuple[str, x509.Certificate]],
    now: datetime.datetime | None = None,
) -> None:
    """cert chains up, through trusted certificates only, to a self-signed one of them:
    each signer within its dates, a CA allowed to sign certificates, and its path length
    constraint long enough for the chain below it."""
    signers = [
        (cert_id, c)
        for cert_id, c in trusted
        if within_valid_dates(c, now) and can_sign_certificates(c)
    ]
    check_valid_dates(cert, now)
    chain: list[tuple[str, x509.Certificate]] = [("the base certificate", cert)]
    current = cert
    while True:
        found = next(((i, c) for i, c in signers if is_issuer(c, current)), None)
        if found is None:
            name = chain[0][0]
            name = name if name == "the base certificate" else f"certificate '{name}'"
            raise SignatureError(
                "Certificate chain building failed. Could not locate the signing "
                f"certificate for {name} in the set of trusted certificates"
            )
        if found[1] == current:  # self-signed: the root
            break
        if any(c == found[1] for _, c in chain):
            raise SignatureError("Certificate chain building failed: the chain loops")
        chain.insert(0, found)
        current = found[1]
    for i, (cert_id, signer) in enumerate(chain[:-1]):
        limit = signer.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
        below = max(len(chain) - i - 2, 0)  # intermediates under this signer
        if limit.path_length is not None and limit.path_length < below:
            raise SignatureError(
                f"Certificate validation failed. The signing certificate '{cert_id}' is not "
                "configured to support certificate chains of sufficient length"
            )


async def verify_certificate(
    key_manager: ServiceClient | None, token: str, cert_id: str, trusted_ids: Iterable[str]
) -> None:
    """The certificate `cert_id` is trusted: verify_chain against the trusted certificates
    the caller can read (one that cannot be read is skipped, as cursive does)."""
    trusted: list[tuple[str, x509.Certificate]] = []
    for trusted_id in trusted_ids:
        try:
            trusted.append((trusted_id, await fetch_certificate(key_manager, token, trusted_id)))
        except SignatureError as exc:
            LOG.warning("skipping trusted certificate %s: %s", trusted_id, exc.reason)
    verify_chain(await fetch_certificate(key_manager, token, cert_id), trusted)
