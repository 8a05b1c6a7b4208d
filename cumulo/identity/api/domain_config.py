"""/v3/domains/{domain_id}/config: domain-specific configuration (api-ref: Domain
configuration). Stored and served; see cumulo.identity.domain_config for what applies."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.app import json_body
from cumulo.common.faults import Forbidden, NotFound
from cumulo.identity import domain_config as rules
from cumulo.identity.api.common import authorize, identity_of, json, no_content
from cumulo.identity.core import DEFAULT_DOMAIN_ID
from cumulo.identity.models import Domain, DomainConfigOption


def _invalid(reason: str) -> Forbidden:
    return Forbidden(f"Invalid domain specific configuration: {reason}.")


def _not_found(domain_id: str, group: str | None, option: str | None) -> NotFound:
    what = (
        f"option {option} in group {group}"
        if option
        else f"group {group}"
        if group
        else "any options"
    )
    return NotFound(f"Could not find {what} in domain configuration for domain {domain_id}.")


def _check_names(group: str | None, option: str | None) -> None:
    if group and not rules.is_group(group):
        raise _invalid(f"Group {group} is not supported for domain specific configurations")
    if group and option and not rules.is_option(group, option):
        raise _invalid(
            f"Option {option} in group {group} is not supported for domain specific configurations"
        )


def _check_config(config: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(config, dict) or not config:
        raise _invalid("No options specified")
    for group, options in config.items():
        if not isinstance(options, dict) or not options:
            raise _invalid(
                f"The value of group {group} specified in the config should be a "
                "dictionary of options"
            )
        for option in options:
            _check_names(group, option)
    return config


async def _domain(request: Request, rule: str) -> str:
    await authorize(request, rule)
    domain_id = request.path_params["domain_id"]
    async with identity_of(request).read() as session:
        if await session.get(Domain, domain_id) is None:
            raise NotFound(f"Could not find domain: {domain_id}.")
    return domain_id


async def _stored(request: Request, domain_id: str) -> dict[str, dict[str, Any]]:
    """The domain's whitelisted options (sensitive ones are never shown)."""
    async with identity_of(request).read() as session:
        rows = await session.scalars(
            select(DomainConfigOption).where(
                DomainConfigOption.domain_id == domain_id, ~DomainConfigOption.sensitive
            )
        )
        config: dict[str, dict[str, Any]] = {}
        for row in rows:
            config.setdefault(row.group, {})[row.option] = row.value
    return config


def _rows(request: Request, domain_id: str, config: dict[str, dict[str, Any]]) -> list:
    fernet = identity_of(request).credential_fernet
    rows = []
    for group, options in config.items():
        for option, value in options.items():
            sensitive = rules.is_sensitive(group, option)
            if sensitive:
                value = fernet.encrypt(str(value).encode()).decode()
            row = DomainConfigOption(domain_id=domain_id, group=group, option=option)
            row.value, row.sensitive = value, sensitive
            rows.append(row)
    return rows


def _scope(request: Request) -> tuple[str | None, str | None]:
    return request.path_params.get("group"), request.path_params.get("option")


async def create_config(request: Request) -> Response:
    """PUT /v3/domains/{domain_id}/config: replaces the whole configuration."""
    domain_id = await _domain(request, "identity:create_domain_config")
    data = await json_body(request)
    config = _check_config(data.get("config") if isinstance(data, dict) else None)
    async with identity_of(request).write() as session:
        existed = await session.scalar(
            select(DomainConfigOption.option).where(DomainConfigOption.domain_id == domain_id)
        )
        await session.execute(
            delete(DomainConfigOption).where(DomainConfigOption.domain_id == domain_id)
        )
        session.add_all(_rows(request, domain_id, config))
    return json({"config": await _stored(request, domain_id)}, status=200 if existed else 201)


async def show_config(request: Request) -> Response:
    group, option = _scope(request)
    if group == rules.SECURITY_COMPLIANCE:
        return await _security_compliance(request, option)
    domain_id = await _domain(request, "identity:get_domain_config")
    _check_names(group, option)
    config = await _stored(request, domain_id)
    if group:
        config = {group: config[group]} if group in config else {}
    if option:
        if option not in config.get(group, {}):
            raise _not_found(domain_id, group, option)
        return json({"config": {option: config[group][option]}})
    if not config:
        raise _not_found(domain_id, group, option)
    return json({"config": config})


