"""The Key Manager service (Barbican v1): policy, project keys, secrets (payloads, user
metadata, consumers) and ACLs; containers and orders in their own modules.

Rules and storage, no HTTP: the API modules under cumulo.key_manager.api parse the
requests and render Barbican's bodies. Payloads are kept only encrypted, under their
project's key (see cumulo.key_manager.crypto); every change is one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cumulo.common.auth import TokenValidator
from cumulo.common.config import CumuloConfig
from cumulo.common.context import RequestContext
from cumulo.common.db import Database, utcnow
from cumulo.common.faults import Conflict, Forbidden, NotFound
from cumulo.common.policy import Policy
from cumulo.key_manager import crypto
from cumulo.key_manager.models import (
    Acl,
    AclUser,
    Container,
    ContainerConsumer,
    ContainerSecret,
    ProjectKey,
    Secret,
    SecretConsumer,
    SecretMetadatum,
)
from cumulo.key_manager.policies import KEY_MANAGER_RULES
from cumulo.key_manager.validation import NewSecret

ACTIVE, ERROR = "ACTIVE", "ERROR"


@dataclass
class AclView:
    """One entity's read ACL (None when it has none: project access, no users)."""

    project_access: bool = True
    users: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class SecretView:
    secret: Secret
    acl: AclView | None
    consumers: list[SecretConsumer] = field(default_factory=list)


@dataclass
class ContainerView:
    container: Container
    secrets: list[tuple[str | None, str]]  # (name, secret id)
    acl: AclView | None = None
    consumers: list[ContainerConsumer] = field(default_factory=list)


@dataclass
class Page:
    items: list[Any]
    total: int


