"""The one line a ``quiver`` command prints for an error, without driver decoration.

Errors reach the command line through the ADBC Flight SQL driver
(``NOT_FOUND: [FlightSQL] <message> (NotFound; Prepare). Vendor code: 5``, sometimes
with ``Detail: …``), through ``pyarrow.flight`` (``Flight returned … error, with
message: <message>. gRPC client debug context: … Client context: … Detail: …``), or from
this process. ``one_line`` keeps the server's own message and drops the rest; every
subcommand, the health check included, reports errors through it. No heavy imports:
the health check loads this module every few seconds.
"""

from __future__ import annotations

import re

__all__ = ["one_line"]

_MAX_MESSAGE = 1000

# "CODE: [FlightSQL] " in front of an ADBC driver's message.
_ADBC_HEAD = re.compile(r"^\s*(?:[A-Z_]+: )?\[FlightSQL\]\s*")
# " (NotFound; Prepare). Vendor code: 5" (or parts of it) at its end.
_ADBC_TAIL = re.compile(r"\s*(?:\(\w+; \w+\))?\.?\s*(?:Vendor code: -?\d+)?\s*$")
# pyarrow.flight's wrapping of a gRPC status.
_FLIGHT_HEAD = re.compile(r"^\s*Flight returned [\w ]+? error, with message:\s*")
_FLIGHT_TAILS = re.compile(r"\.?\s*(?:gRPC client debug context:|Client context:|Detail:)")
# gRPC's transport failure, as the Go driver words it.
_DIALING = re.compile(r'connection error: desc = "transport: Error while dialing:\s*'
                      r'(?:dial \w+ )?(?P<where>[^"]*?): (?:connect: )?(?P<why>[^":]+)"')


def one_line(exc: BaseException | str) -> str:
    """``exc``'s message on one line: the server's own words, without driver decoration."""
    text = str(exc).strip()
    if _ADBC_HEAD.match(text):
        text = _ADBC_HEAD.sub("", text)
        text = re.split(r"\.?\s*Detail: ", text, maxsplit=1)[0]
        text = _ADBC_TAIL.sub("", text)
    elif _FLIGHT_HEAD.match(text):
        text = _FLIGHT_HEAD.sub("", text)
        text = _FLIGHT_TAILS.split(text, maxsplit=1)[0]
    else:
        text = re.sub(r"\s*\(\w+; \w+\)\.\s*Vendor code: -?\d+\s*$", "", text)
    dialing = _DIALING.search(text)
    if dialing is not None:
        text = f"cannot reach {dialing.group('where')}: {dialing.group('why').strip()}"
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "…"
    return text or (type(exc).__name__ if isinstance(exc, BaseException) else "error")
