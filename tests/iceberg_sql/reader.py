"""pyiceberg's own ``SqlCatalog`` reading a table the way any catalog client would, in a child
interpreter.

pyiceberg's ``SqlCatalog`` needs SQLAlchemy 2, while the test environment keeps SQLAlchemy 1.4
for flightsql-dbapi's dialect (it requires ``sqlalchemy<2``). So SQLAlchemy 2 is installed
once into a cache folder (``python -m tests.iceberg_sql.reader fetch``, run by
``make install``), and the reader runs as ``python -m tests.iceberg_sql.reader scan ...`` with
that folder first on its path; everything else (pyiceberg, psycopg, pyarrow) is the
environment's own. Tests never download: they skip, saying what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

SQLALCHEMY = "2.0.44"
CACHE = Path(os.environ.get("QUIVER_SQLALCHEMY2_DIR")
             or Path.home() / ".cache" / "quiver" / f"sqlalchemy-{SQLALCHEMY}")
REPO = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_S = 300
SCAN_TIMEOUT_S = 120


def missing() -> str | None:
    """Why pyiceberg's SqlCatalog cannot run here, or None."""
    if not (CACHE / "sqlalchemy").is_dir():
        return (f"SQLAlchemy {SQLALCHEMY} (for pyiceberg's SqlCatalog) is not in {CACHE}: "
                "`make install` (or `python -m tests.iceberg_sql.reader fetch`) fetches it")
    return None


def fetch() -> None:
    """Installs SQLAlchemy 2 into the cache folder, if it is not there yet."""
    if missing() is None:
        return
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    # Installed beside and renamed into place: an interrupted install is never taken for a
    # complete one. No dependencies: the environment has typing-extensions, and greenlet
    # is for SQLAlchemy's asyncio only.
    tmp = tempfile.mkdtemp(dir=CACHE.parent, prefix=".partial-")
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--target", tmp, f"sqlalchemy=={SQLALCHEMY}"],
                       check=True, timeout=PIP_TIMEOUT_S)
        os.rename(tmp, CACHE)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def scan(uri: str, namespace: str, table: str, *, name: str = "default") -> pa.Table:
    """The rows pyiceberg's ``SqlCatalog(name, uri=uri)`` scans for ``namespace.table``."""
    with tempfile.TemporaryDirectory(prefix="quiver-sqlcat-") as tmp:
        out = Path(tmp) / "rows.arrow"
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([str(CACHE), str(REPO)])}
        done = subprocess.run([sys.executable, "-m", "tests.iceberg_sql.reader", "scan", uri,
                               name, namespace, table, str(out)],
                              env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=SCAN_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"pyiceberg's SqlCatalog failed: {done.stderr[-3000:]}")
        with pa.memory_map(str(out)) as source:
            return pa.ipc.open_file(source).read_all()


def _scan_child(uri: str, name: str, namespace: str, table: str, out: str) -> None:
    import sqlalchemy
    from pyiceberg.catalog.sql import SqlCatalog

    assert sqlalchemy.__version__ == SQLALCHEMY, sqlalchemy.__file__
    catalog = SqlCatalog(name, uri=uri)
    assert (namespace,) in catalog.list_namespaces(), catalog.list_namespaces()
    rows = catalog.load_table((namespace, table)).scan().to_arrow()
    with pa.OSFile(out, "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
        writer.write_table(rows)
    json.dump({"tables": [".".join(t) for t in catalog.list_tables(namespace)]}, sys.stdout)


def main(argv: list[str]) -> int:
    if argv == ["fetch"]:
        try:
            fetch()
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"SQLAlchemy {SQLALCHEMY} could not be fetched ({exc}): the tests reading "
                  "through pyiceberg's SqlCatalog will be skipped", file=sys.stderr)
            return 1
        return 0
    if len(argv) == 6 and argv[0] == "scan":
        _scan_child(*argv[1:])
        return 0
    print("usage: python -m tests.iceberg_sql.reader fetch | scan URI NAME NAMESPACE TABLE OUT",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
