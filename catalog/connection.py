"""The tables under one storage root, and the embedded API a program uses directly.

``connect(uri, **options)`` opens a root; its ``Connection`` creates, opens,
lists and drops tables. Each table is registered by a create-if-absent write
of ``_catalog/<name>.json``, which points at the table's own folder
``tables/<name>-<uuid>/``: two racing creates of one name see exactly one
winner, and a dropped name can be created again without meeting old files.
``replace_table`` points a name at another table's folder with one conditional
overwrite of its entry, so readers see the old table or the new one, never a mix.

A table can also be filled before anyone sees it: ``create_staged`` makes it in its own
folder without a catalog entry (a record in ``_staging/`` names the folder), and
``publish_staged`` names it with the one catalog write, so a bulk load that fails or
is killed leaves no table behind. ``discard_staged`` removes it; ``purge_dropped``
removes a staged folder nothing was written to for ``STAGING_GRACE_S`` seconds.

The files of a dropped or replaced table stay for ``DROP_GRACE_S`` seconds: another
process may still be reading the version it pinned before the change (processes
notice a changed catalog entry within a second). A record in ``_trash/`` names the
folder and when it was retired; this process deletes it once the grace has passed,
and ``purge_dropped`` (run by ``quiver gc``) deletes what a process that stopped
early left behind.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from quiver.catalog.errors import InvalidTableNameError, quote_short
from quiver.catalog.storage import open_store
from quiver.superfile import IndexSpec, Metric
from quiver.supertable.errors import (
    CommitConflictError,
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
    TableCorruptError,
    TableExistsError,
    TableNotFoundError,
)
from quiver.supertable.options import TableOptions, staleness_allowed
from quiver.supertable.store import ObjectStore
from quiver.supertable.table import Table

log = logging.getLogger(__name__)

CATALOG_DIR = "_catalog"
TABLES_DIR = "tables"
TRASH_DIR = "_trash"
STAGING_DIR = "_staging"
# A staged table with no write for this long belongs to a load that died.
STAGING_GRACE_S = 3600.0
# Seconds the files of a dropped or replaced table outlive it, for readers elsewhere.
DROP_GRACE_S = 15.0
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def is_valid_table_name(name: object) -> bool:
    """Whether ``name`` can name a table: 1-128 letters, digits or underscores, not
    starting with a digit."""
    return isinstance(name, str) and _NAME.match(name) is not None


def _check_name(name: str) -> str:
    if not is_valid_table_name(name):
        raise InvalidTableNameError(
            f"invalid table name {quote_short(name)}: use 1-128 letters, digits or underscores, "
            "not starting with a digit")
    return name


class Connection:
    """A storage root and the tables under it. Safe to share between threads."""

    def __init__(self, store: ObjectStore, options: TableOptions | None = None) -> None:
        self.store = store
        self.options = options or TableOptions()
        self._tables: dict[str, Table] = {}
        # When each held table's catalog entry was last read (monotonic seconds): on object
        # storage a lookup within the tables' staleness allowance is not repeated.
        self._looked_up: dict[str, float] = {}
        self._lock = threading.Lock()
        self._opening: dict[str, threading.Lock] = {}
        self._purges: list[threading.Timer] = []

    @property
    def uri(self) -> str:
        return self.store.uri

    def _entry_path(self, name: str) -> str:
        return f"{CATALOG_DIR}/{name}.json"

    def _prefix_of(self, name: str) -> str:
        try:
            data, _ = self.store.get(self._entry_path(name))
        except ObjectNotFoundError:
            raise TableNotFoundError(f"no table {name!r} under {self.uri}") from None
        return self._read_prefix(name, data)

    def create_table(
        self,
        name: str,
        schema: pa.Schema,
        *,
        fts: list[str] | None = None,
        vector: dict[str, str | Metric] | None = None,
        spec: IndexSpec | None = None,
        exist_ok: bool = False,
        iceberg_version: int | None = None,
    ) -> Table:
        """Creates an empty table. Without ``spec``/``fts``/``vector`` every string column
        gets a BM25 index and every fixed-size float list a cosine vector index; indexed
        vector columns are stored as float32 (``IndexSpec.stored_schema``).
        ``iceberg_version`` 3 writes the table's Iceberg metadata in format version 3,
        deleted rows as deletion vectors (2, the default: position delete files)."""
        _check_name(name)
        if spec is None and (fts is not None or vector is not None):
            spec = IndexSpec.of(fts=fts or [], vector=vector or {})
        prefix = f"{TABLES_DIR}/{name}-{uuid.uuid4().hex[:12]}"
        table = Table.create(self.store, prefix, name, schema, spec, self.options,
                             _properties(iceberg_version))
        entry = json.dumps({"name": name, "prefix": prefix}).encode()
        try:
            self.store.put(self._entry_path(name), entry, mode="create")
        except ObjectExistsError:
            table.close()
            self._remove_prefix(prefix)
            if exist_ok:
                return self.open_table(name)
            raise TableExistsError(f"table {name!r} already exists under {self.uri}") from None
        with self._lock:
            self._tables[name] = table
        return table

    def create_staged(self, name: str, schema: pa.Schema, *,
                      spec: IndexSpec | None = None,
                      iceberg_version: int | None = None) -> Table:
        """A new, empty table named ``name`` that is not in the catalog yet: nobody sees
        it until ``publish_staged``. Its folder is recorded under ``_staging/`` so that a
        process dying before either ``publish_staged`` or ``discard_staged`` leaves work
        for ``purge_dropped``, not garbage."""
        _check_name(name)
        prefix = f"{TABLES_DIR}/{name}-{uuid.uuid4().hex[:12]}"
        record = self._staging_record(prefix)
        self.store.put(record, json.dumps({"prefix": prefix, "name": name,
                                           "started_at": time.time()}).encode())
        try:
            return Table.create(self.store, prefix, name, schema, spec, self.options,
                                _properties(iceberg_version))
        except BaseException:
            self._remove_prefix(prefix)
            self._delete_quietly(record)
            raise

    def publish_staged(self, table: Table, *, replace: bool = False) -> None:
        """Names the staged ``table`` in the catalog with one write: create-if-absent
        (``TableExistsError`` when the name is taken; the staged table is left to the
        caller), or with ``replace`` an overwrite of an existing entry (whose old files
        are retired as by ``drop_table``). After this returns the table is visible."""
        name = table.name
        entry = json.dumps({"name": name, "prefix": table.prefix}).encode()
        old_prefix = None
        if replace:
            try:
                data, meta = self.store.get(self._entry_path(name))
            except ObjectNotFoundError:
                replace = False
            else:
                old_prefix = self._read_prefix(name, data)
                try:
                    self.store.put(self._entry_path(name), entry, mode=meta.version)
                except (PreconditionFailedError, ObjectNotFoundError):
                    raise CommitConflictError(
                        f"table {name!r} was replaced or dropped by another writer "
                        "meanwhile; nothing was changed") from None
        if not replace:
            try:
                self.store.put(self._entry_path(name), entry, mode="create")
            except ObjectExistsError:
                if not self._names(name, table.prefix):
                    raise TableExistsError(
                        f"table {name!r} already exists under {self.uri}") from None
            except StorageError:
                # The write may have landed although its answer was lost.
                if not self._names(name, table.prefix):
                    raise
        self._delete_quietly(self._staging_record(table.prefix))
        with self._lock:
            previous = self._tables.pop(name, None)
            self._tables[name] = table
        if previous is not None and previous is not table:
            previous.close()
        if old_prefix is not None:
            self._retire_prefix(old_prefix)

    def _names(self, name: str, prefix: str) -> bool:
        """Whether the catalog entry ``name`` points at ``prefix`` now."""
        try:
            data, _ = self.store.get(self._entry_path(name))
        except ObjectNotFoundError:
            return False
        return self._read_prefix(name, data) == prefix

    def discard_staged(self, table: Table) -> None:
        """Removes a staged table that was not published, with its files."""
        table.close()
        self._remove_prefix(table.prefix)
        self._delete_quietly(self._staging_record(table.prefix))

    def _staging_record(self, prefix: str) -> str:
        return f"{STAGING_DIR}/{prefix.replace('/', '_')}.json"

    def _delete_quietly(self, path: str) -> None:
        try:
            self.store.delete(path)
        except StorageError as exc:
            log.warning("could not remove %s (purge_dropped will): %s", path, exc)

    def open_table(self, name: str) -> Table:
        _check_name(name)
        allowed = staleness_allowed(self.store, self.options)
        with self._lock:
            cached = self._tables.get(name)
            if cached is not None and allowed > 0 and (
                    time.monotonic() - self._looked_up.get(name, -math.inf) < allowed):
                return cached
        started = time.monotonic()
        prefix = self._prefix_of(name)
        with self._lock:
            cached = self._tables.get(name)
            if cached is not None and cached.prefix == prefix:
                self._looked_up[name] = started
                return cached
            opening = self._opening.setdefault(name, threading.Lock())
        # One open per name at a time: callers racing to open a table share one object
        # (its group commits, its background upkeep).
        with opening:
            with self._lock:
                cached = self._tables.get(name)
                if cached is not None and cached.prefix == prefix:
                    return cached
            table = Table.open(self.store, prefix, name, self.options)
            with self._lock:
                self._tables[name] = table
                self._looked_up[name] = started
        return table

    def cached_table(self, name: str) -> Table | None:
        """The table object this connection holds open under ``name``, if any (a drop or a
        re-create through this connection replaces or removes it)."""
        with self._lock:
            return self._tables.get(name)

    def list_tables(self) -> list[str]:
        names = []
        for meta in self.store.list(f"{CATALOG_DIR}/"):
            base = meta.path.rsplit("/", 1)[-1]
            if base.endswith(".json"):
                names.append(base[: -len(".json")])
        return sorted(names)

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        """Removes a table: it disappears at once; its files are deleted once readers
        elsewhere have had ``DROP_GRACE_S`` seconds to finish."""
        _check_name(name)
        try:
            prefix = self._prefix_of(name)
        except TableNotFoundError:
            if missing_ok:
                return
            raise
        self.store.delete(self._entry_path(name))
        with self._lock:
            table = self._tables.pop(name, None)
        if table is not None:
            table.close()
        self._retire_prefix(prefix)

    def replace_table(self, name: str, staged_name: str) -> None:
        """Makes ``name`` the table ``staged_name`` is, in one write: the catalog entry of
        ``name`` is overwritten to point at the staged table's folder (only if nobody
        changed it meanwhile, else ``CommitConflictError``). The staged name then goes
        away, and the files of the table ``name`` was are deleted after the grace period
        (``DROP_GRACE_S``). ``TableNotFoundError``
        when either table does not exist. When this raises, nothing was changed."""
        _check_name(name)
        _check_name(staged_name)
        if name == staged_name:
            raise ValueError("a table cannot replace itself")
        try:
            data, meta = self.store.get(self._entry_path(name))
        except ObjectNotFoundError:
            raise TableNotFoundError(f"no table {name!r} under {self.uri}") from None
        old_prefix = self._read_prefix(name, data)
        new_prefix = self._prefix_of(staged_name)
        entry = json.dumps({"name": name, "prefix": new_prefix}).encode()
        try:
            self.store.put(self._entry_path(name), entry, mode=meta.version)
        except (PreconditionFailedError, ObjectNotFoundError):
            raise CommitConflictError(f"table {name!r} was replaced or dropped by another "
                                      "writer meanwhile; nothing was changed") from None
        # From here on ``name`` reads the staged table; the rest only tidies up, and a
        # failure in it must not look to the caller as if the replace had not happened.
        try:
            self.store.delete(self._entry_path(staged_name))
        except StorageError as exc:
            log.warning("catalog entry %r still points at the files of table %r: %s",
                        staged_name, name, exc)
        with self._lock:
            replaced = [self._tables.pop(name, None), self._tables.pop(staged_name, None)]
        for table in replaced:
            if table is not None:
                table.close()
        self._retire_prefix(old_prefix)

    def _read_prefix(self, name: str, data: bytes) -> str:
        try:
            return str(json.loads(data)["prefix"])
        except (ValueError, KeyError, TypeError):
            raise TableCorruptError(f"catalog entry of table {name!r} is unreadable") from None

    def _retire_prefix(self, prefix: str) -> None:
        """Records ``prefix`` as retired and deletes its files after the grace period."""
        record = f"{TRASH_DIR}/{prefix.replace('/', '_')}.json"
        try:
            self.store.put(record, json.dumps({"prefix": prefix,
                                               "retired_at": time.time()}).encode())
        except StorageError as exc:
            log.warning("could not record retired files under %s (%s); deleting them now",
                        prefix, exc)
            self._remove_prefix(prefix)
            return
        timer = threading.Timer(DROP_GRACE_S, self._purge, args=(record, prefix))
        timer.daemon = True
        with self._lock:
            self._purges = [t for t in self._purges if t.is_alive()]
            self._purges.append(timer)
        timer.start()

    def _purge(self, record: str, prefix: str) -> None:
        try:
            self._remove_prefix(prefix)
            self.store.delete(record)
        except Exception as exc:  # runs on a timer: a failure leaves work for gc, no more
            log.info("retired files under %s remain (%s); purge_dropped removes them",
                     prefix, exc)

    def purge_dropped(self, grace_s: float = DROP_GRACE_S,
                      staging_grace_s: float | None = None) -> int:
        """Deletes the files of tables dropped or replaced more than ``grace_s`` seconds
        ago (this or any other process), and of staged tables nothing was written to for
        ``staging_grace_s`` (default ``STAGING_GRACE_S``); the number of folders removed."""
        now = time.time()
        removed = 0
        for meta in self.store.list(f"{TRASH_DIR}/"):
            try:
                data, _ = self.store.get(meta.path)
                entry = json.loads(data)
                prefix, retired = str(entry["prefix"]), float(entry["retired_at"])
            except ObjectNotFoundError:
                continue  # purged meanwhile
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable record %s left alone", meta.path)
                continue
            if now - retired >= grace_s:
                self._purge(meta.path, prefix)
                removed += 1
        return removed + self._purge_staged(STAGING_GRACE_S if staging_grace_s is None
                                            else staging_grace_s)

    def _purge_staged(self, grace_s: float) -> int:
        """Removes staged tables of loads that died: nothing under the folder was written
        for ``grace_s`` seconds and no catalog entry names it."""
        now = time.time()
        removed = 0
        records = list(self.store.list(f"{STAGING_DIR}/"))
        if not records:
            return 0
        named = set()
        for meta in self.store.list(f"{CATALOG_DIR}/"):
            try:
                data, _ = self.store.get(meta.path)
                named.add(self._read_prefix(meta.path, data))
            except (ObjectNotFoundError, TableCorruptError):
                continue
        for meta in records:
            try:
                data, _ = self.store.get(meta.path)
                prefix = str(json.loads(data)["prefix"])
            except ObjectNotFoundError:
                continue
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable record %s left alone", meta.path)
                continue
            if prefix not in named:
                stamps = [m.last_modified for m in self.store.list(f"{prefix}/")]
                stamps.append(meta.last_modified)
                newest = max((t.timestamp() for t in stamps if t is not None), default=0.0)
                if now - newest < grace_s:
                    continue
                self._remove_prefix(prefix)
                removed += 1
            self._delete_quietly(meta.path)
        return removed

    def _remove_prefix(self, prefix: str) -> None:
        try:
            paths = [m.path for m in self.store.list(f"{prefix}/")]
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(self.store.delete, paths))
        except StorageError as exc:
            log.warning("files of a dropped table remain under %s: %s", prefix, exc)

    def close(self) -> None:
        """Closes the open tables. Files still in their grace period stay for
        ``purge_dropped`` (``quiver gc``)."""
        with self._lock:
            tables, self._tables = list(self._tables.values()), {}
            purges, self._purges = self._purges, []
        for timer in purges:
            timer.cancel()
        for t in tables:
            t.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(uri: str, *, validate: bool = False, table_options: TableOptions | None = None,
            **storage_options: Any) -> Connection:
    """Opens the storage root at ``uri`` (memory://, a path, file://, s3://, gs://, az://)."""
    store = open_store(uri, validate=validate, **{k: str(v) for k, v in storage_options.items()})
    return Connection(store, table_options)


def _properties(iceberg_version: int | None) -> dict[str, str]:
    """The table properties a new table is created with."""
    return {} if iceberg_version is None else {"iceberg.format-version": str(iceberg_version)}
