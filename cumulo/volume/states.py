"""Volume, snapshot and attachment statuses, as Cinder names them, and the checks
each action makes on them (Cinder answers 400 "Invalid volume" to a wrong status)."""

from __future__ import annotations

from cumulo.common.faults import BadRequest

# Volume statuses.
CREATING = "creating"
AVAILABLE = "available"
RESERVED = "reserved"
ATTACHING = "attaching"
IN_USE = "in-use"
DETACHING = "detaching"
DELETING = "deleting"
ERROR = "error"
ERROR_DELETING = "error_deleting"
EXTENDING = "extending"
ERROR_EXTENDING = "error_extending"
UPLOADING = "uploading"
DOWNLOADING = "downloading"

MAINTENANCE = "maintenance"
AWAITING_TRANSFER = "awaiting-transfer"
RETYPING = "retyping"
# Manage (adopting a backend object) and unmanage (letting go of one, data kept).
MANAGING = "managing"
ERROR_MANAGING = "error_managing"
UNMANAGING = "unmanaging"
ERROR_UNMANAGING = "error_unmanaging"
ERROR_MANAGING_DELETING = "error_managing_deleting"
# What the API shows for the statuses Cinder keeps internal (its v3 view's map).
SHOWN_AS = {MANAGING: CREATING, ERROR_MANAGING: ERROR, ERROR_MANAGING_DELETING: DELETING}

# Every status Cinder knows (what os-reset_status accepts).
VOLUME_STATUSES = (
    CREATING, AVAILABLE, RESERVED, ATTACHING, IN_USE, DETACHING, DELETING, ERROR,
    ERROR_DELETING, EXTENDING, ERROR_EXTENDING, UPLOADING, DOWNLOADING, MAINTENANCE,
    AWAITING_TRANSFER, RETYPING, MANAGING, ERROR_MANAGING, "restoring-backup",
    "error_restoring", "backing-up", "error_backing-up",
)  # fmt: skip
SNAPSHOT_STATUSES = (
    CREATING, AVAILABLE, DELETING, ERROR, ERROR_DELETING, "unmanaging", "backing-up",
    "restoring",
)  # fmt: skip

# A volume's migration_status (Cinder's): the API starts a move (`starting`), the
# source backend copies (`migrating`) then swaps (`completing`); it ends `success` or
# `error`. The new volume being filled shows `target:<id of the volume moved>`.
MIGRATION_STARTING = "starting"
MIGRATING = "migrating"
MIGRATION_COMPLETING = "completing"
MIGRATION_SUCCESS = "success"
MIGRATION_ERROR = "error"
MIGRATION_TARGET = "target:"
# What os-reset_status may set ("none" clears it).
MIGRATION_STATUSES = (
    MIGRATING, MIGRATION_ERROR, MIGRATION_SUCCESS, MIGRATION_COMPLETING, "none",
    MIGRATION_STARTING,
)  # fmt: skip
MIGRATABLE = (AVAILABLE, IN_USE)

# attach_status of a volume, status of an attachment.
DETACHED = "detached"
ATTACHED = "attached"

# What each volume action accepts (Cinder's volume/api.py checks).
DELETABLE = (AVAILABLE, ERROR, ERROR_EXTENDING, "error_restoring", "error_managing")
EXTENDABLE = (AVAILABLE,)
EXTENDABLE_IN_USE = (AVAILABLE, IN_USE)  # 3.42: an attached volume may grow
SNAPSHOTTABLE = (AVAILABLE,)
SNAPSHOTTABLE_FORCED = (AVAILABLE, IN_USE)
UPLOADABLE = (AVAILABLE,)
UPLOADABLE_FORCED = (AVAILABLE, IN_USE)
CLONABLE = (AVAILABLE, IN_USE)
ATTACHABLE = (AVAILABLE,)
# A shared volume takes another server while it is being attached to one.
ATTACHABLE_MULTI = (AVAILABLE, IN_USE, RESERVED, ATTACHING)
READONLY_SETTABLE = (AVAILABLE, IN_USE)
RETYPABLE = (AVAILABLE, IN_USE)
REIMAGEABLE = (AVAILABLE, ERROR)
REIMAGEABLE_RESERVED = (AVAILABLE, ERROR, RESERVED)  # os-reimage with reimage_reserved

# Backups (Cinder's backup statuses), and what the volume shows meanwhile.
RESTORING = "restoring"
BACKUP_STATUSES = (CREATING, AVAILABLE, DELETING, ERROR, ERROR_DELETING, RESTORING)
BACKING_UP = "backing-up"
RESTORING_BACKUP = "restoring-backup"
ERROR_RESTORING = "error_restoring"
BACKUPABLE = (AVAILABLE,)
BACKUPABLE_FORCED = (AVAILABLE, IN_USE)
BACKUP_DELETABLE = (AVAILABLE, ERROR)

# Snapshot statuses.
SNAPSHOT_DELETABLE = (AVAILABLE, ERROR)
# What os-update_snapshot_status may set, from which status (Cinder's snapshot_actions).
SNAPSHOT_STATUS_UPDATES = {
    CREATING: (CREATING, AVAILABLE, ERROR),
    DELETING: (DELETING, ERROR_DELETING),
}


def require_volume_status(status: str, allowed: tuple[str, ...], action: str) -> None:
    if status not in allowed:
        raise BadRequest(
            f"Invalid volume: Volume status must be {' or '.join(allowed)} to {action}, "
            f"but current status is: {status}."
        )


def is_migrating(migration_status: str | None) -> bool:
    """Moving between backends, or the new volume of such a move (Cinder's
    _is_volume_migrating: none, error, success and deleting are at rest)."""
    return migration_status not in (None, "deleting", MIGRATION_ERROR, MIGRATION_SUCCESS)


def require_not_migrating(volume_id: str, migration_status: str | None, action: str) -> None:
    if is_migrating(migration_status):
        raise BadRequest(
            f"Invalid volume: Volume {volume_id} is migrating (migration status "
            f"{migration_status}): cannot {action} it now."
        )


def require_snapshot_status(status: str, allowed: tuple[str, ...], action: str) -> None:
    if status not in allowed:
        raise BadRequest(
            f"Invalid snapshot: Snapshot status must be {' or '.join(allowed)} to {action}, "
            f"but current status is: {status}."
        )
