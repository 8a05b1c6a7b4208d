"""A user's application-credential access rules as stored and shown (tokens carry them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.identity.models import AccessRule


def render_access_rule(rule: AccessRule) -> dict[str, Any]:
    return {"id": rule.id, "service": rule.service, "path": rule.path, "method": rule.method}


async def access_rules_of(session: AsyncSession, ids: list[str] | None) -> list[AccessRule]:
    if not ids:
        return []
    found = await session.scalars(select(AccessRule).where(AccessRule.id.in_(ids)))
    rows = {r.id: r for r in found}
    return [rows[i] for i in ids if i in rows]
