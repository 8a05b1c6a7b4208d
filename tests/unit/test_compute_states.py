from __future__ import annotations

from types import SimpleNamespace

import pytest

from cumulo.compute.states import (
    InstanceInvalidState,
    TaskState,
    VmState,
    api_status,
    check_state,
)


@pytest.mark.parametrize(
    ("vm_state", "task_state", "status"),
    [
        (VmState.BUILDING, TaskState.SCHEDULING, "BUILD"),
        (VmState.BUILDING, TaskState.SPAWNING, "BUILD"),
        (VmState.ACTIVE, None, "ACTIVE"),
        (VmState.ACTIVE, TaskState.REBOOTING, "REBOOT"),
        (VmState.ACTIVE, TaskState.REBOOTING_HARD, "HARD_REBOOT"),
        (VmState.ACTIVE, TaskState.POWERING_OFF, "ACTIVE"),
        (VmState.ACTIVE, TaskState.RESIZE_PREP, "RESIZE"),
        (VmState.STOPPED, None, "SHUTOFF"),
        (VmState.STOPPED, TaskState.REBUILDING, "REBUILD"),
        (VmState.RESIZED, None, "VERIFY_RESIZE"),
        (VmState.RESIZED, TaskState.RESIZE_REVERTING, "REVERT_RESIZE"),
        (VmState.PAUSED, None, "PAUSED"),
        (VmState.SUSPENDED, None, "SUSPENDED"),
        (VmState.ERROR, None, "ERROR"),
        (VmState.SHELVED_OFFLOADED, None, "SHELVED_OFFLOADED"),
        ("bogus", None, "UNKNOWN"),
    ],
)
def test_status_derives_from_vm_and_task_state(vm_state, task_state, status):
    assert api_status(vm_state, task_state) == status


class Actions:
    @check_state(vm_state=[VmState.ACTIVE])
    async def pause(self, instance):
        return "paused"

    @check_state(vm_state=[VmState.ACTIVE, VmState.STOPPED, VmState.ERROR], task_state=None)
    async def delete(self, instance):
        return "deleted"


async def test_action_allowed_in_its_states():
    assert await Actions().pause(SimpleNamespace(vm_state="active", task_state=None)) == "paused"


async def test_action_refused_in_other_vm_state():
    with pytest.raises(InstanceInvalidState, match="vm_state stopped"):
        await Actions().pause(SimpleNamespace(vm_state="stopped", task_state=None))


async def test_action_refused_while_a_task_runs():
    with pytest.raises(InstanceInvalidState, match="task_state rebooting"):
        await Actions().pause(SimpleNamespace(vm_state="active", task_state="rebooting"))


async def test_task_state_none_means_any_task():
    busy = SimpleNamespace(vm_state="active", task_state="rebooting")
    assert await Actions().delete(busy) == "deleted"
