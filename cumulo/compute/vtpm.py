"""Virtual TPM (Nova's vTPM): what a server asks for, and its secret in the Key Manager.

A server has an emulated TPM when its flavor's `hw:tpm_version` or its image's
`hw_tpm_version` says which (1.2 or 2.0), with the model `hw:tpm_model` /
`hw_tpm_model` (tpm-tis, the default, or tpm-crb, 2.0 only); flavor and image must not
disagree (Nova's get_vtpm_constraint). The TPM's state is encrypted on its host with a
passphrase kept in the Key Manager as the secret `vTPM secret for instance <uuid>`,
created with the user's token at the first spawn and named on the server as system
metadata `vtpm_secret_uuid` (Nova's crypto.ensure_vtpm_secret); it goes with the server.

`hw:tpm_secret_security` (flavor only) says who may read the passphrase and where it is
kept: `user` (the default: only the owner's token reads it, the host keeps it in memory
only, so the server is never live-migrated), `host` (the host keeps it, so the guest
starts again after a host restart and moves live: the source hands it over) or
`deployment` (Nova's vtpm.get_request_context: the secret is made, read and deleted
with the cloud's service user's token, in the service project, so neither the owner
nor an admin of another project reads it, and any host re-reads it after a restart;
live migration is still refused as Nova's API refuses it). A host offers the policies
of its `[compute] supported_tpm_secret_security` as traits.
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass
from typing import Any

from cumulo.common.key_manager_client import delete_secret, secret_payload
from cumulo.common.service_client import ServiceClient

LOG = logging.getLogger(__name__)

VERSIONS = ("1.2", "2.0")
MODELS = ("tpm-tis", "tpm-crb")
SECURITIES = ("user", "host", "deployment")
DEFAULT_SECURITY = "user"
# The server's system metadata key naming its secret (Nova's).
SECRET_UUID_KEY = "vtpm_secret_uuid"
# Set to "service" beside it when the service user made the secret (`deployment`), so it
# is deleted with the right token whatever flavor the server has by then.
SECRET_OWNER_KEY = "vtpm_secret_owner"
# Nova's _VTPM_SECRET_BYTE_LENGTH: 384 random bytes, base64 (512 characters).
SECRET_BYTES = 384

VERSION_TRAITS = {"1.2": "COMPUTE_SECURITY_TPM_1_2", "2.0": "COMPUTE_SECURITY_TPM_2_0"}
MODEL_TRAITS = {"tpm-tis": "COMPUTE_SECURITY_TPM_TIS", "tpm-crb": "COMPUTE_SECURITY_TPM_CRB"}
SECURITY_TRAITS = {
    "user": "COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER",
    "host": "COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST",
    "deployment": "COMPUTE_SECURITY_TPM_SECRET_SECURITY_DEPLOYMENT",
}
# The policy whose secret belongs to the cloud's service user, not to the server's owner.
SERVICE_OWNED = "deployment"


def host_traits(supported_securities: Any = SECURITIES) -> tuple[str, ...]:
    """What a host with an emulated TPM (swtpm, or the fake driver) reports: both
    versions, both models, and the secret policies it is configured to offer."""
    return (
        *VERSION_TRAITS.values(),
        *MODEL_TRAITS.values(),
        *(SECURITY_TRAITS[s] for s in SECURITIES if s in supported_securities),
    )


class VTPMInvalid(ValueError):
    """A vTPM request that cannot be had; the message is Nova's (a 400)."""


@dataclass(frozen=True)
class VTPMConfig:
    version: str
    model: str


def _unique(
    key: str, extra_specs: dict[str, Any], image_props: dict[str, Any], flavor: str, image: str
) -> str | None:
    """Nova's _get_unique_flavor_image_meta: flavor `hw:<key>` or image `hw_<key>`."""
    flavor_value = extra_specs.get(f"hw:{key}")
    image_value = image_props.get(f"hw_{key}")
    if flavor_value and image_value and str(flavor_value) != str(image_value):
        raise VTPMInvalid(
            f"Flavor {flavor} has hw:{key} extra spec explicitly set to {flavor_value}, "
            f"conflicting with image {image} which has hw_{key} explicitly set to "
            f"{image_value}."
        )
    value = flavor_value or image_value
    return None if value is None else str(value)


