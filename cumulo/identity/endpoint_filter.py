"""Which endpoints a project's catalog shows (OS-EP-FILTER), from its associations."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cumulo.identity.models import Endpoint, EndpointGroup, ProjectEndpoint, ProjectEndpointGroup

# Endpoint-group filter keys and the endpoint columns they match.
FILTER_COLUMNS = {
    "interface": Endpoint.interface,
    "service_id": Endpoint.service_id,
    "region_id": Endpoint.region_id,
}


async def endpoints_of_group(session: AsyncSession, filters: dict[str, str]) -> list[Endpoint]:
    query = select(Endpoint)
    for key, value in filters.items():
        query = query.where(FILTER_COLUMNS[key] == value)
    return list((await session.scalars(query.order_by(Endpoint.id))).all())


async def project_endpoint_ids(session: AsyncSession, project_id: str) -> set[str] | None:
    """The endpoints associated with the project, directly or through endpoint groups;
    None when it has no association at all (then its catalog is the whole catalog)."""
    direct = set(
        await session.scalars(
            select(ProjectEndpoint.endpoint_id).where(ProjectEndpoint.project_id == project_id)
        )
    )
    groups = (
        await session.scalars(
            select(EndpointGroup)
            .join(ProjectEndpointGroup, ProjectEndpointGroup.endpoint_group_id == EndpointGroup.id)
            .where(ProjectEndpointGroup.project_id == project_id)
        )
    ).all()
    if not direct and not groups:
        return None
    for group in groups:
        direct |= {e.id for e in await endpoints_of_group(session, group.filters or {})}
    return direct
