"""Instance states as Nova names them, the API status derived from them, and the
rule of which actions each state allows.

vm_state is where the instance is at rest; task_state what is being done to it;
power_state what the hypervisor last said. The API `status` is a function of the
first two (Nova's _STATE_MAP).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from enum import IntEnum
from functools import wraps
from typing import Any, TypeVar


class VmState:
    ACTIVE = "active"
    BUILDING = "building"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    STOPPED = "stopped"
    RESCUED = "rescued"
    RESIZED = "resized"
    SOFT_DELETED = "soft-delete"
    DELETED = "deleted"
    ERROR = "error"
    SHELVED = "shelved"
    SHELVED_OFFLOADED = "shelved_offloaded"


class TaskState:
    SCHEDULING = "scheduling"
    BLOCK_DEVICE_MAPPING = "block_device_mapping"
    NETWORKING = "networking"
    SPAWNING = "spawning"
    IMAGE_SNAPSHOT = "image_snapshot"
    IMAGE_SNAPSHOT_PENDING = "image_snapshot_pending"
    IMAGE_PENDING_UPLOAD = "image_pending_upload"
    IMAGE_UPLOADING = "image_uploading"
    UPDATING_PASSWORD = "updating_password"
    RESIZE_PREP = "resize_prep"
    RESIZE_MIGRATING = "resize_migrating"
    RESIZE_MIGRATED = "resize_migrated"
    RESIZE_FINISH = "resize_finish"
    RESIZE_REVERTING = "resize_reverting"
    RESIZE_CONFIRMING = "resize_confirming"
    REBOOTING = "rebooting"
    REBOOT_PENDING = "reboot_pending"
    REBOOT_STARTED = "reboot_started"
    REBOOTING_HARD = "rebooting_hard"
    REBOOT_PENDING_HARD = "reboot_pending_hard"
    REBOOT_STARTED_HARD = "reboot_started_hard"
    PAUSING = "pausing"
    UNPAUSING = "unpausing"
    SUSPENDING = "suspending"
    RESUMING = "resuming"
    POWERING_OFF = "powering-off"
    POWERING_ON = "powering-on"
    RESCUING = "rescuing"
    UNRESCUING = "unrescuing"
    REBUILDING = "rebuilding"
    REBUILD_BLOCK_DEVICE_MAPPING = "rebuild_block_device_mapping"
    REBUILD_SPAWNING = "rebuild_spawning"
    MIGRATING = "migrating"
    DELETING = "deleting"
    SOFT_DELETING = "soft-deleting"
    RESTORING = "restoring"
    SHELVING = "shelving"
    SHELVING_IMAGE_PENDING_UPLOAD = "shelving_image_pending_upload"
    SHELVING_IMAGE_UPLOADING = "shelving_image_uploading"
    SHELVING_OFFLOADING = "shelving_offloading"
    UNSHELVING = "unshelving"


class PowerState(IntEnum):
    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


_REBOOT = {
    TaskState.REBOOTING: "REBOOT",
    TaskState.REBOOT_PENDING: "REBOOT",
    TaskState.REBOOT_STARTED: "REBOOT",
    TaskState.REBOOTING_HARD: "HARD_REBOOT",
    TaskState.REBOOT_PENDING_HARD: "HARD_REBOOT",
    TaskState.REBOOT_STARTED_HARD: "HARD_REBOOT",
}
_REBUILD = {
    TaskState.REBUILDING: "REBUILD",
    TaskState.REBUILD_BLOCK_DEVICE_MAPPING: "REBUILD",
    TaskState.REBUILD_SPAWNING: "REBUILD",
}
_RESIZE = {
    TaskState.RESIZE_PREP: "RESIZE",
    TaskState.RESIZE_MIGRATING: "RESIZE",
    TaskState.RESIZE_MIGRATED: "RESIZE",
    TaskState.RESIZE_FINISH: "RESIZE",
}

# vm_state -> {task_state or "default": API status}; Nova's nova/api/openstack/common.py.
_STATUS: dict[str, dict[str, str]] = {
    VmState.ACTIVE: {
        "default": "ACTIVE",
        **_REBOOT,
        **_REBUILD,
        **_RESIZE,
        TaskState.UPDATING_PASSWORD: "PASSWORD",
        TaskState.MIGRATING: "MIGRATING",
    },
    VmState.BUILDING: {"default": "BUILD"},
    VmState.STOPPED: {"default": "SHUTOFF", **_RESIZE, **_REBUILD},
    VmState.RESIZED: {"default": "VERIFY_RESIZE", TaskState.RESIZE_REVERTING: "REVERT_RESIZE"},
    VmState.PAUSED: {"default": "PAUSED", TaskState.MIGRATING: "MIGRATING"},
    VmState.SUSPENDED: {"default": "SUSPENDED"},
    VmState.RESCUED: {"default": "RESCUE"},
    VmState.ERROR: {"default": "ERROR", **_REBUILD},
    VmState.DELETED: {"default": "DELETED"},
    VmState.SOFT_DELETED: {"default": "SOFT_DELETED"},
    VmState.SHELVED: {"default": "SHELVED"},
    VmState.SHELVED_OFFLOADED: {"default": "SHELVED_OFFLOADED"},
}


def api_status(vm_state: str, task_state: str | None) -> str:
    by_task = _STATUS.get(vm_state)
    if by_task is None:
        return "UNKNOWN"
    return by_task.get(task_state or "default", by_task["default"])


def states_for_statuses(statuses: Iterable[str]) -> tuple[list[str], list[str]]:
    """The vm and task states behind API statuses (a list filter's `status`), as Nova
    inverts them; a "default" task state means any task state."""
    wanted = {s.strip().lower() for s in statuses}
    vm_states: set[str] = set()
    task_states: set[str] = set()
    for vm_state, by_task in _STATUS.items():
        for task_state, status in by_task.items():
            if status.lower() in wanted:
                vm_states.add(vm_state)
                task_states.add(task_state)
    return sorted(vm_states), sorted(task_states)


class InstanceInvalidState(Exception):
    """An action asked for in a state that does not allow it (the API answers 409)."""

    def __init__(self, action: str, attr: str, state: str | None) -> None:
        self.action, self.attr, self.state = action, attr, state
        super().__init__(f"Cannot '{action}' instance while it is in {attr} {state}")


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def check_state(
    vm_state: Iterable[str] | None = None,
    task_state: Iterable[str | None] | None = (None,),
) -> Callable[[F], F]:
    """Declare the states an action accepts, next to the action (Nova's check_instance_state).

    The decorated coroutine's second argument is the instance (anything with
    `vm_state` and `task_state`); the default accepts only instances with no task.
    """
    vm_allowed = frozenset(vm_state) if vm_state is not None else None
    task_allowed = frozenset(task_state) if task_state is not None else None

    def decorator(fn: F) -> F:
        @wraps(fn)
        async def wrapper(self: Any, instance: Any, *args: Any, **kwargs: Any) -> Any:
            if vm_allowed is not None and instance.vm_state not in vm_allowed:
                raise InstanceInvalidState(fn.__name__, "vm_state", instance.vm_state)
            if task_allowed is not None and instance.task_state not in task_allowed:
                raise InstanceInvalidState(fn.__name__, "task_state", instance.task_state)
            return await fn(self, instance, *args, **kwargs)

        wrapper.allowed_vm_states = vm_allowed  # type: ignore[attr-defined]
        wrapper.allowed_task_states = task_allowed  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator
