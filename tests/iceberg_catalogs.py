"""What the Iceberg catalog tests (SQLite, PostgreSQL, REST) share: a root holding a small
``docs`` table with a deletion behind it, and an ADBC cursor on a running server."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc

from quiver.flight_server.sql import connect


def docs_root(path: Path, *, notes: bool = True) -> Path:
    """A local root at ``path`` with ``docs`` (ids 1 and 3 live, 2 deleted) and, when
    ``notes``, a second table ``notes``."""
    with connect(str(path)) as conn:
        conn.sql("CREATE TABLE docs (id BIGINT, title VARCHAR)")
        conn.sql("INSERT INTO docs VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma')")
        conn.sql("DELETE FROM docs WHERE id = 2")
        if notes:
            conn.sql("CREATE TABLE notes (id BIGINT, body VARCHAR)")
            conn.sql("INSERT INTO notes VALUES (10, 'x')")
    return path


@contextmanager
def adbc_cursor(uri: str) -> Iterator[adbc.Cursor]:
    """A cursor of a new ADBC connection to the server at ``uri``, both closed after."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the driver's notice that autocommit stays on
        conn = adbc.connect(uri)
    try:
        cur = conn.cursor()
        try:
            yield cur
        finally:
            cur.close()
    finally:
        conn.close()
