"""Image signatures and certificate chains as cursive checks them (no cloud)."""

from __future__ import annotations

import datetime

import pytest

from cumulo.common.image_signatures import (
    SignatureError,
    is_signed,
    load_certificate,
    make_verifier,
    signature_properties,
    verify_chain,
)
from cumulo.testing.signing import KEY_TYPES, issue
from cumulo.testing.signing import signature_properties as sign

DATA = b"an image's bytes " * 4096


def _verify(data: bytes, props: dict[str, str], cert) -> None:
    verifier = make_verifier(signature_properties(props), cert)
    for start in range(0, len(data), 1000):  # streamed, in pieces
        verifier.update(data[start : start + 1000])
    verifier.verify()


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_good_signature_of_each_key_type_verifies(key_type: str):
    signer = issue("signer", key_type=key_type)
    for method in ("SHA-224", "SHA-256", "SHA-384", "SHA-512"):
        _verify(DATA, sign(DATA, signer, "cert", key_type, method), signer.cert)


def test_tampered_data_fails():
    signer = issue("signer")
    props = sign(DATA, signer, "cert")
    with pytest.raises(SignatureError, match="Signature verification failed"):
        _verify(DATA + b"x", props, signer.cert)


def test_wrong_hash_method_fails():
    signer = issue("signer", key_type="ECC_SECP384R1")
    props = sign(DATA, signer, "cert", "ECC_SECP384R1", "SHA-256")
    with pytest.raises(SignatureError, match="Signature verification failed"):
        _verify(DATA, {**props, "img_signature_hash_method": "SHA-512"}, signer.cert)


def test_another_certificate_fails():
    props = sign(DATA, issue("signer"), "cert")
    with pytest.raises(SignatureError):
        _verify(DATA, props, issue("someone else").cert)


def test_bad_properties_are_refused_before_any_data():
    signer = issue("signer")
    props = sign(DATA, signer, "cert")
    cases = {
        "img_signature_hash_method": ("MD5", "Invalid signature hash method: MD5"),
        "img_signature_key_type": ("RSA-PKCS1", "Invalid signature key type: RSA-PKCS1"),
        "img_signature": ("not base64!", "not properly encoded using base64"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(SignatureError, match=message):
            signature_properties({**props, name: value})
    partial = {k: v for k, v in props.items() if k != "img_signature_key_type"}
    assert not is_signed(partial)
    with pytest.raises(SignatureError, match="Missing property: img_signature_key_type"):
        signature_properties(partial)
    with pytest.raises(SignatureError, match="Invalid public key type for signature key type: DSA"):
        make_verifier(signature_properties({**props, "img_signature_key_type": "DSA"}), signer.cert)


def test_certificates_load_from_pem_and_der():
    signer = issue("signer")
    assert load_certificate(signer.pem) == load_certificate(signer.der) == signer.cert
    with pytest.raises(SignatureError, match="could not be read"):
        load_certificate(b"not a certificate")


def test_chain_up_to_a_trusted_root():
    root = issue("root", ca=True, path_length=1)
    middle = issue("middle", issuer=root, ca=True, path_length=0)
    signer = issue("signer", issuer=middle)
    verify_chain(signer.cert, [("root", root.cert), ("middle", middle.cert)])
    verify_chain(root.cert, [("root", root.cert)])  # self-signed and itself trusted


def test_untrusted_chain_fails():
    root = issue("root", ca=True)
    signer = issue("signer", issuer=root)
    with pytest.raises(SignatureError, match="Could not locate the signing certificate"):
        verify_chain(signer.cert, [("other", issue("other root", ca=True).cert)])
    # An intermediate alone is not enough: the chain must end at a trusted root.
    middle = issue("middle", issuer=root, ca=True)
    with pytest.raises(SignatureError, match="Could not locate"):
        verify_chain(issue("leaf", issuer=middle).cert, [("middle", middle.cert)])


def test_signers_must_be_cas_within_their_path_length():
    root = issue("root", ca=True, path_length=0)
    middle = issue("middle", issuer=root, ca=True)
    leaf = issue("leaf", issuer=middle)
    with pytest.raises(SignatureError, match="sufficient length"):
        verify_chain(leaf.cert, [("root", root.cert), ("middle", middle.cert)])
    not_ca = issue("plain")
    with pytest.raises(SignatureError, match="Could not locate"):
        verify_chain(issue("leaf", issuer=not_ca).cert, [("plain", not_ca.cert)])


def test_expired_certificates_fail():
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=60)
    root = issue("root", ca=True)
    expired = issue("signer", issuer=root, not_before=long_ago, days=30)
    with pytest.raises(SignatureError, match="outside its valid date range"):
        verify_chain(expired.cert, [("root", root.cert)])
    old_root = issue("root", ca=True, not_before=long_ago, days=30)
    with pytest.raises(SignatureError, match="Could not locate"):
        verify_chain(issue("signer", issuer=old_root).cert, [("root", old_root.cert)])
