"""Signed images on the compute host (Nova's image signature verification and trusted
image certificates, microversion 2.63).

Before the image cache downloads an image it asks `prepare`: with
`[compute] verify_glance_signatures` (on by default: every cumulo cloud has a Key Manager)
an image that carries signature properties must have all four, and its certificate is read
from the Key Manager with the booting user's token; the download is then hashed through
the verifier and kept only when the signature holds. Trusted certificates (the server's
`trusted_image_certificates`, else `[compute] default_trusted_certificate_ids` when
`enable_certificate_validation` is on) make the signing certificate chain up to one of
them, on every boot, cached image or not; given by the user they are checked even with
verification off, as Nova does. Unlike Nova, an image with no signature properties boots
with verification on (Nova refuses it), unless trusted certificates were asked for.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cumulo.common.image_signatures import (
    PROPERTIES,
    SignatureError,
    Verifier,
    check_valid_dates,
    fetch_certificate,
    has_signature_properties,
    make_verifier,
    signature_properties,
    verify_certificate,
)
from cumulo.common.service_client import ServiceClient

LOG = logging.getLogger(__name__)

# Where a server keeps its trusted certificate IDs (Nova's instance_extra.trusted_certs).
SYSMETA_KEY = "trusted_image_certificates"


def trusted_certs_of(sysmeta: Mapping[str, Any] | None) -> list[str] | None:
    raw = (sysmeta or {}).get(SYSMETA_KEY)
    return json.loads(raw) if raw else None


def with_trusted_certs(sysmeta: Mapping[str, Any], cert_ids: Sequence[str] | None) -> dict:
    """The system metadata holding exactly these trusted certificates (None: none)."""
    kept = {k: v for k, v in sysmeta.items() if k != SYSMETA_KEY}
    if cert_ids:
        kept[SYSMETA_KEY] = json.dumps(list(cert_ids))
    return kept


class ImageSignatureFailed(Exception):
    """The image's signature or certificate does not hold: no other host would find
    otherwise, so the build fails without a retry (Nova's BuildAbortException)."""


@dataclass(frozen=True)
class SignatureOptions:
    """Nova's [glance] options, in cumulo's [compute]."""

    verify_glance_signatures: bool = True
    enable_certificate_validation: bool = False
    default_trusted_certificate_ids: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_config(cls, config: Any) -> SignatureOptions:
        c = config.compute
        return cls(
            c.verify_glance_signatures,
            c.enable_certificate_validation,
            tuple(c.default_trusted_certificate_ids),
        )


def signature_marker(meta: Mapping[str, Any]) -> str:
    """What a cached file was verified against: the image's data hash and signature."""
    kept = {k: meta.get(k) for k in (*PROPERTIES, "os_hash_value")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


@dataclass
class ImageSignatures:
    """The host's signed-image checks: its options and the Key Manager it reads."""

    key_manager: ServiceClient | None
    options: SignatureOptions = field(default_factory=SignatureOptions)

    def trusted(self, requested: Sequence[str] | None) -> list[str]:
        """The trusted certificates a boot checks against (Nova's _get_verifier)."""
        if requested:
            return list(requested)
        o = self.options
        if o.enable_certificate_validation and o.default_trusted_certificate_ids:
            return list(o.default_trusted_certificate_ids)
        return []

    async def prepare(
        self, token: str, meta: Mapping[str, Any], requested: Sequence[str] | None = None
    ) -> Verifier | None:
        """The verifier of the image's data when it is to be verified (None: boot it as
        it is); ImageSignatureFailed when its signature or certificate cannot hold."""
        trusted = self.trusted(requested)
        wanted = trusted or (
            self.options.verify_glance_signatures and has_signature_properties(meta)
        )
        if not wanted:
            return None
        image_id = meta.get("id")
        try:
            props = signature_properties(meta)
            certificate = await fetch_certificate(self.key_manager, token, props.cert_id)
            check_valid_dates(certificate)
            verifier = make_verifier(props, certificate)
        except SignatureError as exc:
            LOG.warning("image %s: %s", image_id, exc)
            raise ImageSignatureFailed(str(exc)) from None
        if trusted:
            try:
                await verify_certificate(self.key_manager, token, props.cert_id, trusted)
            except SignatureError as exc:
                LOG.warning("image %s: certificate %s not trusted", image_id, props.cert_id)
                raise ImageSignatureFailed(
                    "Image signature certificate validation failed for certificate: "
                    f"{props.cert_id}. {exc.reason}."
                ) from None
        elif self.options.enable_certificate_validation:
            raise ImageSignatureFailed(
                "Image signature certificate validation enabled, but no trusted "
                "certificate IDs were provided. Unable to validate the certificate used "
                "to verify the image signature."
            )
        return verifier

    @staticmethod
    def verify(image_id: str, verifier: Verifier) -> None:
        try:
            verifier.verify()
        except SignatureError as exc:
            LOG.error("Image signature verification failed for image %s", image_id)
            raise ImageSignatureFailed(str(exc)) from None
        LOG.info("Image signature verification succeeded for image %s", image_id)
