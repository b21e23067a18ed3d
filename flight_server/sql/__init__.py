"""SQL over Quiver tables on DataFusion: each statement reads pinned table snapshots.

``connect(uri)`` is the embedded entry point: tables plus ``sql("...")`` returning Arrow.
``analyse(text)`` says what a statement is (kind, shape, tables) without running it.
"""

from quiver.flight_server.sql.analysis import (
    CACHED_STATEMENT_CHARS,
    Analysis,
    CountRows,
    Kind,
    PlainScan,
    ScanSource,
    SearchCall,
    Shape,
    analyse,
    hide_literals,
    looks_like_append,
)
from quiver.flight_server.sql.connection import SqlConnection, connect
from quiver.flight_server.sql.engine import SqlEngine
from quiver.flight_server.sql.errors import (
    SqlError,
    SqlParameterError,
    SqlPlanError,
    SqlSyntaxError,
    SqlTableNotFoundError,
)

__all__ = [
    "CACHED_STATEMENT_CHARS",
    "Analysis",
    "CountRows",
    "Kind",
    "PlainScan",
    "ScanSource",
    "SearchCall",
    "Shape",
    "SqlConnection",
    "SqlEngine",
    "SqlError",
    "SqlParameterError",
    "SqlPlanError",
    "SqlSyntaxError",
    "SqlTableNotFoundError",
    "analyse",
    "connect",
    "hide_literals",
    "looks_like_append",
]
