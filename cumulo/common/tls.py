"""TLS for the APIs: the operator's certificate, or a CA and server certificate cumulo
makes itself (cryptography) in <state dir>/tls on the first `cumulo up --tls`.

The made CA signs one server certificate for every name clients may use (the catalog
host, 127.0.0.1, localhost, this machine's name); clients verify against the CA, which
clouds.yaml and openrc name (`cacert`, `OS_CACERT`). Keys are written 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cumulo.common.config import CumuloConfig

TLS_DIR = "tls"
CA_DAYS = 3650
SERVER_DAYS = 825  # what browsers still accept for a server certificate


def ca_file(config: CumuloConfig) -> str | None:
    """What clients verify the APIs against (None: TLS off, or the system's CAs)."""
    return config.tls.ca_file or None if config.tls.enabled else None


def verify_option(config: CumuloConfig) -> ssl.SSLContext | bool:
    """httpx's `verify` for calls to this cloud's APIs."""
    ca = ca_file(config)
    return ssl.create_default_context(cafile=ca) if ca else True


def server_files(config: CumuloConfig) -> tuple[str, str] | None:
    """(certificate, key) the servers present, or None when TLS is off."""
    return (config.tls.cert_file, config.tls.key_file) if config.tls.enabled else None


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def _names(config: CumuloConfig) -> list[x509.GeneralName]:
    hosts = {config.catalog_host, "127.0.0.1", "localhost", socket.gethostname()}
    if config.host not in ("0.0.0.0", "::", ""):
        hosts.add(config.host)
    names: list[x509.GeneralName] = []
    for host in sorted(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_certificates(config: CumuloConfig, state_dir: Path) -> None:
    """A CA and a server certificate signed by it, for every name of this cloud; the
    config is pointed at them (the caller writes it)."""
    directory = state_dir / TLS_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cumulo CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, config.catalog_host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(_names(config)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(directory / "ca-key.pem", ca_key)
    _write_key(directory / "server-key.pem", key)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    config.tls.ca_file = str(directory / "ca.pem")
    config.tls.cert_file = str(directory / "server.pem")
    config.tls.key_file = str(directory / "server-key.pem")


def ensure(config: CumuloConfig, state_dir: Path) -> bool:
    """With TLS on: the operator's files made absolute (relative ones are the state dir's),
    or, when there are none, certificates made; True when the config changed."""
    if not config.tls.enabled:
        return False
    if not config.tls.cert_file:
        make_certificates(config, state_dir)
        return True
    changed = False
    for field in ("cert_file", "key_file", "ca_file"):
        value = getattr(config.tls, field)
        if value and not os.path.isabs(value):
            setattr(config.tls, field, str(state_dir / value))
            changed = True
    return changed
