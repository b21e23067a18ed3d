"""The root of every exception Quiver raises, ``QuiverError``, and the kinds of failure.

Every layer's own base error (``SuperfileError``, ``TableError``, ``SqlError``, the
server's and the command line's) derives from ``QuiverError``, so one ``except
QuiverError`` catches whatever Quiver raised; users catch it as ``quiver.QuiverError``.

Every layer imports this module, so it imports nothing but the standard library: it
depends on no layer and sits below all of them, though it lives in the ``quiver`` package
(which every layer, installed as ``quiver.<layer>``, loads first anyway). In the lowest
layer's package instead, importing it would run ``quiver.superfile``'s ``__init__``
(numba, faiss: a second of start-up) in light clients such as ``quiver health``.

What went wrong is a ``Kind``, a class attribute, not a mixin base class: a mixin such as
``ValueError`` or ``OSError`` on a layer's errors would change what the ``except
ValueError`` / ``except OSError`` clauses throughout the code catch. The server
(``quiver.flight_server.service.errors.status_of``) and the Python API
(``quiver.errors.translate``) each map a kind once.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class Kind(enum.Enum):
    """What kind of failure an error reports; its subclasses set it for all their kinds."""

    INVALID_INPUT = "invalid input"          # the caller must change the request
    NOT_FOUND = "not found"                  # a table, object or statement is missing
    ALREADY_EXISTS = "already exists"        # a table that is created but exists
    CONFLICT = "conflict"                    # concurrent writers won; retry the write
    STORAGE = "storage"                      # storage failed in another way
    CORRUPT = "corrupt"                      # storage holds unreadable table metadata
    UNAVAILABLE = "unavailable"              # storage cannot be reached; retry later
    PERMISSION_DENIED = "permission denied"  # storage refused the credentials
    STORAGE_FULL = "storage full"            # no space or quota left for a write
    RESOURCE_EXHAUSTED = "resource exhausted"  # a configured limit of work or memory
    CANCELLED = "cancelled"                  # a cancel request, a client gone, a shutdown
    DEADLINE_EXCEEDED = "deadline exceeded"  # the work ran past its time limit
    UNAUTHENTICATED = "unauthenticated"      # the call carries no valid credentials
    UNIMPLEMENTED = "unimplemented"          # a request the server does not implement
    INTERNAL = "internal"                    # none of the above


class QuiverError(Exception):
    """Base class of every exception Quiver defines; ``kind`` says what went wrong."""

    kind: ClassVar[Kind] = Kind.INTERNAL


__all__ = ["Kind", "QuiverError"]
