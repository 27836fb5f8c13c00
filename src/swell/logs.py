"""How swell writes its log lines: SWELL_LOG_FORMAT=text (the default) or json.

``json`` writes one object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
the fields a line carries (an access line's ``method``, ``route``, ``status``...; a job's
``job_id``) and ``exc`` with the traceback if there is one. Every line logged while a job runs
carries that job's id (:func:`job_context`), in both formats.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson

#: The id of the job this task is working on (None outside jobs).
current_job: contextvars.ContextVar[int | None] = contextvars.ContextVar("swell_job", default=None)
#: Attributes a LogRecord has of its own; anything else was given as ``extra=`` (a field).
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "job_id"}
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


@contextmanager
def job_context(job_id: int) -> Iterator[None]:
    """Every line logged inside (by this task and the tasks it starts) carries ``job_id``."""
    token = current_job.set(job_id)
    try:
        yield
    finally:
        current_job.reset(token)


class JobFilter(logging.Filter):
    """Sets ``record.job_id`` from the running job (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = current_job.get()
        return True


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: its ``extra=`` values and the job id."""
    out = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    job_id = getattr(record, "job_id", None)
    if job_id is not None:
        out["job_id"] = job_id
    return out


class TextFormatter(logging.Formatter):
    """The classic line, with ``key=value`` fields appended (``job_id=7``)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = fields(record)
        if not extra:
            return line
        tail = " ".join(f"{k}={v}" for k, v in extra.items())
        head, sep, rest = line.partition("\n")  # a traceback stays below the line
        return f"{head} {tail}{sep}{rest}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out |= fields(record)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send every log line to stderr in ``log_format`` (replacing earlier handlers)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(JobFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
