"""SQL over Quiver tables on DataFusion: each statement reads pinned table snapshots.

``connect(uri)`` is the embedded entry point: tables plus ``sql("...")`` returning Arrow.
"""

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
    "SqlConnection",
    "SqlEngine",
    "SqlError",
    "SqlParameterError",
    "SqlPlanError",
    "SqlSyntaxError",
    "SqlTableNotFoundError",
    "connect",
]