def is_uuid(value: str) -> bool:
    """Barbican's validate_id_is_uuid: the canonical lowercase form only."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _not_expired(now: datetime):
    return or_(Secret.expiration.is_(None), Secret.expiration > now)


def acl_of(session: Session, entity_type: str, entity_id: str) -> AclView | None:
    acl = session.scalar(
        select(Acl).where(
            Acl.entity_type == entity_type, Acl.entity_id == entity_id, Acl.operation == "read"
        )
    )
    if acl is None:
        return None
    users = session.scalars(
        select(AclUser.user_id).where(AclUser.acl_id == acl.id).order_by(AclUser.user_id)
    ).all()
    return AclView(acl.project_access, list(users), acl.created_at, acl.updated_at)


def live_secret(session: Session, secret_id: str, now: datetime) -> Secret | None:
    return session.scalar(select(Secret).where(Secret.id == secret_id, _not_expired(now)))


def _secret_view(session: Session, secret_id: str, now: datetime) -> SecretView | None:
    secret = live_secret(session, secret_id, now)
    if secret is None:
        return None
    consumers = session.scalars(
        select(SecretConsumer)
        .where(SecretConsumer.secret_id == secret_id)
        .order_by(SecretConsumer.created_at)
    ).all()
    return SecretView(secret, acl_of(session, "secret", secret_id), list(consumers))


def remove_acls(session: Session, entity_type: str, entity_ids: Sequence[str]) -> None:
    acl_ids = select(Acl.id).where(Acl.entity_type == entity_type, Acl.entity_id.in_(entity_ids))
    session.execute(delete(AclUser).where(AclUser.acl_id.in_(acl_ids)))
    session.execute(
        delete(Acl).where(Acl.entity_type == entity_type, Acl.entity_id.in_(entity_ids))
    )


def _delete_secrets(session: Session, secret_ids: Sequence[str]) -> None:
    for table in (SecretMetadatum, SecretConsumer, ContainerSecret):
        session.execute(delete(table).where(table.secret_id.in_(secret_ids)))
    remove_acls(session, "secret", secret_ids)
    session.execute(delete(Secret).where(Secret.id.in_(secret_ids)))


def paged(session: Session, query: Select, offset: int, limit: int) -> Page:
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    items = session.scalars(query.offset(offset).limit(limit)).all()
    return Page(list(items), total or 0)


_SECRET_COLUMNS = {
    "created": Secret.created_at,
    "updated": Secret.updated_at,
    "expiration": Secret.expiration,
    "algorithm": Secret.algorithm,
    "bit_length": Secret.bit_length,
    "mode": Secret.mode,
    "name": Secret.name,
    "secret_type": Secret.secret_type,
    # Every listed secret is ACTIVE: sorting by status keeps their order.
    "status": Secret.created_at,
}


@dataclass
class SecretFilters:
    name: str | None = None
    alg: str | None = None
    mode: str | None = None
    bits: int = 0
    secret_type: str | None = None
    created: list[tuple[str, datetime]] = field(default_factory=list)
    updated: list[tuple[str, datetime]] = field(default_factory=list)
    expiration: list[tuple[str, datetime]] = field(default_factory=list)
    sort: list[tuple[str, str]] = field(default_factory=list)
    acl_only_user: str | None = None


def _date_clauses(column, filters: list[tuple[str, datetime]]) -> list:
    ops = {
        "gt": column.__gt__,
        "gte": column.__ge__,
        "lt": column.__lt__,
        "lte": column.__le__,
        "eq": column.__eq__,
    }
    return [ops[op](when) for op, when in filters]


def _list_secrets(
    session: Session, project_id: str, f: SecretFilters, offset: int, limit: int, now: datetime
) -> Page:
    query = select(Secret).where(_not_expired(now))
    if f.acl_only_user:
        acl_ids = select(AclUser.acl_id).where(AclUser.user_id == f.acl_only_user)
        shared = select(Acl.entity_id).where(Acl.entity_type == "secret", Acl.id.in_(acl_ids))
        query = query.where(Secret.id.in_(shared))
    else:
        query = query.where(Secret.project_id == project_id)
    # Barbican filters name, alg and mode with SQL LIKE (a caller's % matches anything).
    if f.name:
        query = query.where(Secret.name.like(f.name))
    if f.alg:
        query = query.where(Secret.algorithm.like(f.alg))
    if f.mode:
        query = query.where(Secret.mode.like(f.mode))
    if f.bits > 0:
        query = query.where(Secret.bit_length == f.bits)
    if f.secret_type:
        query = query.where(Secret.secret_type == f.secret_type)
    for column, filters in (
        (Secret.created_at, f.created),
        (Secret.updated_at, f.updated),
        (Secret.expiration, f.expiration),
    ):
        query = query.where(*_date_clauses(column, filters))
    order = [
        _SECRET_COLUMNS[key].desc() if direction == "desc" else _SECRET_COLUMNS[key].asc()
        for key, direction in f.sort
    ]
    query = query.order_by(*order, Secret.created_at, Secret.id)
    page = paged(session, query, offset, limit)
    ids = [s.id for s in page.items]
    consumers: dict[str, list[SecretConsumer]] = {i: [] for i in ids}
    if ids:
        for consumer in session.scalars(
            select(SecretConsumer).where(SecretConsumer.secret_id.in_(ids))
        ):
            consumers[consumer.secret_id].append(consumer)
    page.items = [SecretView(s, None, consumers[s.id]) for s in page.items]
    return page


class KeyManagerService:
    def __init__(
        self, config: CumuloConfig, state_dir: Path, db: Database, validator: TokenValidator
    ) -> None:
        self.config = config
        self.settings = config.key_manager
        self.db = db
        self.validator = validator
        self.policy = Policy(KEY_MANAGER_RULES, state_dir / config.policy_file)
        self.master_key = crypto.load_master_key(state_dir / "key-manager")
        self._project_keys: dict[str, bytes] = {}

    @property
    def host_href(self) -> str:
        """The base of every *_ref (Barbican's host_href): <base>/v1/secrets/<id>."""
        base = self.settings.host_href or self.config.public_url(self.config.ports.key_manager)
        return base.rstrip("/")

    def href(self, collection: str, entity_id: str) -> str:
        return f"{self.host_href}/v1/{collection}/{entity_id}"

    async def close(self) -> None:
        await self.validator.client.close()
        await self.db.dispose()

    # -- policy -----------------------------------------------------------------------

    def authorize(
        self, rule: str, ctx: RequestContext, operation: str, target: dict[str, Any] | None = None
    ) -> None:
        """Barbican's enforce_rbac: 403 '<operation> attempt not allowed - ...'."""
        if not self.policy.check(rule, ctx, {"target": target or {}}):
            raise Forbidden(
                f"{operation} attempt not allowed - please review your user/project privileges"
            )

    @staticmethod
    def acl_target(
        kind: str, project_id: str, creator_id: str | None, acl: AclView | None, user_id: str
    ) -> dict[str, Any]:
        entity: dict[str, Any] = {"project_id": project_id, "creator_id": creator_id or ""}
        entity["read_project_access"] = acl.project_access if acl is not None else True
        if acl is not None and user_id in acl.users:
            entity["read"] = "read"
        return {kind: entity}

    def secret_target(self, view: SecretView, ctx: RequestContext) -> dict[str, Any]:
        s = view.secret
        return self.acl_target("secret", s.project_id, s.creator_id, view.acl, ctx.user_id)

    def container_target(self, view: ContainerView, ctx: RequestContext) -> dict[str, Any]:
        c = view.container
        return self.acl_target("container", c.project_id, c.creator_id, view.acl, ctx.user_id)

    # -- project keys -----------------------------------------------------------------

    async def project_key(self, project_id: str) -> bytes:
        """The project's key-encryption key, made (and stored wrapped) on first use."""
        key = self._project_keys.get(project_id)
        if key is not None:
            return key
        row = await self.db.run_read(lambda s: s.get(ProjectKey, project_id))
        if row is None:
            key, wrapped = crypto.new_project_key(self.master_key, project_id)
            try:
                await self.db.run_write(
                    lambda s: s.add(ProjectKey(project_id=project_id, wrapped_key=wrapped))
                )
            except IntegrityError:  # another request made it first: take that one
                row = await self.db.run_read(lambda s: s.get(ProjectKey, project_id))
                assert row is not None
                key = crypto.unwrap_project_key(self.master_key, project_id, row.wrapped_key)
        else:
            key = crypto.unwrap_project_key(self.master_key, project_id, row.wrapped_key)
        self._project_keys[project_id] = key
        return key

    async def seal(self, project_id: str, secret_id: str, payload: bytes) -> str:
        return crypto.encrypt(await self.project_key(project_id), payload, secret_id.encode())

    async def open_payload(self, secret: Secret) -> bytes:
        assert secret.cipher_text is not None
        key = await self.project_key(secret.project_id)
        return crypto.decrypt(key, secret.cipher_text, secret.id.encode())

    # -- secrets ----------------------------------------------------------------------

    def secret_row(self, ctx: RequestContext, new: NewSecret, secret_type: str | None = None):
        now = utcnow()
        return Secret(
            id=str(uuid.uuid4()),
            project_id=ctx.project_id or "",
            creator_id=ctx.user_id,
            name=new.name,
            secret_type=secret_type or new.secret_type,
            algorithm=new.algorithm,
            bit_length=new.bit_length,
            mode=new.mode,
            expiration=new.expiration,
            content_type=None,
            cipher_text=None,
            created_at=now,
            updated_at=now,
        )

    async def create_secret(self, ctx: RequestContext, new: NewSecret) -> Secret:
        secret = self.secret_row(ctx, new)
        if new.payload is not None:
            secret.content_type = new.content_type
            secret.cipher_text = await self.seal(secret.project_id, secret.id, new.payload)
        await self.db.run_write(lambda s: s.add(secret))
        return secret

    async def get_secret(self, secret_id: str) -> SecretView:
        """A live (not expired) secret with its ACL, or Barbican's 404."""
        if not is_uuid(secret_id):
            raise NotFound("Not Found. Provided secret id is invalid.")
        view = await self.db.run_read(_secret_view, secret_id, utcnow())
        if view is None:
            raise NotFound("Secret not found.")
        return view

    async def store_payload(self, secret: Secret, payload: bytes, content_type: str) -> None:
        """PUT: the payload of a secret that has none yet (409 if it has one meanwhile)."""
        sealed = await self.seal(secret.project_id, secret.id, payload)

        def store(session: Session) -> int:
            result = session.execute(
                update(Secret)
                .where(Secret.id == secret.id, Secret.cipher_text.is_(None))
                .values(cipher_text=sealed, content_type=content_type, updated_at=utcnow())
            )
            return result.rowcount  # type: ignore[attr-defined]

        if not await self.db.run_write(store):
            raise Conflict("Secret already has data, cannot modify it.")

    async def delete_secret(self, secret_id: str) -> None:
        await self.db.run_write(_delete_secrets, [secret_id])

    async def list_secrets(
        self, project_id: str, filters: SecretFilters, offset: int, limit: int
    ) -> Page:
        return await self.db.run_read(_list_secrets, project_id, filters, offset, limit, utcnow())

    # -- user metadata ----------------------------------------------------------------

    async def metadata(self, secret_id: str) -> dict[str, str]:
        def read(session: Session) -> dict[str, str]:
            rows = session.execute(
                select(SecretMetadatum.key, SecretMetadatum.value).where(
                    SecretMetadatum.secret_id == secret_id
                )
            )
            return {key: value for key, value in rows}

        return await self.db.run_read(read)

    async def replace_metadata(self, secret_id: str, metadata: dict[str, str]) -> None:
        def replace(session: Session) -> None:
            session.execute(delete(SecretMetadatum).where(SecretMetadatum.secret_id == secret_id))
            session.add_all(
                SecretMetadatum(secret_id=secret_id, key=k, value=v) for k, v in metadata.items()
            )

        await self.db.run_write(replace)

    async def set_metadatum(self, secret_id: str, key: str, value: str, *, create: bool) -> None:
        """create: 409 when the key exists; else 404 when it does not."""

        def write(session: Session) -> None:
            row = session.get(SecretMetadatum, {"secret_id": secret_id, "key": key})
            if create and row is not None:
                raise Conflict("Conflict. Key in request is already in the secret metadata")
            if not create and row is None:
                raise NotFound("Secret metadata not found.")
            if row is None:
                session.add(SecretMetadatum(secret_id=secret_id, key=key, value=value))
            else:
                row.value = value

        await self.db.run_write(write)

    async def delete_metadatum(self, secret_id: str, key: str) -> None:
        def remove(session: Session) -> int:
            return session.execute(
                delete(SecretMetadatum).where(
                    SecretMetadatum.secret_id == secret_id, SecretMetadatum.key == key
                )
            ).rowcount  # type: ignore[attr-defined]

        if not await self.db.run_write(remove):
            raise NotFound("Secret metadata not found.")

    # -- consumers --------------------------------------------------------------------

    async def add_consumer(self, secret_id: str, service: str, rtype: str, rid: str) -> None:
        def add(session: Session) -> None:
            key = {"secret_id": secret_id, "service": service}
            key.update(resource_type=rtype, resource_id=rid)
            if session.get(SecretConsumer, key) is None:
                session.add(SecretConsumer(**key))

        await self.db.run_write(add)

    async def remove_consumer(self, secret_id: str, service: str, rtype: str, rid: str) -> None:
        def remove(session: Session) -> int:
            return session.execute(
                delete(SecretConsumer).where(
                    SecretConsumer.secret_id == secret_id,
                    SecretConsumer.service == service,
                    SecretConsumer.resource_type == rtype,
                    SecretConsumer.resource_id == rid,
                )
            ).rowcount  # type: ignore[attr-defined]

        if not await self.db.run_write(remove):
            raise NotFound("Consumer not found.")

    # -- ACLs -------------------------------------------------------------------------

    async def set_acl(
        self, entity_type: str, entity_id: str, body: dict[str, dict], *, replace: bool
    ) -> None:
        """PUT (replace: a missing project-access is true, missing users none, other
        operations removed) or PATCH (only what is given changes)."""

        def write(session: Session) -> None:
            wanted = body.get("read")
            acl = session.scalar(
                select(Acl).where(
                    Acl.entity_type == entity_type,
                    Acl.entity_id == entity_id,
                    Acl.operation == "read",
                )
            )
            if not wanted:
                if replace and acl is not None:
                    remove_acls(session, entity_type, [entity_id])
                return
            now = utcnow()
            access = wanted.get("project-access", True if replace else None)
            users = wanted.get("users", [] if replace else None)
            if acl is None:
                acl = Acl(
                    entity_type=entity_type,
                    entity_id=entity_id,
                    operation="read",
                    project_access=True if access is None else access,
                    created_at=now,
                    updated_at=now,
                )
                session.add(acl)
                session.flush()
            else:
                if access is not None:
                    acl.project_access = access
                acl.updated_at = now
            if users is not None:
                session.execute(delete(AclUser).where(AclUser.acl_id == acl.id))
                session.add_all(AclUser(acl_id=acl.id, user_id=u) for u in dict.fromkeys(users))

        await self.db.run_write(write)

    async def delete_acl(self, entity_type: str, entity_id: str) -> None:
        await self.db.run_write(remove_acls, entity_type, [entity_id])

    async def acl(self, entity_type: str, entity_id: str) -> AclView | None:
        return await self.db.run_read(acl_of, entity_type, entity_id)
