"""SQL over Quiver tables on DataFusion: each statement reads pinned table snapshots."""

from flight_server.sql.engine import SqlEngine
from flight_server.sql.errors import SqlError, SqlPlanError, SqlSyntaxError

__all__ = ["SqlEngine", "SqlError", "SqlPlanError", "SqlSyntaxError"]
