"""How the server's log is written: plain text or one JSON object per line.

``configure(level, fmt)`` sets up the root logger for ``quiver serve``. In ``json``
every record (statement lines, warnings, tracebacks alike) is one JSON object on one
line with ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; a statement
line adds its fields (``statement_log``) at the top level, and a failure its traceback
as ``exc``. In ``text`` a line reads ``<time> <LEVEL> <logger>: <message>``.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import logging.handlers
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# How often the writer thread writes out the lines handed to it.
WRITE_INTERVAL_S = 0.05


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


class _Records(collections.deque[logging.LogRecord]):
    """The records handed to the writer: appending wakes no thread."""

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.append(record)

    def get(self) -> logging.LogRecord:  # the queue protocol QueueHandler is typed with
        return self.popleft()


class _Handoff(logging.handlers.QueueHandler):
    """Hands records to the writer thread as they are: formatting and writing happen
    there, off the threads that serve calls."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _Writer:
    """Formats and writes the records handed over, all that came in since it last
    looked, every ``interval`` seconds. It wakes on a clock, not once per record: a
    statement's line would otherwise cost its call a thread switch or two."""

    def __init__(self, handler: logging.StreamHandler[TextIO],
                 interval: float = WRITE_INTERVAL_S) -> None:
        self.records = _Records()
        self._handler = handler
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="quiver-log-writer",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._write()
        self._write()

    def _write(self) -> None:
        records = self.records
        handler = self._handler
        lines = []
        record = None
        while records:
            record = records.popleft()
            try:
                lines.append(handler.format(record))
            except Exception:
                handler.handleError(record)
        if not lines:
            return
        handler.acquire()
        try:
            handler.stream.write("\n".join(lines) + "\n")
            handler.flush()
        except Exception:  # a closed or broken stream, reported as logging does
            handler.handleError(record)  # type: ignore[arg-type]
        finally:
            handler.release()

    def stop(self) -> None:
        """Writes out what was handed over and ends the thread."""
        self._stopping.set()
        self._thread.join()


_writer: _Writer | None = None


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
    # No format here shows where a record was made (file, line, thread, process): not
    # looking that up, as the logging guide's section on optimization describes, makes
    # each record cheaper for the thread serving a call.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    _writer = _Writer(handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_Handoff(_writer.records))
    root.setLevel(level.upper() if isinstance(level, str) else level)


def stop() -> None:
    """Writes out every record handed over so far and stops the writer thread."""
    global _writer
    writer, _writer = _writer, None
    if writer is not None:
        writer.stop()


atexit.register(stop)
