"""Logging: every line carries its request id; text or JSON; optionally files per service.

JSON lines (`--log-format json`) hold the record's fields: time, level, logger,
request_id, message, and for the one line each API request logs, its `fields` (service,
method, route, path, status, duration_ms, global_request_id, user_id, project_id).
With a log dir, each service's request lines go to `<dir>/<service>.log` and everything
else to `<dir>/cumulo.log`, rotated by size.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from datetime import UTC, datetime
from pathlib import Path

from cumulo.common.app import request_id_var

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
ROTATE_BYTES = 20 * 1024 * 1024
ROTATE_KEEP = 5
SERVICES = ("identity", "compute", "image", "network", "block-storage", "metadata", "novncproxy")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
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
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
