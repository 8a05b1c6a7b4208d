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

# Every status Cinder knows (what os-reset_status accepts).
VOLUME_STATUSES = (
    CREATING, AVAILABLE, RESERVED, ATTACHING, IN_USE, DETACHING, DELETING, ERROR,
    ERROR_DELETING, EXTENDING, ERROR_EXTENDING, UPLOADING, DOWNLOADING, MAINTENANCE,
    AWAITING_TRANSFER, RETYPING, "managing", "error_managing", "restoring-backup",
    "error_restoring", "backing-up", "error_backing-up",
)  # fmt: skip
SNAPSHOT_STATUSES = (
    CREATING, AVAILABLE, DELETING, ERROR, ERROR_DELETING, "unmanaging", "backing-up",
    "restoring",
)  # fmt: skip

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


def require_snapshot_status(status: str, allowed: tuple[str, ...], action: str) -> None:
    if status not in allowed:
        raise BadRequest(
            f"Invalid snapshot: Snapshot status must be {' or '.join(allowed)} to {action}, "
            f"but current status is: {status}."
        )
