"""Cinder's volume notifications (volume.create.start/end, volume.delete.start/end, sent by
the volume manager): the usage payload Cinder sends, from the volume's record."""

from __future__ import annotations

from typing import Any

from cumulo.volume.models import Volume


def volume_usage(volume: Volume) -> dict[str, Any]:
    return {
        "tenant_id": volume.project_id,
        "user_id": volume.user_id,
        "host": volume.host,
        "availability_zone": volume.availability_zone,
        "volume_id": volume.id,
        "volume_type": volume.type_id,
        "display_name": volume.name,
        "display_description": volume.description,
        "size": volume.size,
        "status": volume.status,
        "snapshot_id": volume.snapshot_id,
        "created_at": volume.created_at.isoformat() if volume.created_at else None,
        "launched_at": volume.updated_at.isoformat() if volume.updated_at else None,
        "replication_status": None,
        "metadata": [],
    }
