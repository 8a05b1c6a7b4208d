"""A move whose host died does not leave its server in a task state: the conductor ends
it after [compute] build_timeout without progress (Nova would need a reset-state)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from cumulo.common.db import Database, utcnow
from cumulo.compute.conductor import ConductorManager, ConductorOptions
from cumulo.compute.models import Instance, InstanceFault, Migration
from cumulo.compute.states import TaskState, VmState


def _instance(uuid: str, task: str) -> Instance:
    return Instance(
        uuid=uuid,
        display_name=uuid,
        hostname=uuid,
        project_id="p",
        user_id="u",
        flavor={"id": "1", "vcpus": 1, "memory_mb": 64, "root_gb": 1},
        vm_state=VmState.ACTIVE,
        task_state=task,
        host="gone-host",
        reservation_id="r-1",
    )


async def test_a_move_without_progress_ends_and_one_in_progress_does_not(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'compute.db'}", "compute")
    await db.migrate()
    try:
        long_ago = utcnow() - timedelta(hours=1)
        async with db.write() as s:
            s.add(_instance("stuck", TaskState.RESIZE_MIGRATING))
            s.add(_instance("live", TaskState.MIGRATING))
            for uuid, kind, updated in (
                ("stuck", "migration", long_ago),
                ("live", "live-migration", utcnow()),  # its progress is recent
            ):
                s.add(
                    Migration(
                        uuid=f"m-{uuid}",
                        instance_uuid=uuid,
                        migration_type=kind,
                        status="migrating" if kind == "migration" else "running",
                        created_at=long_ago,
                        updated_at=updated,
                    )
                )
        async with db.write() as s:
            await s.execute(update(Instance).values(updated_at=long_ago))
        conductor = ConductorManager(db, None, ConductorOptions(build_timeout=60))
        assert await conductor.expire_stuck_moves() == ["stuck"]
        async with db.read() as s:
            states = dict((await s.execute(select(Instance.uuid, Instance.task_state))).all())
            migrations = dict((await s.execute(select(Migration.uuid, Migration.status))).all())
            fault = await s.scalar(select(InstanceFault.message))
        assert states == {"stuck": None, "live": TaskState.MIGRATING}
        assert migrations == {"m-stuck": "error", "m-live": "running"}
        assert "made no progress" in fault
    finally:
        await db.dispose()
