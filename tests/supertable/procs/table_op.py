"""A child process that performs one table operation, for crash and concurrency tests.

Run as ``python table_op.py '<json>'``. The JSON names the storage ``root`` (and its
``options``), the table (``prefix`` and ``name`` for ``Table.open``, or ``catalog`` to go
through ``catalog.connect``), the ``op`` and its parameters, and optionally
``kill_at``: the process SIGKILLs itself just before that write. On success the last
line of stdout is a JSON summary with the write log; ``appends`` also prints one
``ACK <batch id>`` line as each append is acknowledged.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import pyarrow as pa

from quiver import catalog
from quiver.catalog.storage import open_store
from quiver.supertable.errors import WriteConflictError
from quiver.supertable.staged import StagedAppend
from quiver.supertable.table import Table, TableOptions
from tests.supertable.conftest import docs_schema, make_docs
from tests.supertable.faulty_store import FaultyStore, Rule


def rows(n: int, seed: int, tag: str) -> pa.Table:
    """``n`` documents whose titles ``<tag>-<i>`` are unique across the whole test."""
    docs = make_docs(n, seed)
    titles = pa.array([f"{tag}-{i}" for i in range(n)])
    return docs.set_column(docs.schema.get_field_index("title"), "title", titles)


def increment(table: Table, args: dict) -> dict[str, object]:
    """Adds 1 to column ``year`` of the row with ``_id`` ``args["id"]`` by reading it and
    writing it back with ``replace_rows(read_version=…)``, over and over, for at most
    ``seconds`` or ``count`` acknowledged writes. A conflict re-reads and tries again."""
    row_id = int(args["id"])
    deadline = time.monotonic() + float(args.get("seconds", 5.0))
    acked = conflicts = missing = 0
    while time.monotonic() < deadline and acked < int(args.get("count", 100)):
        snap = table.snapshot()
        rows = snap.to_table(filter_=[("_id", "=", row_id)], with_id=True)
        if rows.num_rows == 0:
            missing += 1
            if missing >= 3:
                break
            continue
        year = rows.column("year")[0].as_py()
        new = rows.set_column(rows.schema.get_field_index("year"), "year",
                              pa.array([year + 1], rows.schema.field("year").type))
        try:
            changed = table.replace_rows(new, read_version=snap.version)
        except WriteConflictError:
            conflicts += 1
            continue
        if changed == 1:
            acked += 1
            print(f"ACK {year + 1}", flush=True)
    return {"acked": acked, "conflicts": conflicts}


def main() -> None:
    args = json.loads(sys.argv[1])
    store = FaultyStore(open_store(args["root"], **args.get("options", {})),
                        kill_at_write=args.get("kill_at"))
    for delay in args.get("delays", []):
        store.add(Rule(op=delay["op"], path=delay.get("path", "*"), action="delay",
                       delay_s=float(delay["seconds"])))
    options = TableOptions(**args.get("table_options", {}))
    if args.get("op") == "create_staged":
        # A table filled while staged and named at the end: all of it or no table.
        conn = catalog.Connection(store, options)
        table = conn.create_staged(args["name"], docs_schema())
        staged = StagedAppend(table, exclusive=True)
        for i in range(args["parts"]):
            staged.add(rows(args["rows"], args["seed"] + i, f"{args['tag']}-{i}"))
        staged.commit()
        conn.publish_staged(table)
        print(json.dumps({"writes": store.write_log()}), flush=True)
        return
    if args.get("catalog"):
        conn = catalog.Connection(store, options)
        table = conn.open_table(args["name"])
    else:
        table = Table.open(store, args["prefix"], args["name"], options)
    # Children started together begin their operations together, past their imports.
    time.sleep(max(0.0, float(args.get("start_at", 0.0)) - time.time()))
    op = args["op"]
    result: dict[str, object] = {}
    if op == "append":
        res = table.append(rows(args["rows"], args["seed"], args["tag"]),
                           batch_id=args.get("batch_id"),
                           deferred_index=bool(args.get("deferred", False)))
        result = {"version": res.version, "rows": res.rows}
    elif op == "appends":
        versions = []
        for i in range(args["count"]):
            batch = f"{args['tag']}-b{i}"
            res = table.append(rows(args["rows"], args["seed"] + i, f"{args['tag']}-{i}"),
                               batch_id=batch)
            versions.append(res.version)
            print(f"ACK {batch} {res.version}", flush=True)
            time.sleep(float(args.get("pause_s", 0.0)))
        result = {"versions": versions}
    elif op == "delete":
        result = {"deleted": table.delete([tuple(c) for c in args["filter"]])}
    elif op == "update":
        result = {"updated": table.update([tuple(c) for c in args["filter"]], args["values"])}
    elif op == "staged":
        staged = StagedAppend(table, batch_id=args.get("batch_id"))
        for i in range(args["parts"]):
            staged.add(rows(args["rows"], args["seed"] + i, f"{args['tag']}-{i}"))
        res = staged.commit()
        result = {"version": res.version, "rows": res.rows}
    elif op == "counter":
        result = increment(table, args)
    elif op == "optimize":
        res = table.optimize()  # type: ignore[attr-defined]
        result = {"result": repr(res)}
    else:
        raise SystemExit(f"unknown op {op!r}")
    result["writes"] = store.write_log()
    print(json.dumps(result), flush=True)
    # Background work (a deferred append's indexing) finishes here rather than racing the
    # interpreter's teardown; then the process leaves without one.
    table.close()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
