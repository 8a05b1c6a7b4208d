"""A compute host's side of emulated TPMs (Nova's vTPM, cumulo.compute.vtpm): the
secret a guest's TPM state is encrypted with, created in the Key Manager with the
user's token at the first spawn and recorded on the server (`vtpm_secret_uuid`), read
again with the user's token where the guest starts on a host that does not hold it,
handed from host to host on a live migration (only a `host` policy allows one: the
admin who asks cannot read the user's secret, Tempest's LiveMigrationWithVTPMTest), and
deleted with the server. A `deployment` policy's secret is all that with the cloud's
service user's token instead of the caller's (Nova's vtpm.get_request_context).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cumulo.common.service_client import ServiceClient, ServiceError
from cumulo.compute import rpcapi, vtpm
from cumulo.compute.virt.driver import ComputeDriver, DriverError, VirtualTPM
from cumulo.compute.volume_encryption import _reason

LOG = logging.getLogger(__name__)


class HostVTPM:
    """Mixed into ComputeManager (driver, conductor, key_manager)."""

    driver: ComputeDriver
    conductor: rpcapi.ConductorAPI
    key_manager: ServiceClient | None
    service_token: Callable[[], Awaitable[str]] | None

    async def _vtpm_token(self, ctx: dict, services: bool) -> str:
        """The token the server's secret is made, read and deleted with: the service
        user's for a `deployment` policy (`services`), else the caller's."""
        if not services:
            return ctx.get("auth_token") or ""
        if self.service_token is None:
            raise DriverError("this compute host has no service credentials for the vTPM secret")
        try:
            return await self.service_token()
        except Exception as exc:  # noqa: BLE001 - Identity down or refusing: the spawn fails
            raise DriverError(f"no service token for the vTPM secret: {exc}") from None

    async def _vtpm_for(
        self,
        ctx: dict,
        inst: dict[str, Any],
        flavor: dict[str, Any] | None = None,
        passphrase: str | None = None,
    ) -> VirtualTPM | None:
        """The TPM the server has with its flavor (or `flavor`), None when none: its
        secret created now when the server has none yet (recorded on it at once, and in
        `inst`), else its passphrase as `passphrase` (handed over by the host the guest
        comes from) or read with the caller's token. DriverError when it cannot be had:
        a guest never gets a TPM whose state it cannot open."""
        config = vtpm.instance_constraint(inst, flavor)
        if config is None:
            return None
        flavor = flavor if flavor is not None else inst.get("flavor") or {}
        security = vtpm.secret_security(flavor.get("extra_specs"))
        sysmeta = dict(inst.get("system_metadata") or {})
        secret_uuid = sysmeta.get(vtpm.SECRET_UUID_KEY)
        if passphrase is None:
            if self.key_manager is None:
                raise DriverError("this compute host has no Key Manager for the vTPM secret")
            token = await self._vtpm_token(ctx, vtpm.secret_is_services(sysmeta, flavor))
            try:
                if secret_uuid:
                    passphrase = await vtpm.read_secret(self.key_manager, token, secret_uuid)
                else:
                    secret_uuid, passphrase = await vtpm.create_secret(
                        self.key_manager, token, inst["uuid"]
                    )
                    sysmeta[vtpm.SECRET_UUID_KEY] = secret_uuid
                    if security == vtpm.SERVICE_OWNED:
                        sysmeta[vtpm.SECRET_OWNER_KEY] = "service"
                    inst["system_metadata"] = sysmeta
                    await self.conductor.instance_update(
                        ctx, inst["uuid"], {"system_metadata": sysmeta}
                    )
            except ServiceError as exc:
                raise DriverError(f"Key manager error: {_key_manager_error(exc)}") from None
        if not secret_uuid:
            raise DriverError(f"server {inst['uuid']} has no vTPM secret to hand over")
        return VirtualTPM(config.version, config.model, security, secret_uuid, passphrase)

    async def _vtpm_handover(self, inst: dict[str, Any]) -> str | None:
        """What a live migration hands the destination: the passphrase this host keeps
        for a `host` policy TPM (Nova's vtpm_secret_value in its migrate data)."""
        extra_specs = (inst.get("flavor") or {}).get("extra_specs")
        if vtpm.instance_constraint(inst) is None or vtpm.secret_security(extra_specs) != "host":
            return None
        passphrase = await self.driver.vtpm_passphrase(inst["uuid"])
        if passphrase is None:
            raise DriverError(
                "TPM secret was not found. Try hard-rebooting the instance to recover."
            )
        return passphrase

    async def _reopen_vtpm(self, ctx: dict, instance_uuid: str) -> None:
        """Before a start: a TPM whose passphrase this host no longer holds (a `user` one
        after a host restart) gets it again from the Key Manager with the caller's
        token, as Nova defines the libvirt secret again at a hard reboot (an admin
        cannot read a user's secret: the start fails; a `deployment` one is read with the
        service user's token, so anyone's start works)."""
        if not await self.driver.vtpm_passphrase_missing(instance_uuid):
            return
        inst = await self.conductor.instance_update(ctx, instance_uuid, {})
        tpm = await self._vtpm_for(ctx, inst)
        if tpm is not None:
            await self.driver.keep_vtpm_passphrase(inst["uuid"], tpm.passphrase)

    async def _delete_vtpm_secret(
        self, ctx: dict, inst: dict[str, Any], forget: bool = False
    ) -> bool:
        """The server's secret deleted with the caller's token, or the service user's
        for a `deployment` one (a refusal is logged: the server goes anyway, as Nova's
        delete_vtpm_secret); `forget` also drops it from the server's system metadata
        (the server keeps no TPM)."""
        sysmeta = inst.get("system_metadata")
        try:
            services = vtpm.secret_is_services(sysmeta, inst.get("flavor") or {})
            token = await self._vtpm_token(ctx, services)
        except DriverError as exc:
            LOG.warning("vTPM secret of %s not deleted: %s", inst["uuid"], exc)
            return False
        deleted = await vtpm.delete_instance_secret(self.key_manager, token, inst["uuid"], sysmeta)
        if deleted and forget:
            gone = (vtpm.SECRET_UUID_KEY, vtpm.SECRET_OWNER_KEY)
            kept = {k: v for k, v in (sysmeta or {}).items() if k not in gone}
            inst["system_metadata"] = kept
            await self.conductor.instance_update(ctx, inst["uuid"], {"system_metadata": kept})
        return deleted

    async def _drop_vtpm_of_reverted_flavor(
        self, ctx: dict, inst: dict[str, Any], old_flavor: dict[str, Any], sysmeta: dict
    ) -> None:
        """A reverted resize from a flavor without a TPM to one with: the secret the new
        flavor's guest was given is deleted (Nova's revert_resize) and dropped from
        `sysmeta`, the server's system metadata as the revert writes it."""
        if vtpm.SECRET_UUID_KEY not in sysmeta or vtpm.instance_constraint(inst) is None:
            return
        if vtpm.instance_constraint(inst, old_flavor) is not None:
            return  # the old flavor has a TPM too: the same secret is its
        if await self._delete_vtpm_secret(ctx, inst):
            sysmeta.pop(vtpm.SECRET_UUID_KEY, None)
            sysmeta.pop(vtpm.SECRET_OWNER_KEY, None)


def _key_manager_error(exc: ServiceError) -> str:
    """Castellan's wording of a Key Manager refusal: `Forbidden: <Barbican's description>`."""
    names = {403: "Forbidden", 404: "Not Found", 401: "Unauthorized"}
    return f"{names.get(exc.status, exc.status)}: {_reason(exc)}"
