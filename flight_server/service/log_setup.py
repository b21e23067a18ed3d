"""How the server's log is written: plain text or one JSON object per line.

``configure(level, fmt)`` sets up the root logger for ``quiver serve``. In ``json``
every record (statement lines, warnings, tracebacks alike) is one JSON object on one
line with ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; a statement
line adds its fields (``statement_log``) at the top level, and a failure its traceback
as ``exc``. In ``text`` a line reads ``<time> <LEVEL> <logger>: <message>``.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "statement", None)
        if isinstance(fields, dict):
            # The fields stand on their own; the message would repeat them.
            out["message"] = "statement"
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _Handoff(logging.handlers.QueueHandler):
    """Hands records to the writer thread as they are: formatting and writing happen
    there, off the threads that serve calls."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


_writer: logging.handlers.QueueListener | None = None


def configure(level: str | int = "INFO", fmt: str = "text",
              stream: TextIO | None = None) -> None:
    """Replaces the root logger's handlers with one writing ``fmt`` lines to ``stream``
    (stderr by default) at ``level``, from a writer thread of its own."""
    global _writer
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    stop()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _writer = logging.handlers.QueueListener(records, handler)
    _writer.start()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_Handoff(records))
    root.setLevel(level.upper() if isinstance(level, str) else level)


def stop() -> None:
    """Writes out every record handed over so far and stops the writer thread."""
    global _writer
    writer, _writer = _writer, None
    if writer is not None:
        writer.stop()


atexit.register(stop)
