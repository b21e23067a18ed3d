"""Reading a table's Iceberg metadata the way other engines do: pyiceberg and DuckDB.

DuckDB's iceberg and avro extensions come from the Python packages of the same
version as ``duckdb`` and are loaded from their files, without any network.
"""

from __future__ import annotations

import importlib
import os
from typing import Any
from urllib.parse import urlparse

import duckdb
import pyarrow as pa
from pyiceberg.table import StaticTable


def extension_path(name: str) -> str:
    """The file of DuckDB extension ``name`` shipped by the ``duckdb-extension-NAME`` package."""
    module = importlib.import_module(f"duckdb_extension_{name}")
    return os.path.join(os.path.dirname(module.__file__), "extensions", f"v{duckdb.__version__}",
                        f"{name}.duckdb_extension")


def duck(s3: Any = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with iceberg (and, for ``s3``, httpfs and a secret) loaded."""
    con = duckdb.connect()
    for name in ("avro", "iceberg", *(("httpfs",) if s3 is not None else ())):
        con.execute(f"LOAD '{extension_path(name)}'")
    if s3 is not None:
        endpoint = urlparse(s3.endpoint).netloc
        con.execute(f"""CREATE SECRET (TYPE s3, KEY_ID '{s3.access_key_id}',
            SECRET '{s3.secret_access_key}', REGION '{s3.region}', ENDPOINT '{endpoint}',
            URL_STYLE 'path', USE_SSL false)""")
    return con


def pyiceberg_properties(s3: Any = None) -> dict[str, str]:
    if s3 is None:
        return {}
    return {"s3.endpoint": s3.endpoint, "s3.access-key-id": s3.access_key_id,
            "s3.secret-access-key": s3.secret_access_key, "s3.region": s3.region}


def rows(table: pa.Table) -> list[tuple]:
    """Rows as sorted tuples (vectors as tuples of floats), to compare as multisets."""
    out = []
    for row in table.to_pylist():
        out.append(tuple(tuple(v) if isinstance(v, list) else v for v in row.values()))
    return sorted(out, key=repr)


def pyiceberg_scan(location: str, snapshot_id: int, s3: Any = None) -> pa.Table:
    table = StaticTable.from_metadata(location, pyiceberg_properties(s3))
    return table.scan(snapshot_id=snapshot_id).to_arrow()


def duckdb_scan(con: duckdb.DuckDBPyConnection, metadata_file: str, snapshot_id: int
                ) -> pa.Table:
    return con.execute("SELECT * FROM iceberg_scan(?, snapshot_from_id => ?)",
                       [metadata_file, snapshot_id]).to_arrow_table()
