"""Structured JSON logs. Records carry ids and routes, never patient names, identifiers or queries."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", *, json_output: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_output else logging.Formatter("%(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log prints full URLs (query strings can hold a patient's name): ours replaces it.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every URL it requests at INFO; the viewer's QIDO and search URLs can name patients.
    # httpx2/httpcore2 (pulled in by Gradio's dependencies) log the same way under their own names.
    for client_logger in ("httpx", "httpcore", "httpx2", "httpcore2"):
        logging.getLogger(client_logger).setLevel(logging.WARNING)
