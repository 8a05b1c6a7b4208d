"""User messages: Cinder's action and detail codes, and recording one in the caller's
transaction (event id VOLUME_<resource>_<action>_<detail>)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.common.context import RequestContext
from cumulo.common.db import utcnow
from cumulo.volume.models import Message

# How long a message is kept (Cinder's message_ttl default: 30 days).
MESSAGE_TTL = timedelta(days=30)

SCHEDULE_ALLOCATE_VOLUME = ("001", "schedule allocate volume")
EXTEND_VOLUME = ("007", "extend volume")

NO_BACKEND_AVAILABLE = ("003", "Could not find any available weighted backend.")


def record(
    session: AsyncSession,
    ctx: RequestContext,
    action: tuple[str, str],
    detail: tuple[str, str],
    resource_uuid: str,
    resource_type: str = "VOLUME",
    level: str = "ERROR",
) -> None:
    now = utcnow()
    session.add(
        Message(
            id=str(uuid.uuid4()),
            project_id=ctx.project_id or "",
            request_id=ctx.request_id,
            resource_type=resource_type,
            resource_uuid=resource_uuid,
            event_id=f"VOLUME_{resource_type}_{action[0]}_{detail[0]}",
            message_level=level,
            user_message=f"{action[1]}:{detail[1]}",
            created_at=now,
            expires_at=now + MESSAGE_TTL,
        )
    )
