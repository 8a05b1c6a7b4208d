"""First-run content of Identity, as DevStack users expect it, and the client files.

Idempotent: running it again changes nothing but the catalog URLs (which follow
the configured host and ports) and the client files.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.common import tls
from cumulo.common.config import CumuloConfig
from cumulo.identity.core import DEFAULT_DOMAIN_ID, Identity
from cumulo.identity.models import (
    SYSTEM_TARGET,
    USER_PROJECT,
    USER_SYSTEM,
    Assignment,
    Domain,
    Endpoint,
    ImpliedRole,
    Project,
    Region,
    Role,
    Service,
    User,
)
from cumulo.identity.passwords import hash_password

LOG = logging.getLogger(__name__)

# ResellerAdmin: Object Storage's reseller admin role (every account), as DevStack makes it.
# manager: a project's manager (Keystone 2023.2's bootstrap; Nova lets it migrate the
# project's servers without naming hosts). admin implies manager implies member implies
# reader; the admin -> member implication of older state dirs is replaced.
ROLES = ("admin", "manager", "member", "reader", "service", "ResellerAdmin")
IMPLIED = (("admin", "manager"), ("manager", "member"), ("member", "reader"))
OBSOLETE_IMPLIED = (("admin", "member"),)
PROJECTS = ("admin", "demo", "service")
SERVICE_USER = "cumulo"
# The dashboard's own user: no role anywhere, only the trustee of the sessions' trusts.
DASHBOARD_USER = "dashboard"
SERVICE_USER_OPTIONS = {
    "ignore_lockout_failure_attempts": True,
    "ignore_password_expiry": True,
    "ignore_change_password_upon_first_use": True,
}


@dataclass(frozen=True)
class CatalogEntry:
    type: str
    name: str
    port_attr: str  # attribute of config.ports
    path: str
    description: str


# What `cumulo up` serves. A service joins this list when it really answers.
CATALOG = [
    CatalogEntry("identity", "keystone", "identity", "/v3", "Identity Service"),
    CatalogEntry("image", "glance", "image", "", "Image Service"),
    CatalogEntry("compute", "nova", "compute", "/v2.1", "Compute Service"),
    CatalogEntry("network", "neutron", "network", "", "Network Service"),
    CatalogEntry("block-storage", "cinder", "block_storage", "/v3", "Block Storage Service"),
    CatalogEntry(
        "object-store", "swift", "object_store", "/v1/AUTH_$(project_id)s", "Object Storage"
    ),
    # S3 on the object store's port, as upstream deployments register Swift's s3api.
    CatalogEntry("s3", "s3", "object_store", "", "S3 API on the Object Storage"),
    CatalogEntry("ec2", "ec2", "ec2", "", "EC2 API"),
    CatalogEntry("key-manager", "barbican", "key_manager", "", "Key Manager Service"),
]


def _stable_id(kind: str, name: str) -> str:
    """Bootstrap rows get stable ids (so the catalog survives re-bootstrap)."""
    return hashlib.md5(f"cumulo:{kind}:{name}".encode()).hexdigest()  # noqa: S324 - not security


async def _ensure(session: AsyncSession, model, key: str, **values):
    row = await session.get(model, key)
    if row is None:
        row = model(id=key, **values)
        session.add(row)
        await session.flush()
    return row


async def _grant(session: AsyncSession, kind: str, actor: str, target: str, role_id: str) -> None:
    key = {
        "type": kind,
        "actor_id": actor,
        "target_id": target,
        "role_id": role_id,
        "inherited": False,
    }
    if await session.get(Assignment, key) is None:
        session.add(Assignment(**key))


async def _ensure_user(
    session: AsyncSession, name: str, password: str, rounds: int, default_project: str | None
) -> User:
    user = await session.scalar(
        select(User).where(User.name == name, User.domain_id == DEFAULT_DOMAIN_ID)
    )
    if user is None:
        user = User(
            id=_stable_id("user", name),
            name=name,
            domain_id=DEFAULT_DOMAIN_ID,
            enabled=True,
            password_hash=await hash_password(password, rounds),
            default_project_id=default_project,
        )
        session.add(user)
        await session.flush()
    return user


async def bootstrap(identity: Identity, config: CumuloConfig) -> None:
    ic = config.identity
    async with identity.write() as s:
        await _ensure(
            s,
            Domain,
            DEFAULT_DOMAIN_ID,
            name="Default",
            enabled=True,
            description="The default domain",
            options={},
            tags=[],
            extra={},
        )
        roles = {}
        for name in ROLES:
            existing = await s.scalar(select(Role).where(Role.name == name, Role.domain_id == ""))
            roles[name] = existing or await _ensure(
                s, Role, _stable_id("role", name), name=name, domain_id="", options={}
            )
        for prior, implied in IMPLIED:
            key = {"prior_role_id": roles[prior].id, "implied_role_id": roles[implied].id}
            if await s.get(ImpliedRole, key) is None:
                s.add(ImpliedRole(**key))
        for prior, implied in OBSOLETE_IMPLIED:
            key = {"prior_role_id": roles[prior].id, "implied_role_id": roles[implied].id}
            if (old := await s.get(ImpliedRole, key)) is not None:
                await s.delete(old)
        projects = {}
        for name in PROJECTS:
            existing = await s.scalar(
                select(Project).where(Project.name == name, Project.domain_id == DEFAULT_DOMAIN_ID)
            )
            projects[name] = existing or await _ensure(
                s,
                Project,
                _stable_id("project", name),
                name=name,
                domain_id=DEFAULT_DOMAIN_ID,
                enabled=True,
                description=f"Bootstrap project {name}",
                options={},
                tags=[],
                extra={},
            )
        admin = await _ensure_user(
            s, "admin", ic.admin_password, ic.bcrypt_rounds, projects["admin"].id
        )
        demo = await _ensure_user(
            s, "demo", ic.demo_password, ic.bcrypt_rounds, projects["demo"].id
        )
        service = await _ensure_user(
            s, SERVICE_USER, ic.service_password, ic.bcrypt_rounds, projects["service"].id
        )
        service_users = [service]
        if config.dashboard.service_password:
            service_users.append(
                await _ensure_user(
                    s, DASHBOARD_USER, config.dashboard.service_password, ic.bcrypt_rounds, None
                )
            )
        # The services' own users are exempt from the security compliance rules: anyone
        # could lock them out with wrong passwords, and nobody changes their password.
        for user in service_users:
            if not SERVICE_USER_OPTIONS.items() <= (user.options or {}).items():
                user.options = {**(user.options or {}), **SERVICE_USER_OPTIONS}
        await _grant(s, USER_PROJECT, admin.id, projects["admin"].id, roles["admin"].id)
        await _grant(s, USER_PROJECT, admin.id, projects["demo"].id, roles["admin"].id)
        await _grant(s, USER_SYSTEM, admin.id, SYSTEM_TARGET, roles["admin"].id)
        await _grant(s, USER_PROJECT, demo.id, projects["demo"].id, roles["member"].id)
        await _grant(s, USER_PROJECT, service.id, projects["service"].id, roles["service"].id)
        await _grant(s, USER_PROJECT, service.id, projects["service"].id, roles["admin"].id)
        # Volume backups are written into their owners' Object Storage accounts.
        await _grant(s, USER_PROJECT, service.id, projects["service"].id, roles["ResellerAdmin"].id)
        await _ensure(s, Region, config.region, description="", extra={})
        for entry in CATALOG:
            await _ensure_catalog_entry(s, config, entry)


async def _ensure_catalog_entry(s: AsyncSession, config: CumuloConfig, entry: CatalogEntry) -> None:
    service = await s.scalar(select(Service).where(Service.type == entry.type))
    if service is None:
        service = await _ensure(
            s,
            Service,
            _stable_id("service", entry.type),
            type=entry.type,
            name=entry.name,
            description=entry.description,
            enabled=True,
            extra={},
        )
    port = getattr(config.ports, entry.port_attr)
    url = f"{config.public_url(port)}{entry.path}"
    for interface in ("public", "internal", "admin"):
        ep = await s.scalar(
            select(Endpoint).where(
                Endpoint.service_id == service.id,
                Endpoint.interface == interface,
                Endpoint.region_id == config.region,
            )
        )
        if ep is None:
            s.add(
                Endpoint(
                    id=_stable_id("endpoint", f"{entry.type}:{interface}"),
                    service_id=service.id,
                    interface=interface,
                    url=url,
                    region_id=config.region,
                    enabled=True,
                    extra={},
                )
            )
        elif ep.url != url:
            ep.url = url


def write_client_files(state_dir: Path, config: CumuloConfig) -> dict[str, Path]:
    """clouds.yaml (clouds `cumulo`, `cumulo-demo`) and openrc / openrc-demo, all 0600."""
    auth_url = f"{config.public_url(config.ports.identity)}/v3"
    cacert = tls.ca_file(config)
    users = {
        "cumulo": ("admin", config.identity.admin_password, "admin"),
        "cumulo-demo": ("demo", config.identity.demo_password, "demo"),
    }
    clouds = {
        "clouds": {
            cloud: {
                "auth": {
                    "auth_url": auth_url,
                    "username": user,
                    "password": password,
                    "project_name": project,
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "region_name": config.region,
                "identity_api_version": 3,
                "interface": "public",
                **({"cacert": str(cacert)} if cacert else {}),
            }
            for cloud, (user, password, project) in users.items()
        }
    }
    files = {"clouds.yaml": state_dir / "clouds.yaml"}
    _write_secret(files["clouds.yaml"], yaml.safe_dump(clouds, sort_keys=False))
    for cloud, (user, password, project) in users.items():
        name = "openrc" if cloud == "cumulo" else "openrc-demo"
        files[name] = state_dir / name
        _write_secret(
            files[name],
            "\n".join(
                [
                    f"# Source me: credentials of the {user} user of cumulo",
                    f"export OS_AUTH_URL={auth_url}",
                    *([f"export OS_CACERT={cacert}"] if cacert else []),
                    f"export OS_USERNAME={user}",
                    f"export OS_PASSWORD='{password}'",
                    f"export OS_PROJECT_NAME={project}",
                    "export OS_USER_DOMAIN_NAME=Default",
                    "export OS_PROJECT_DOMAIN_NAME=Default",
                    f"export OS_REGION_NAME={config.region}",
                    "export OS_IDENTITY_API_VERSION=3",
                    "export OS_INTERFACE=public",
                    "unset OS_CLOUD",
                    "",
                ]
            ),
        )
    return files


def _write_secret(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)


_PASSWORD_ALPHABET = string.ascii_letters + string.digits


def new_password() -> str:
    """A generated password (~131 bits) of letters and digits only: one that began with "-"
    (as URL-safe base64 can) is read as an option by `openstack --os-password ...`."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(22))
