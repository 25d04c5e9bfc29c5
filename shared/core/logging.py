"""Structured JSON logs on stdout, in the shape Cloud Logging reads (`severity`, `message`,
and the request's trace, so every line of one request groups under it in the console)."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from shared.core.settings import get_settings

TRACE_FIELD = "logging.googleapis.com/trace"
_trace: ContextVar[str | None] = ContextVar("trace", default=None)


def set_trace(header: str | None) -> None:
    """Attach the logs that follow to the trace of `X-Cloud-Trace-Context: TRACE/SPAN;o=1`."""
    trace_id = (header or "").split("/", 1)[0].strip()
    project = get_settings().google_cloud_project
    _trace.set(f"projects/{project}/traces/{trace_id}" if trace_id else None)


_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        entry.update(
            (key, value) for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES
        )
        trace = _trace.get()
        if trace:
            entry[TRACE_FIELD] = trace
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is when a record arrives (it may be swapped later)."""

    @property
    def stream(self) -> object:
        return sys.stdout

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


_configured = False


def get_logger(name: str) -> logging.Logger:
    """A logger whose records reach stdout as one JSON object per line."""
    global _configured
    if not _configured:
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger("mnemo")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
        _configured = True
    return logging.getLogger(f"mnemo.{name}")