def vtpm_constraint(
    extra_specs: dict[str, Any] | None,
    image_props: dict[str, Any] | None,
    flavor_name: str = "",
    image_name: str = "",
) -> VTPMConfig | None:
    """The TPM the flavor and image ask for, None when none; VTPMInvalid as Nova's
    get_vtpm_constraint (a model without a version asks for nothing, as there)."""
    specs, props = extra_specs or {}, image_props or {}
    version = _unique("tpm_version", specs, props, flavor_name, image_name)
    if version is None:
        return None
    if version not in VERSIONS:
        raise VTPMInvalid(
            f"Invalid TPM version {version!r}. Allowed values: {', '.join(VERSIONS)}."
        )
    model = _unique("tpm_model", specs, props, flavor_name, image_name)
    if model is None:
        model = "tpm-tis"
    elif model not in MODELS:
        raise VTPMInvalid(f"Invalid TPM model {model!r}. Allowed values: {', '.join(MODELS)}.")
    elif model == "tpm-crb" and version != "2.0":
        raise VTPMInvalid("TPM model CRB is only valid with TPM version 2.0.")
    return VTPMConfig(version, model)


def secret_security(extra_specs: dict[str, Any] | None) -> str:
    """The flavor's hw:tpm_secret_security (no image property: Nova has none), else user."""
    return str((extra_specs or {}).get("hw:tpm_secret_security") or DEFAULT_SECURITY)


def required_traits(config: VTPMConfig | None, extra_specs: dict[str, Any] | None) -> set[str]:
    """The traits a host must report to run this TPM (Nova's scheduler utils and its
    tpm_secret_security request filter)."""
    if config is None:
        return set()
    return {
        VERSION_TRAITS[config.version],
        MODEL_TRAITS[config.model],
        SECURITY_TRAITS.get(secret_security(extra_specs), SECURITY_TRAITS["deployment"]),
    }


def service_owned(extra_specs: dict[str, Any] | None) -> bool:
    """Whether the flavor's TPM secret is the service user's (`deployment`)."""
    return secret_security(extra_specs) == SERVICE_OWNED


def secret_is_services(system_metadata: dict[str, Any] | None, flavor: dict[str, Any]) -> bool:
    """Whether the server's existing secret was made by the service user (recorded on
    the server; else as `flavor`'s policy says)."""
    owner = (system_metadata or {}).get(SECRET_OWNER_KEY)
    return owner == "service" if owner else service_owned(flavor.get("extra_specs"))


def image_props_of(system_metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The image properties a server keeps in its system metadata (`image_<name>`)."""
    return {
        k[len("image_") :]: v for k, v in (system_metadata or {}).items() if k.startswith("image_")
    }


def instance_constraint(
    inst: dict[str, Any], flavor: dict[str, Any] | None = None
) -> VTPMConfig | None:
    """The TPM of a server (its flavor, or `flavor` instead, and its image's properties);
    a server already created asked for a valid one, so VTPMInvalid only for a new flavor."""
    flavor = flavor if flavor is not None else inst.get("flavor") or {}
    return vtpm_constraint(
        flavor.get("extra_specs"),
        image_props_of(inst.get("system_metadata")),
        flavor.get("name", ""),
        (inst.get("system_metadata") or {}).get("image_name", ""),
    )


def operation_not_supported(operation: str, instance_uuid: str) -> str:
    """Nova's OperationNotSupportedForVTPM message (a 400)."""
    return f"Operation '{operation}' not supported for vTPM-enabled instance ({instance_uuid})."


def secret_name(instance_uuid: str) -> str:
    return f"vTPM secret for instance {instance_uuid}"


async def create_secret(
    key_manager: ServiceClient, token: str, instance_uuid: str
) -> tuple[str, str]:
    """A new passphrase stored as the instance's secret with `token` (the user's): its
    uuid and the passphrase (castellan's Passphrase: secret_type passphrase, text)."""
    passphrase = base64.b64encode(os.urandom(SECRET_BYTES)).decode()
    body = {
        "name": secret_name(instance_uuid),
        "secret_type": "passphrase",
        "payload": passphrase,
        "payload_content_type": "text/plain",
    }
    answer = await key_manager.json("POST", "/v1/secrets", token, json=body)
    return answer["secret_ref"].rstrip("/").rsplit("/", 1)[-1], passphrase


async def read_secret(key_manager: ServiceClient, token: str, secret_uuid: str) -> str:
    """The passphrase of an existing secret, read with `token` (ServiceError: 403 for a
    token that may not read it, 404 when it is gone)."""
    return (await secret_payload(key_manager, token, secret_uuid)).decode()


async def delete_instance_secret(
    key_manager: ServiceClient | None,
    token: str,
    instance_uuid: str,
    system_metadata: dict[str, Any] | None,
) -> bool:
    """The server's secret deleted with `token` (the deleter's); a refusal or failure is
    logged and answered False (the server goes anyway, as Nova's delete_vtpm_secret)."""
    secret_uuid = (system_metadata or {}).get(SECRET_UUID_KEY)
    if not secret_uuid or key_manager is None:
        return False
    try:
        await delete_secret(key_manager, token, secret_uuid)
    except Exception as exc:  # noqa: BLE001 - logged; the server is deleted anyway
        LOG.warning("could not delete vTPM secret %s of %s: %s", secret_uuid, instance_uuid, exc)
        return False
    return True
