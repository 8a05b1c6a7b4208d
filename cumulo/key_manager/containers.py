"""Containers (Barbican's Containers API): named groups of a project's secrets."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import Conflict, NotFound
from cumulo.key_manager.core import (
    ContainerView,
    KeyManagerService,
    Page,
    acl_of,
    is_uuid,
    live_secret,
    paged,
    remove_acls,
)
from cumulo.key_manager.models import Container, ContainerConsumer, ContainerSecret
from cumulo.key_manager.validation import NewContainer


def _container_secrets(session: Session, container_ids: Sequence[str]) -> dict[str, list]:
    refs: dict[str, list[tuple[str | None, str]]] = {c: [] for c in container_ids}
    if container_ids:
        rows = session.execute(
            select(ContainerSecret.container_id, ContainerSecret.name, ContainerSecret.secret_id)
            .where(ContainerSecret.container_id.in_(container_ids))
            .order_by(ContainerSecret.id)
        )
        for container_id, name, secret_id in rows:
            refs[container_id].append((name, secret_id))
    return refs


def _container_view(session: Session, container_id: str) -> ContainerView | None:
    container = session.get(Container, container_id)
    if container is None:
        return None
    refs = _container_secrets(session, [container_id])[container_id]
    consumers = session.scalars(
        select(ContainerConsumer)
        .where(ContainerConsumer.container_id == container_id)
        .order_by(ContainerConsumer.created_at, ContainerConsumer.name)
    ).all()
    return ContainerView(
        container, refs, acl_of(session, "container", container_id), list(consumers)
    )


def _link_of(container_id: str, secret_id: str, name: str | None) -> tuple:
    """The clauses naming one container-secret link (a name or none)."""
    same_name = ContainerSecret.name.is_(None) if name is None else ContainerSecret.name == name
    return (
        ContainerSecret.container_id == container_id,
        ContainerSecret.secret_id == secret_id,
        same_name,
    )


async def create_container(
    service: KeyManagerService,
    ctx: RequestContext,
    new: NewContainer,
    secret_ids: dict[str, str] | None = None,
) -> Container:
    now = utcnow()
    container = Container(
        id=str(uuid.uuid4()),
        project_id=ctx.project_id or "",
        creator_id=ctx.user_id,
        name=new.name,
        type=new.type,
        created_at=now,
        updated_at=now,
    )

    def create(session: Session) -> None:
        for name, secret_id in new.secret_refs:
            secret = live_secret(session, secret_id, now)
            if secret is None or secret.project_id != container.project_id:
                raise NotFound(f"Secret provided for '{name}' doesn't exist.")
        session.add(container)
        session.flush()
        session.add_all(
            ContainerSecret(container_id=container.id, secret_id=sid, name=name)
            for name, sid in new.secret_refs
        )

    await service.db.run_write(create)
    return container


async def get_container(service: KeyManagerService, container_id: str) -> ContainerView:
    if not is_uuid(container_id):
        raise NotFound("Not Found. Provided container id is invalid.")
    view = await service.db.run_read(_container_view, container_id)
    if view is None:
        raise NotFound("Secrets container not found.")
    return view


async def list_containers(
    service: KeyManagerService,
    project_id: str,
    name: str | None,
    ctype: str | None,
    offset: int,
    limit: int,
) -> Page:
    def read(session: Session) -> Page:
        query = select(Container).where(Container.project_id == project_id)
        if name:
            query = query.where(Container.name == name)
        if ctype:
            query = query.where(Container.type == ctype)
        page = paged(session, query.order_by(Container.created_at, Container.id), offset, limit)
        refs = _container_secrets(session, [c.id for c in page.items])
        page.items = [ContainerView(c, refs[c.id]) for c in page.items]
        return page

    return await service.db.run_read(read)


async def delete_container(service: KeyManagerService, container_id: str) -> None:
    def remove(session: Session) -> None:
        for table in (ContainerSecret, ContainerConsumer):
            session.execute(delete(table).where(table.container_id == container_id))
        remove_acls(session, "container", [container_id])
        session.execute(delete(Container).where(Container.id == container_id))

    await service.db.run_write(remove)


async def add_container_secret(
    service: KeyManagerService, container: Container, name: str | None, secret_id: str
) -> None:
    def add(session: Session) -> None:
        secret = live_secret(session, secret_id, utcnow())
        if secret is None or secret.project_id != container.project_id:
            raise NotFound("Secret provided doesn't exist.")
        found = session.scalar(
            select(ContainerSecret).where(
                *_link_of(container.id, secret_id, name),
            )
        )
        if found is not None:
            raise Conflict(
                "Conflict. A secret with that name and ID is already stored in this "
                "container. The same secret can exist in a container as long as the name "
                "is unique."
            )
        session.add(ContainerSecret(container_id=container.id, secret_id=secret_id, name=name))

    await service.db.run_write(add)


async def remove_container_secret(
    service: KeyManagerService,
    container: Container,
    name: str | None,
    secret_id: str,
    secret_ref: str,
) -> None:
    def remove(session: Session) -> None:
        secret = live_secret(session, secret_id, utcnow())
        if secret is None or secret.project_id != container.project_id:
            raise NotFound(f"Secret '{name}' with reference '{secret_ref}' doesn't exist.")
        removed = session.execute(
            delete(ContainerSecret).where(
                *_link_of(container.id, secret_id, name),
            )
        ).rowcount  # type: ignore[attr-defined]
        if not removed:
            raise NotFound("Secret provided is not in the container")

    await service.db.run_write(remove)


async def add_consumer(service: KeyManagerService, container_id: str, name: str, url: str) -> None:
    """Register a consumer (again: no change)."""

    def add(session: Session) -> None:
        key = {"container_id": container_id, "name": name, "url": url}
        if session.get(ContainerConsumer, key) is None:
            session.add(ContainerConsumer(**key))

    await service.db.run_write(add)


async def remove_consumer(
    service: KeyManagerService, container_id: str, name: str, url: str
) -> None:
    def remove(session: Session) -> int:
        return session.execute(
            delete(ContainerConsumer).where(
                ContainerConsumer.container_id == container_id,
                ContainerConsumer.name == name,
                ContainerConsumer.url == url,
            )
        ).rowcount  # type: ignore[attr-defined]

    if not await service.db.run_write(remove):
        raise NotFound("Consumer not found.")
