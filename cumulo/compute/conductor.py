"""The conductor: builds instances (scheduler, then a host), retries failed builds on
another host, and makes every database change a compute host asks for — compute
hosts never open the database.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, bindparam, cast, delete, exists, func, insert, select, update
from sqlalchemy.orm import Session

from cumulo.common import metrics
from cumulo.common.db import Database, utcnow
from cumulo.common.rpc import Endpoint, RemoteError
from cumulo.compute import rpcapi
from cumulo.compute.conductor_moves import MoveTasks, zone_of_host
from cumulo.compute.models import (
    AggregateHost,
    AggregateMetadata,
    Allocation,
    BlockDeviceMapping,
    ComputeNode,
    ComputeService,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceFault,
)
from cumulo.compute.network import NetworkClient
from cumulo.compute.scheduler.claims import COMPUTE_BINARY, release, resize_allocation
from cumulo.compute.states import PowerState, TaskState, VmState

LOG = logging.getLogger(__name__)

# Instance fields a compute host may change through instance_update.
UPDATABLE = {
    "vm_state",
    "task_state",
    "power_state",
    "host",
    "node",
    "launched_at",
    "terminated_at",
    "network_info",
    "progress",
    "system_metadata",
    "locked",
    "deleted",
    "deleted_at",
    "flavor",
    "vcpus",
    "memory_mb",
    "device_metadata",
}


INTERRUPTED_SCHEDULING = "The cloud stopped while the server was being scheduled."


class UnexpectedTaskState(Exception):
    """The instance moved on (deleted, or another action) while a task was running."""


class InstanceNotFound(Exception):
    pass


@dataclass
class ConductorOptions:
    max_attempts: int = 3
    # A build that has not moved for this long (seconds) is failed: a host died mid-build.
    build_timeout: float = 600.0
    # A resize may pick the server's own host ([compute] allow_resize_to_same_host).
    allow_resize_to_same_host: bool = True
    # Other destinations a live migration tries when one cannot take it (-1: all).
    migrate_max_retries: int = -1


def instance_to_dict(inst: Any) -> dict[str, Any]:
    """What a compute host gets to know of an instance (JSON-safe): from an Instance,
    or a row of _INSTANCE_COLUMNS."""
    return {
        "uuid": inst.uuid,
        "internal_id": inst.id,
        "name": inst.display_name,
        "hostname": inst.hostname,
        "project_id": inst.project_id,
        "user_id": inst.user_id,
        "image_ref": inst.image_ref,
        "flavor": inst.flavor,
        "vm_state": inst.vm_state,
        "task_state": inst.task_state,
        "power_state": inst.power_state,
        "host": inst.host,
        "node": inst.node,
        "availability_zone": inst.availability_zone,
        "key_name": inst.key_name,
        "key_data": inst.key_data,
        "user_data": inst.user_data,
        "config_drive": inst.config_drive,
        "requested_networks": inst.requested_networks,
        "security_groups": inst.security_groups,
        "metadata": inst.metadata_items,
        "system_metadata": inst.system_metadata or {},
        "network_info": inst.network_info,
        "device_metadata": inst.device_metadata or [],
        "launch_index": inst.launch_index,
        "reservation_id": inst.reservation_id,
    }


# What instance_to_dict reads, as columns (instance_update reads them as one row).
_INSTANCE_COLUMNS = (
    Instance.uuid,
    Instance.id,
    Instance.display_name,
    Instance.hostname,
    Instance.project_id,
    Instance.user_id,
    Instance.image_ref,
    Instance.flavor,
    Instance.vm_state,
    Instance.task_state,
    Instance.power_state,
    Instance.host,
    Instance.node,
    Instance.availability_zone,
    Instance.key_name,
    Instance.key_data,
    Instance.user_data,
    Instance.config_drive,
    Instance.requested_networks,
    Instance.security_groups,
    Instance.metadata_items,
    Instance.system_metadata,
    Instance.network_info,
    Instance.device_metadata,
    Instance.launch_index,
    Instance.reservation_id,
)


_instances = Instance.__table__
_events = InstanceActionEvent.__table__
_SELECT_INSTANCE = select(*_INSTANCE_COLUMNS, Instance.deleted).where(
    _instances.c.uuid == bindparam("b_uuid")
)
_INSERT_EVENT = insert(_events)
# The newest open event of that name finished, in one statement (the derived table lets
# MySQL/MariaDB read the table they update).
_OPEN_EVENT = (
    select(_events.c.id)
    .where(
        _events.c.action_id == bindparam("b_action_id"),
        _events.c.event == bindparam("b_event"),
        _events.c.finish_time.is_(None),
    )
    .order_by(_events.c.id.desc())
    .limit(1)
    .subquery("open_event")
)
_FINISH_EVENT = (
    update(_events)
    .where(_events.c.id == select(_OPEN_EVENT.c.id).scalar_subquery())
    .values(
        finish_time=bindparam("finish_time"),
        result=bindparam("result"),
        traceback=bindparam("traceback"),
    )
)


@functools.lru_cache(maxsize=256)
def _update_statement(fields: tuple[str, ...], expected: tuple | None, returning: bool):
    """UPDATE instance SET <fields> WHERE uuid AND not deleted [AND task state expected],
    with bind parameters v_<field>, v_at (updated_at) and b_uuid; RETURNING the row."""
    t = _instances
    query = update(t).where(t.c.uuid == bindparam("b_uuid"), t.c.deleted.is_(False))
    if expected is not None:
        cond = t.c.task_state.in_([state for state in expected if state is not None])
        if None in expected:
            cond = cond | t.c.task_state.is_(None)
        query = query.where(cond)
    values = {
        **{t.c[f]: bindparam(f"v_{f}", type_=t.c[f].type) for f in fields},
        t.c.updated_at: bindparam("v_at", type_=t.c.updated_at.type),
    }
    if "host" in fields and "availability_zone" not in fields:
        # An instance given a host is in that host's zone (Nova sets it when scheduled).
        host = bindparam("v_host", type_=t.c.host.type)
        values[t.c.availability_zone] = zone_of_host(host, t.c.availability_zone)
    query = query.values(values)
    return query.returning(*_INSTANCE_COLUMNS) if returning else query


_BDM_FIELDS = (
    "id",
    "source_type",
    "image_id",
    "snapshot_id",
    "volume_size",
    "boot_index",
    "volume_id",
    "attachment_id",
    "device_name",
    "connection_info",
    "delete_on_termination",
    "tag",
    "disk_bus",
    "device_type",
)


def _block_devices(s: Session, instance_uuid: str) -> list[dict[str, Any]]:
    b = BlockDeviceMapping
    rows = s.execute(
        select(*(getattr(b, f) for f in _BDM_FIELDS))
        .where(b.instance_uuid == instance_uuid, b.destination_type == "volume")
        .order_by(b.boot_index.is_(None), b.boot_index, b.id)
    )
    return [dict(row._mapping) for row in rows]


# What a host's report says of its node, and those of them held as JSON.
_NODE_FIELDS = (
    "hypervisor_type",
    "hypervisor_version",
    "vcpus",
    "memory_mb",
    "local_gb",
    "cpu_arch",
    "cpu_info",
    "cpu_allocation_ratio",
    "ram_allocation_ratio",
    "disk_allocation_ratio",
    "reserved_host_memory_mb",
    "reserved_host_disk_gb",
    "traits",
)
_JSON_FIELDS = {"cpu_info", "traits"}


@functools.lru_cache(maxsize=16)
def _heartbeat_statement(fields: tuple[str, ...]):
    """The heartbeat of a host whose node already holds what it reports, as one UPDATE of
    its service row (bind parameters b_host, b_node, v_now, v_zone and n_<field>): no row
    matched means a new host or a changed node, which _full_report writes."""
    service, node = ComputeService.__table__, ComputeNode.__table__
    zoned = (
        select(AggregateMetadata.value)
        .join(AggregateHost, AggregateHost.aggregate_id == AggregateMetadata.aggregate_id)
        .where(
            AggregateHost.host == bindparam("b_host"), AggregateMetadata.key == "availability_zone"
        )
        .limit(1)
        .scalar_subquery()
    )
    unchanged = [
        node.c.hypervisor_hostname == bindparam("b_node"),
        node.c.host == bindparam("b_host"),
    ]
    for f in fields:
        if f in _JSON_FIELDS:  # compared as the text SQLAlchemy's JSON type stored
            unchanged.append(cast(node.c[f], Text) == bindparam(f"n_{f}", type_=Text()))
        else:
            value = bindparam(f"n_{f}", type_=node.c[f].type)
            unchanged.append(node.c[f].is_not_distinct_from(value))
    return (
        update(service)
        .where(
            service.c.host == bindparam("b_host"),
            service.c.binary == COMPUTE_BINARY,
            exists().where(*unchanged),
        )
        .values(
            last_seen_up=bindparam("v_now"),
            report_count=func.coalesce(service.c.report_count, 0) + 1,
            availability_zone=func.coalesce(func.nullif(zoned, ""), bindparam("v_zone")),
        )
    )


def _node_report(s: Session, host: str, resources: dict[str, Any], availability_zone: str) -> None:
    """compute_node_report's transaction: the service's heartbeat and the node's capacity.
    A heartbeat that changes nothing but the service's is one statement (most of them:
    100 hosts send 10 a second); otherwise the rows are read and written (_full_report)."""
    fields = tuple(f for f in _NODE_FIELDS if f in resources)
    params = {
        "b_host": host,
        "b_node": resources["hypervisor_hostname"],
        "v_now": utcnow(),
        "v_zone": availability_zone,
    }
    for f in fields:
        # JSON as SQLAlchemy's JSON type writes it (no json_serializer is configured).
        params[f"n_{f}"] = json.dumps(resources[f]) if f in _JSON_FIELDS else resources[f]
    if s.connection().execute(_heartbeat_statement(fields), params).rowcount != 1:
        _full_report(s, host, resources, availability_zone)


def _full_report(s: Session, host: str, resources: dict[str, Any], availability_zone: str) -> None:
    now = utcnow()
    service = s.scalar(
        select(ComputeService).where(
            ComputeService.host == host, ComputeService.binary == COMPUTE_BINARY
        )
    )
    if service is None:
        service = ComputeService(
            uuid=str(uuid.uuid4()),
            host=host,
            binary=COMPUTE_BINARY,
            topic=rpcapi.compute_topic(host),
            report_count=0,
            availability_zone=availability_zone,
        )
        s.add(service)
    service.last_seen_up = now
    service.report_count = (service.report_count or 0) + 1
    # A host in an aggregate with a zone is in that zone, whatever it is configured with.
    zoned = s.scalar(
        select(AggregateMetadata.value)
        .join(AggregateHost, AggregateHost.aggregate_id == AggregateMetadata.aggregate_id)
        .where(AggregateHost.host == host, AggregateMetadata.key == "availability_zone")
    )
    service.availability_zone = zoned or availability_zone
    node = s.scalar(
        select(ComputeNode).where(
            ComputeNode.hypervisor_hostname == resources["hypervisor_hostname"]
        )
    )
    if node is None:
        node = ComputeNode(
            uuid=str(uuid.uuid4()),
            host=host,
            hypervisor_hostname=resources["hypervisor_hostname"],
            vcpus_used=0,
            memory_mb_used=0,
            local_gb_used=0,
            running_vms=0,
        )
        s.add(node)
    node.host = host
    for field in _NODE_FIELDS:
        if field in resources:
            setattr(node, field, resources[field])


def _instances_on_host(s: Session, host: str) -> list[dict[str, Any]]:
    query = select(*_INSTANCE_COLUMNS).where(Instance.host == host, Instance.deleted.is_(False))
    return [instance_to_dict(row) for row in s.execute(query)]


def _explain_miss(s: Session, instance_uuid: str, expected: list | None) -> None:
    """An update matched no row: say whether the instance is gone or moved on."""
    row = s.execute(
        select(Instance.deleted, Instance.task_state).where(Instance.uuid == instance_uuid)
    ).first()
    if row is None or row.deleted:
        raise InstanceNotFound(instance_uuid)
    raise UnexpectedTaskState(
        f"{instance_uuid}: task state is {row.task_state}, expected one of {expected}"
    )


def _to_db_value(field: str, value: Any) -> Any:
    if field in ("launched_at", "terminated_at", "deleted_at") and isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "")).replace(tzinfo=None)
    return value


def _finished_later(events: list[dict[str, Any]], i: int) -> int | None:
    """The index of the item finishing events[i] (a start) further in the list, if the
    next item naming the same event is that finish."""
    for j in range(i + 1, len(events)):
        if events[j]["event"] == events[i]["event"]:
            return j if events[j].get("finish") else None
    return None


def _finished(error: str | None) -> dict[str, Any]:
    return {"finish_time": utcnow(), "result": "Error" if error else "Success", "traceback": error}


def _insert_event(
    conn,
    action_id: int,
    event: str,
    host: str | None,
    start: datetime,
    finished: dict[str, Any] | None = None,
) -> None:
    """One event row: open, or already finished (`finished`: see _finished)."""
    row = {
        "action_id": action_id,
        "event": event,
        "host": host,
        "start_time": start,
        **(finished or {"finish_time": None, "result": None, "traceback": None}),
    }
    conn.execute(_INSERT_EVENT, row)


class ConductorManager(MoveTasks, Endpoint):
    def __init__(
        self,
        db: Database,
        bus,
        options: ConductorOptions | None = None,
        network: NetworkClient | None = None,
    ) -> None:
        self.db = db
        self.options = options or ConductorOptions()
        # The Network API, as the compute service (live migration's port bindings).
        self.network = network
        self.scheduler = rpcapi.SchedulerAPI(bus)
        self.compute = rpcapi.ComputeAPI(bus)
        # (instance uuid, request id) -> instance action id, for the events of a build.
        self._action_ids: dict[tuple[str, str], int] = {}

    # -- building ----------------------------------------------------------------

    async def build_instances(
        self, ctx: dict, instance_uuids: list[str], request_spec: dict[str, Any]
    ) -> None:
        # The conductor's event is recorded with the host, in one write per instance.
        started = utcnow().isoformat()
        spec = {**request_spec, "retry": {"num_attempts": 1, "hosts": []}}
        event = "conductor_build_instances"
        await self._schedule_and_cast(
            ctx,
            instance_uuids,
            spec,
            events=[
                {"event": event, "start_time": started},
                {"event": event, "finish": True},
            ],
        )

    async def _schedule_and_cast(
        self,
        ctx: dict,
        instance_uuids: list[str],
        spec: dict[str, Any],
        last_error: str | None = None,
        events: list[dict[str, Any]] | None = None,
    ) -> None:
        try:
            destinations = await self.scheduler.select_destinations(ctx, spec, instance_uuids)
        except RemoteError as exc:
            for instance_uuid in instance_uuids:
                message, details = exc.message, exc.message
                if last_error:  # a retry found no other host: say what failed last
                    message = (
                        "Exhausted all hosts available for retrying build failures for "
                        f"instance {instance_uuid}."
                    )
                    details = f"{message} Last failure: {last_error}"
                await self._fail(
                    ctx,
                    instance_uuid,
                    message,
                    details=details,
                    event="conductor_build_instances",
                    event_start=(events or [{}])[0].get("start_time"),
                )
            return
        for instance_uuid, dest in zip(instance_uuids, destinations, strict=True):
            try:
                await self.instance_update(
                    ctx,
                    instance_uuid,
                    {"host": dest["host"], "node": dest["node"]},
                    expected_task_state=[TaskState.SCHEDULING],
                    events=events,
                    reply=False,
                )
            except (UnexpectedTaskState, InstanceNotFound):
                # Deleted while it was being scheduled: give the claim back.
                async with self.db.write() as s:
                    await s.run_sync(release, instance_uuid)
                continue
            tried = [*spec["retry"]["hosts"], dest["host"]]
            per_instance = {**spec, "retry": {**spec["retry"], "hosts": tried}}
            LOG.debug("building %s on %s", instance_uuid, dest["host"])
            await self.compute.build_and_run_instance(
                ctx, dest["host"], instance_uuid, per_instance
            )

    async def build_failed(
        self,
        ctx: dict,
        instance_uuid: str,
        host: str,
        reason: str,
        request_spec: dict[str, Any],
        reschedule: bool = True,
    ) -> None:
        """A host failed to build: release its claim, then retry elsewhere or give up
        (at once without reschedule: a failure of the request itself, which no other host
        would build, as Nova's BuildAbortException)."""
        async with self.db.write() as s:
            await s.run_sync(release, instance_uuid)
        retry = request_spec.get("retry") or {"num_attempts": 1, "hosts": [host]}
        single_host = len(request_spec.get("force_hosts") or []) == 1
        if not reschedule or self.options.max_attempts == 1 or single_host:
            # Nova's populate_retry: re-scheduling is disabled, the failure is the fault.
            await self._fail(ctx, instance_uuid, reason, host=host)
            return
        if retry["num_attempts"] >= self.options.max_attempts:
            message = (
                f"Exceeded maximum number of retries. Exceeded max scheduling attempts "
                f"{self.options.max_attempts} for instance {instance_uuid}."
            )
            await self._fail(
                ctx, instance_uuid, message, details=f"{message} Last failure: {reason}", host=host
            )
            return
        try:
            await self.instance_update(
                ctx,
                instance_uuid,
                {"host": None, "node": None, "task_state": TaskState.SCHEDULING},
                expected_task_state=[
                    TaskState.SPAWNING,
                    TaskState.NETWORKING,
                    TaskState.BLOCK_DEVICE_MAPPING,
                    TaskState.SCHEDULING,
                ],
            )
        except (UnexpectedTaskState, InstanceNotFound):
            return
        LOG.info("rescheduling %s after a failure on %s: %s", instance_uuid, host, reason)
        spec = {
            **request_spec,
            "ignore_hosts": sorted({*request_spec.get("ignore_hosts", []), *retry["hosts"]}),
            "retry": {"num_attempts": retry["num_attempts"] + 1, "hosts": retry["hosts"]},
        }
        await self._schedule_and_cast(ctx, [instance_uuid], spec, last_error=reason)

    async def build_interrupted(
        self, ctx: dict, instance_uuid: str, host: str | None, reason: str
    ) -> None:
        """A build that a restart stopped in the middle: its request is gone with the
        process, so it cannot be resumed; its claim is released and it goes to ERROR
        with a fault (the user deletes it, or rebuilds)."""
        async with self.db.write() as s:
            await s.run_sync(release, instance_uuid)
        await self._fail(ctx, instance_uuid, reason, host=host)

    async def fail_unscheduled_builds(self) -> list[str]:
        """At the start of an all-in-one cloud: builds still waiting for a host were
        lost with the in-process bus of the process that stopped."""
        async with self.db.read() as s:
            lost = list(
                await s.scalars(
                    select(Instance.uuid).where(
                        Instance.vm_state == VmState.BUILDING,
                        Instance.host.is_(None),
                        Instance.deleted.is_(False),
                    )
                )
            )
        ctx = {"request_id": "req-conductor-start"}
        for instance_uuid in lost:
            LOG.warning("build of %s was lost when the cloud stopped: failing it", instance_uuid)
            await self.build_interrupted(ctx, instance_uuid, None, INTERRUPTED_SCHEDULING)
        return lost

    async def _fail(
        self,
        ctx: dict,
        instance_uuid: str,
        message: str,
        *,
        details: str | None = None,
        host: str | None = None,
        event: str | None = None,
        event_start: str | None = None,
    ) -> None:
        async with self.db.write() as s:
            result = await s.execute(
                update(Instance)
                .where(Instance.uuid == instance_uuid, Instance.deleted.is_(False))
                .values(vm_state=VmState.ERROR, task_state=None, host=host)
            )
            if result.rowcount:
                s.add(
                    InstanceFault(
                        instance_uuid=instance_uuid,
                        code=500,
                        message=message[:255],
                        details=details or message,
                        host=host,
                    )
                )
            if event:
                finish = {"event": event, "finish": True, "error": message}
                await s.run_sync(
                    self._record_events,
                    ctx.get("request_id", "-"),
                    instance_uuid,
                    [{**finish, "start_time": event_start}],
                    None,
                )

    # -- what compute hosts ask for ------------------------------------------------

    async def instance_update(
        self,
        ctx: dict,
        instance_uuid: str,
        updates: dict[str, Any],
        expected_task_state: list[str | None] | None = None,
        events: list[dict[str, Any]] | None = None,
        host: str | None = None,
        reply: bool = True,
    ) -> dict[str, Any] | None:
        """Change an instance, only if its task state is still one of `expected_task_state`.

        `events` (see _record_events) are started or finished in the same transaction,
        only when the change is made: a build step is one write, not three. Returns the
        instance as changed (None with `reply=False`: the row is then not read back).
        """
        bad = set(updates) - UPDATABLE
        if bad:
            raise ValueError(f"fields not updatable by compute hosts: {sorted(bad)}")
        values = {k: _to_db_value(k, v) for k, v in updates.items()}
        # Build steps go before new servers' records: started boots finish first.
        return await self.db.run_write(
            self._instance_update,
            ctx.get("request_id", "-"),
            instance_uuid,
            values,
            expected_task_state,
            events,
            host,
            reply,
            first=True,
        )

    def _instance_update(
        self,
        s: Session,
        request_id: str,
        instance_uuid: str,
        values: dict[str, Any],
        expected_task_state: list[str | None] | None,
        events: list[dict[str, Any]] | None,
        host: str | None,
        reply: bool = True,
    ) -> dict[str, Any] | None:
        """instance_update's transaction (synchronous, in one database call).

        Plain Core statements on the table, built once per shape (_update_statement):
        a build step is on the hot path of every boot.
        """
        conn = s.connection()
        row = None
        expected = None if expected_task_state is None else tuple(expected_task_state)
        if values:
            returning = reply and conn.dialect.update_returning
            query = _update_statement(tuple(sorted(values)), expected, returning)
            params = {f"v_{k}": v for k, v in values.items()}
            result = conn.execute(query, {**params, "b_uuid": instance_uuid, "v_at": utcnow()})
            if returning:  # the changed row in the same statement (SQLite, PostgreSQL)
                row = result.first()
                if row is None:
                    _explain_miss(s, instance_uuid, expected_task_state)
            elif result.rowcount != 1:
                _explain_miss(s, instance_uuid, expected_task_state)
            elif not reply:
                if events:
                    self._record_events(s, request_id, instance_uuid, events, host)
                return None
        if row is None:
            row = conn.execute(_SELECT_INSTANCE, {"b_uuid": instance_uuid}).first()
            if row is None or row.deleted:
                raise InstanceNotFound(instance_uuid)
            if (
                not values
                and expected_task_state is not None
                and (row.task_state not in expected_task_state)
            ):
                raise UnexpectedTaskState(f"{instance_uuid} is now {row.task_state}")
        if events:
            self._record_events(s, request_id, instance_uuid, events, host)
        return instance_to_dict(row) if reply else None

    async def action_event(
        self,
        ctx: dict,
        instance_uuid: str,
        event: str,
        *,
        host: str | None = None,
        finish: bool = False,
        error: str | None = None,
    ) -> None:
        """Start or finish an event of the instance action of this request."""
        await self.db.run_write(
            self._record_events,
            ctx.get("request_id", "-"),
            instance_uuid,
            [{"event": event, "finish": finish, "error": error}],
            host,
        )

    def _record_events(
        self,
        s: Session,
        request_id: str,
        instance_uuid: str,
        events: list[dict[str, Any]],
        host: str | None,
    ) -> None:
        """Start or finish events ({"event", "finish", "error", "start_time"}) in order,
        in the caller's transaction (synchronous: run_write, or AsyncSession.run_sync)."""
        key = (instance_uuid, request_id)
        action_id = self._action_ids.get(key)
        if action_id is None:
            action_id = s.scalar(
                select(InstanceAction.id).where(
                    InstanceAction.instance_uuid == key[0], InstanceAction.request_id == key[1]
                )
            )
            if action_id is None:
                return
            if len(self._action_ids) >= 10_000:
                self._action_ids.clear()
            self._action_ids[key] = action_id  # actions are never deleted: safe to keep
        conn = s.connection()
        written: set[int] = set()  # finishes written with their start, as one row
        for i, item in enumerate(events):
            event, error = item["event"], item.get("error")
            start = _to_db_value("launched_at", item.get("start_time")) or utcnow()
            if not item.get("finish"):
                metrics.EVENT_TIMER.started(instance_uuid, request_id, event)
                finish = _finished_later(events, i)
                if finish is not None:  # started and finished in this write: one INSERT
                    written.add(finish)
                    finished = _finished(events[finish].get("error"))
                    _insert_event(conn, action_id, event, host, start, finished)
                else:
                    _insert_event(conn, action_id, event, host, start)
                continue
            metrics.EVENT_TIMER.finished(instance_uuid, request_id, event, bool(error))
            if i not in written:
                finished = _finished(error)
                params = {"b_action_id": action_id, "b_event": event, **finished}
                if conn.execute(_FINISH_EVENT, params).rowcount != 1:  # none open: recorded
                    start = min(start, finished["finish_time"])
                    _insert_event(conn, action_id, event, host, start, finished)
            if error:
                s.execute(
                    update(InstanceAction)
                    .where(InstanceAction.id == action_id)
                    .values(message="Error")
                    .execution_options(synchronize_session=False)
                )

    async def instance_deleted(self, ctx: dict, instance_uuid: str, host: str | None) -> None:
        now = utcnow()
        async with self.db.write() as s:
            await s.run_sync(release, instance_uuid)
            await s.execute(
                delete(BlockDeviceMapping).where(BlockDeviceMapping.instance_uuid == instance_uuid)
            )
            await s.execute(
                update(Instance)
                .where(Instance.uuid == instance_uuid)
                .values(
                    vm_state=VmState.DELETED,
                    task_state=None,
                    power_state=int(PowerState.NOSTATE),
                    deleted=True,
                    deleted_at=now,
                    terminated_at=now,
                )
            )

    async def compute_node_report(
        self, ctx: dict, host: str, resources: dict[str, Any], availability_zone: str
    ) -> None:
        """A compute agent's heartbeat with its capacity (the used figures are the claims')."""
        await self.db.run_write(_node_report, host, resources, availability_zone)

    async def expire_stuck_builds(self) -> list[str]:
        """Fail builds that made no progress within build_timeout (their host is gone)."""
        cutoff = utcnow() - timedelta(seconds=self.options.build_timeout)
        stale = (
            Instance.vm_state == VmState.BUILDING,
            Instance.deleted.is_(False),
            func.coalesce(Instance.updated_at, Instance.created_at) < cutoff,
        )
        async with self.db.read() as s:
            stuck = (await s.execute(select(Instance.uuid, Instance.host).where(*stale))).all()
        failed = []
        for instance_uuid, host in stuck:
            message = (
                f"Build of instance {instance_uuid} timed out after "
                f"{self.options.build_timeout:g} seconds."
            )
            async with self.db.write() as s:
                # Compare-and-swap: a build that moved on meanwhile is left alone.
                result = await s.execute(
                    update(Instance)
                    .where(Instance.uuid == instance_uuid, *stale)
                    .values(vm_state=VmState.ERROR, task_state=None, updated_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount != 1:
                    continue
                await s.run_sync(release, instance_uuid)
                s.add(
                    InstanceFault(
                        instance_uuid=instance_uuid,
                        code=500,
                        message=message,
                        details=message,
                        host=host,
                    )
                )
            LOG.warning("%s", message)
            failed.append(instance_uuid)
        return failed

    # -- resize (on the instance's own host) ------------------------------------------

    def _to_db_values(self, updates: dict[str, Any]) -> dict[str, Any]:
        bad = set(updates) - UPDATABLE - {"pinned_availability_zone"}
        if bad:
            raise ValueError(f"fields not updatable by compute hosts: {sorted(bad)}")
        return {k: _to_db_value(k, v) for k, v in updates.items()}

    async def finish_resize(self, ctx: dict, instance_uuid: str, confirm: bool) -> None:
        """Confirm: the new flavor's claim becomes the instance's. Revert: it is released."""
        async with self.db.write() as s:
            if confirm:
                await s.run_sync(release, instance_uuid)
                await s.execute(
                    update(Allocation)
                    .where(Allocation.instance_uuid == resize_allocation(instance_uuid))
                    .values(instance_uuid=instance_uuid)
                )
            else:
                await s.run_sync(release, resize_allocation(instance_uuid))

    # -- volumes ----------------------------------------------------------------------

    async def volume_attached(
        self, ctx: dict, instance_uuid: str, volume_id: str, connection_info: dict[str, Any]
    ) -> None:
        async with self.db.write() as s:
            await s.execute(
                update(BlockDeviceMapping)
                .where(
                    BlockDeviceMapping.instance_uuid == instance_uuid,
                    BlockDeviceMapping.volume_id == volume_id,
                )
                .values(connection_info=connection_info)
            )

    async def block_devices(self, ctx: dict, instance_uuid: str) -> list[dict[str, Any]]:
        """The instance's volume mappings (boot order first)."""
        return await self.db.run_read(_block_devices, instance_uuid)

    async def block_device_update(self, ctx: dict, bdm_id: int, values: dict[str, Any]) -> None:
        allowed = {"volume_id", "attachment_id", "device_name", "connection_info", "volume_size"}
        if set(values) - allowed:
            raise ValueError(f"not updatable: {sorted(set(values) - allowed)}")
        async with self.db.write() as s:
            await s.execute(
                update(BlockDeviceMapping).where(BlockDeviceMapping.id == bdm_id).values(**values)
            )

    async def volume_detached(self, ctx: dict, instance_uuid: str, volume_id: str) -> None:
        async with self.db.write() as s:
            await s.execute(
                delete(BlockDeviceMapping).where(
                    BlockDeviceMapping.instance_uuid == instance_uuid,
                    BlockDeviceMapping.volume_id == volume_id,
                )
            )

    async def instances_on_host(self, ctx: dict, host: str) -> list[dict[str, Any]]:
        return await self.db.run_read(_instances_on_host, host)

    # -- image pre-caching (2.81) ---------------------------------------------------

    async def cache_images(self, ctx: dict, hosts: list[str], image_ids: list[str]) -> None:
        """Ask every host (the API left out those down) to cache the images, all at once,
        and log what came of it per outcome, as Nova's conductor does."""

        async def one(host: str) -> dict[str, str]:
            try:
                return await self.compute.cache_images(
                    ctx, host, image_ids, timeout=self.options.build_timeout
                )
            except Exception as exc:  # noqa: BLE001 - a host's failure counts as errors
                LOG.warning("image pre-cache on %s failed: %s", host, exc)
                return dict.fromkeys(image_ids, "error")

        outcomes = await asyncio.gather(*(one(host) for host in hosts))
        totals = {"cached": 0, "existing": 0, "error": 0}
        for result in outcomes:
            for status in result.values():
                totals[status] = totals.get(status, 0) + 1
        LOG.info(
            "image pre-cache of %s on %d hosts: %d cached, %d existing, %d errors",
            ",".join(image_ids),
            len(hosts),
            totals["cached"],
            totals["existing"],
            totals["error"],
        )
