"""/os-instance_usage_audit_log (admin): how far the compute hosts got auditing instance
usage in the last completed month (api-ref: Server usage audit log).

No compute host here runs the usage audit task (Nova's `instance_usage_audit`, off by
default there too), so every compute host is reported as not run for the period."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cumulo.common.db import utcnow
from cumulo.common.faults import BadRequest
from cumulo.compute.api.common import authorize, compute_of, json
from cumulo.compute.models import ComputeService
from cumulo.compute.scheduler.claims import COMPUTE_BINARY


def _month_before(moment: datetime) -> datetime:
    return (
        moment.replace(year=moment.year - 1, month=12)
        if moment.month == 1
        else (moment.replace(month=moment.month - 1))
    )


def last_completed_month(before: datetime) -> tuple[datetime, datetime]:
    """Nova's last completed audit period (unit month, offset 1) before a moment."""
    end = before.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if end >= before:
        end = _month_before(end)
    return _month_before(end), end


async def _audit_log(request: Request, before: datetime) -> dict[str, Any]:
    begin, end = last_completed_month(before)
    async with compute_of(request).db.read() as s:
        hosts = sorted(
            set(
                await s.scalars(
                    select(ComputeService.host).where(ComputeService.binary == COMPUTE_BINARY)
                )
            )
        )
    return {
        "period_beginning": str(begin),
        "period_ending": str(end),
        "num_hosts": len(hosts),
        "num_hosts_done": 0,
        "num_hosts_running": 0,
        "num_hosts_not_run": len(hosts),
        "hosts_not_run": hosts,
        "total_instances": 0,
        "total_errors": 0,
        "overall_status": f"{f'0 of {len(hosts)}' if hosts else 'ALL'} hosts done. 0 errors.",
        "log": {},
    }


async def list_audit_logs(request: Request) -> Response:
    await authorize(request, "compute:instance_usage_audit_log")
    return json({"instance_usage_audit_logs": await _audit_log(request, utcnow())})


async def show_audit_log(request: Request) -> Response:
    await authorize(request, "compute:instance_usage_audit_log")
    raw = request.path_params["before"]
    try:
        fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in raw else "%Y-%m-%d %H:%M:%S"
        before = datetime.strptime(raw, fmt)
    except ValueError:
        raise BadRequest(f"Invalid timestamp for date {raw}") from None
    return json({"instance_usage_audit_log": await _audit_log(request, before)})


routes = [
    Route("/v2.1/os-instance_usage_audit_log", list_audit_logs, methods=["GET"]),
    Route("/v2.1/os-instance_usage_audit_log/{before}", show_audit_log, methods=["GET"]),
]