async def _security_compliance(request: Request, option: str | None) -> Response:
    """The password rules any user may read, for the default domain only (as Keystone)."""
    domain_id = request.path_params["domain_id"]
    await authorize(request, "identity:get_security_compliance_domain_config")
    if domain_id != DEFAULT_DOMAIN_ID:
        raise _invalid(
            "Reading security compliance information for any domain other than the default "
            "domain is not allowed or supported"
        )
    settings = identity_of(request).config.identity.security_compliance
    values = {name: getattr(settings, name) or None for name in rules.SECURITY_COMPLIANCE_OPTIONS}
    if option is None:
        return json({"config": values})
    if option not in values:
        raise _invalid(
            f"Reading security compliance values other than password_regex and "
            f"password_regex_description is not allowed: {option}"
        )
    return json({"config": {option: values[option]}})


async def update_config(request: Request) -> Response:
    """PATCH: merge options in; a group or option in the path must be the only one given
    and must already be set."""
    domain_id = await _domain(request, "identity:update_domain_config")
    group, option = _scope(request)
    data = await json_body(request)
    config = data.get("config") if isinstance(data, dict) else None
    if group and option:
        config = {group: config}
    config = _check_config(config)
    _check_names(group, option)
    if group:
        if list(config) != [group] or (option and list(config[group]) != [option]):
            only = f"option {option} in group {group}" if option else f"group {group}"
            raise _invalid(f"Trying to update {only}, so that, and only that, must be specified")
        async with identity_of(request).read() as session:
            query = select(DomainConfigOption.option).where(
                DomainConfigOption.domain_id == domain_id, DomainConfigOption.group == group
            )
            if option:
                query = query.where(DomainConfigOption.option == option)
            if await session.scalar(query) is None:
                raise _not_found(domain_id, group, option)
    async with identity_of(request).write() as session:
        for row in _rows(request, domain_id, config):
            await session.merge(row)
    return json({"config": await _stored(request, domain_id)})


async def delete_config(request: Request) -> Response:
    domain_id = await _domain(request, "identity:delete_domain_config")
    group, option = _scope(request)
    _check_names(group, option)
    query = delete(DomainConfigOption).where(DomainConfigOption.domain_id == domain_id)
    if group:
        query = query.where(DomainConfigOption.group == group)
    if option:
        query = query.where(DomainConfigOption.option == option)
    async with identity_of(request).write() as session:
        if not (await session.execute(query)).rowcount and group:
            raise _not_found(domain_id, group, option)
    return no_content()


async def show_default(request: Request) -> Response:
    """GET /v3/domains/config[/{group}[/{option}]]/default."""
    await authorize(request, "identity:get_domain_config_default")
    group, option = _scope(request)
    _check_names(group, option)
    if group and rules.is_sensitive(group, option or ""):
        raise _invalid(f"Reading the default for option {option} in group {group} is not allowed")
    config = rules.defaults(identity_of(request).config.identity.list_limit)
    if option:
        return json({"config": {option: config[group][option]}})
    if group:
        return json({"config": {group: config[group]}})
    return json({"config": config})


_CONFIG = "/v3/domains/{domain_id}/config"

routes = [
    Route("/v3/domains/config/default", show_default, methods=["GET", "HEAD"]),
    Route("/v3/domains/config/{group}/default", show_default, methods=["GET", "HEAD"]),
    Route("/v3/domains/config/{group}/{option}/default", show_default, methods=["GET", "HEAD"]),
    Route(_CONFIG, create_config, methods=["PUT"]),
    *(
        Route(path, handler, methods=methods)
        for path in (_CONFIG, _CONFIG + "/{group}", _CONFIG + "/{group}/{option}")
        for handler, methods in (
            (show_config, ["GET", "HEAD"]),
            (update_config, ["PATCH"]),
            (delete_config, ["DELETE"]),
        )
    ),
]
