"""Logging: every line carries its request ids; text or JSON; optionally files per service.

Text lines name the request they are for as oslo.log's context format does:
`[req-<local> global-req-<global>]` (the global part when there is one, see
cumulo.common.request_ids; `[-]` outside any request), in every service that handles it:
the APIs, the conductor, the scheduler, the compute hosts, the network agents, volume.
JSON lines (`--log-format json`) hold the record's fields: time, level, logger,
request_id, global_request_id, message, and for the one line each API request logs, its
`fields` (service, method, route, path, status, duration_ms, global_request_id,
user_id, project_id).
With a log dir, each service's request lines go to `<dir>/<service>.log` and everything
else to `<dir>/cumulo.log`, rotated by size.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from datetime import UTC, datetime
from pathlib import Path

from cumulo.common.request_ids import global_request_id_var, request_id_var

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_ids)s] %(message)s"
ROTATE_BYTES = 20 * 1024 * 1024
ROTATE_KEEP = 5
SERVICES = ("identity", "compute", "image", "network", "block-storage", "metadata", "novncproxy")


class RequestIdFilter(logging.Filter):
    """Stamps each record with the ids of the request being handled where it was made."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.global_request_id = global_request_id_var.get()
        record.request_ids = request_ids_text(record.request_id, record.global_request_id)
        return True


def request_ids_text(request_id: str, global_request_id: str | None) -> str:
    """`req-<local> global-req-<global>`, as the text format prints them."""
    if global_request_id:
        return f"{request_id} global-{global_request_id}"
    return request_id


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "global_request_id": getattr(record, "global_request_id", None),
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _ServiceFilter(logging.Filter):
    """Request lines of one service (service=None: every line that is not one of those)."""

    def __init__(self, service: str | None) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        service = getattr(record, "fields", {}).get("service")
        return service == self.service if self.service else service is None


def _handler(handler: logging.Handler, formatter: logging.Formatter) -> logging.Handler:
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter)
    return handler


def setup_logging(
    level: int = logging.INFO, fmt: str = "text", log_dir: Path | None = None
) -> None:
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handlers = [_handler(logging.StreamHandler(), formatter)]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        for service in (None, *SERVICES):
            path = log_dir / f"{service or 'cumulo'}.log"
            file_handler = _handler(
                logging.handlers.RotatingFileHandler(
                    path, maxBytes=ROTATE_BYTES, backupCount=ROTATE_KEEP
                ),
                formatter,
            )
            file_handler.addFilter(_ServiceFilter(service))
            handlers.append(file_handler)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    quiet_libraries(level)


# Libraries whose debug lines hold secrets (httpcore: every header, X-Auth-Token and
# X-Subject-Token included) or only noise (alembic): never below WARNING.
QUIET_LIBRARIES = ("alembic", "httpcore", "hpack")


def quiet_libraries(level: int) -> None:
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
