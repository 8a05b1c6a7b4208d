"""Orders (Barbican's Orders API): keys the service generates for a project.

`key` orders make one symmetric secret; `asymmetric` ones an RSA key pair (and the
passphrase when given) in an `rsa` container. Barbican hands orders to its worker; here
the key is generated before the answer, and the order is ACTIVE, or ERROR with the
reason when no generator supports what was asked for (as Barbican's worker records it).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.common.faults import NotFound
from cumulo.key_manager import crypto
from cumulo.key_manager.core import ACTIVE, ERROR, KeyManagerService, Page, paged
from cumulo.key_manager.models import Container, ContainerSecret, Order
from cumulo.key_manager.validation import NewOrder


async def create_order(service: KeyManagerService, ctx: RequestContext, new: NewOrder) -> Order:
    """The order, with what it generated, in one transaction."""
    now = utcnow()
    order = Order(
        id=str(uuid.uuid4()),
        project_id=ctx.project_id or "",
        creator_id=ctx.user_id,
        type=new.type,
        # A passphrase is kept only as the passphrase secret, never in the order.
        meta={k: v for k, v in new.meta.items() if k != "passphrase"},
        status=ACTIVE,
        created_at=now,
        updated_at=now,
    )
    rows: list[Any] = []
    algorithm = (new.secret.algorithm or "").lower()
    bits = new.secret.bit_length or 0
    if new.type == "key" and crypto.symmetric_supported(algorithm, bits):
        secret = service.secret_row(ctx, new.secret, "symmetric")
        secret.content_type = new.secret.content_type or "application/octet-stream"
        key = crypto.generate_symmetric_key(bits)
        secret.cipher_text = await service.seal(secret.project_id, secret.id, key)
        order.secret_id = secret.id
        rows.append(secret)
    elif new.type == "asymmetric" and algorithm == "rsa" and bits in crypto.RSA_BIT_LENGTHS:
        rows = await _rsa_container(service, ctx, new, order)
    else:
        order.status = ERROR
        order.error_status_code = "400"
        order.error_reason = (
            "Secret Generation attempt not allowed - no plugin supports "
            f"algorithm '{algorithm}' with bit_length {bits}"
        )[:255]

    def create(session: Session) -> None:
        for row in rows:
            session.add(row)
            session.flush()
        session.add(order)

    await service.db.run_write(create)
    return order


async def _rsa_container(
    service: KeyManagerService, ctx: RequestContext, new: NewOrder, order: Order
) -> list:
    passphrase = new.meta.get("passphrase") or None
    private_pem, public_pem = await asyncio.to_thread(
        crypto.generate_rsa_key_pair, new.secret.bit_length or 2048, passphrase
    )
    content_type = new.secret.content_type or "application/octet-stream"
    parts: list[tuple[str, str, bytes]] = [
        ("private_key", "private", private_pem),
        ("public_key", "public", public_pem),
    ]
    if passphrase:
        parts.append(("private_key_passphrase", "passphrase", passphrase.encode()))
    rows: list[Any] = []
    links = []
    now = utcnow()
    container = Container(
        id=str(uuid.uuid4()),
        project_id=ctx.project_id or "",
        creator_id=ctx.user_id,
        name=new.secret.name,
        type="rsa",
        created_at=now,
        updated_at=now,
    )
    for link_name, secret_type, payload in parts:
        secret = service.secret_row(ctx, new.secret, secret_type)
        secret.content_type = content_type
        secret.cipher_text = await service.seal(secret.project_id, secret.id, payload)
        rows.append(secret)
        links.append(
            ContainerSecret(container_id=container.id, secret_id=secret.id, name=link_name)
        )
    order.container_id = container.id
    return [*rows, container, *links]


async def get_order(service: KeyManagerService, ctx: RequestContext, order_id: str) -> Order:
    """Barbican looks orders up in the caller's project only (else 404)."""
    order = await service.db.run_read(lambda s: s.get(Order, order_id))
    if order is None or order.project_id != ctx.project_id:
        raise NotFound("Order not found.")
    return order


async def list_orders(service: KeyManagerService, project_id: str, offset: int, limit: int) -> Page:
    def read(session: Session) -> Page:
        query = select(Order).where(Order.project_id == project_id)
        return paged(session, query.order_by(Order.created_at, Order.id), offset, limit)

    return await service.db.run_read(read)


async def delete_order(service: KeyManagerService, order_id: str) -> None:
    await service.db.run_write(lambda s: s.execute(delete(Order).where(Order.id == order_id)))
