"""A lake table written by pyiceberg's own writer (``SqlCatalog`` + ``table.append``), in a
child interpreter with SQLAlchemy 2 first on its path (see ``reader.py`` for why).

``write(uri, warehouse, namespace, table, parts)`` creates ``namespace.table`` in the SQL
catalog at ``uri`` under the folder ``warehouse`` and appends each Arrow table of ``parts``
(one commit, one data file, each); ``outside`` Parquet files are added to it as they are
(``add_files``), wherever they lie, the way a hostile or careless writer could.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

from tests.iceberg_sql.reader import CACHE, REPO, SCAN_TIMEOUT_S


def write(uri: str, warehouse: Path, namespace: str, table: str, parts: list[pa.Table], *,
          outside: list[Path] = ()) -> str:
    """Writes the table; returns its location as the catalog's metadata declares it."""
    with tempfile.TemporaryDirectory(prefix="quiver-lake-") as tmp:
        files = []
        for i, part in enumerate(parts):
            path = Path(tmp) / f"part-{i}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, part.schema) as w:
                w.write_table(part)
            files.append(str(path))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CACHE), str(REPO)])}
        spec = json.dumps({"uri": uri, "warehouse": warehouse.absolute().as_uri(),
                           "namespace": namespace, "table": table, "parts": files,
                           "outside": [str(p) for p in outside]})
        done = subprocess.run([sys.executable, "-m", "tests.iceberg_sql.lake_writer", spec],
                              env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=SCAN_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"pyiceberg's writer failed: {done.stderr[-3000:]}")
        return json.loads(done.stdout)["location"]


def _child(spec: dict) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("default", uri=spec["uri"], warehouse=spec["warehouse"])
    catalog.create_namespace_if_not_exists(spec["namespace"])
    parts = []
    for path in spec["parts"]:
        with pa.memory_map(path) as source:
            parts.append(pa.ipc.open_file(source).read_all())
    table = catalog.create_table((spec["namespace"], spec["table"]), schema=parts[0].schema)
    for part in parts:
        table.append(part)
    if spec["outside"]:
        table.add_files(spec["outside"])
    json.dump({"location": table.metadata.location}, sys.stdout)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
