"""The interactive ``quiver sql`` prompt: statements, meta-commands and completion.

Statements end at ``;`` and run through the command's ``Client``; Ctrl-C while one runs
cancels it (in this process on a root, on the server through ``--server``) and the
prompt comes back; Ctrl-C at the prompt clears the line; Ctrl-D or ``\\q`` quits.

Meta-commands start with a backslash and need no ``;``: ``\\d`` and ``\\dt`` list the
tables, ``\\d NAME`` shows a table's columns, types and indexes, ``\\timing`` toggles
printing each statement's elapsed time, ``\\?`` lists them, ``\\q`` quits.

Completion offers SQL keywords, Quiver's search functions, table names and column names,
read with ``SHOW TABLES`` and the tables' schemas through the same ``Client``; the names
are read again after a statement that may change them (CREATE, DROP, ALTER).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from quiver.flight_server.cli.client import Client, quote_ident
from quiver.flight_server.cli.messages import one_line

log = logging.getLogger(__name__)

HISTORY_FILE = Path("~/.quiver_history")
# Tables whose columns are read for completion; past it only their names are offered.
MAX_TABLES_WITH_COLUMNS = 200

KEYWORDS = (
    "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "HAVING", "LIMIT", "OFFSET", "AS",
    "AND", "OR", "NOT", "NULL", "IS", "IN", "LIKE", "ILIKE", "BETWEEN", "DISTINCT", "CASE",
    "WHEN", "THEN", "ELSE", "END", "JOIN", "LEFT JOIN", "INNER JOIN", "ON", "USING", "UNION",
    "ALL", "ASC", "DESC", "WITH", "VALUES", "INSERT INTO", "UPDATE", "SET", "DELETE FROM",
    "CREATE TABLE", "IF NOT EXISTS", "IF EXISTS", "DROP TABLE", "SHOW TABLES", "DESCRIBE",
    "EXPLAIN", "ANALYZE", "COUNT", "SUM", "AVG", "MIN", "MAX", "CAST", "BIGINT", "INT",
    "DOUBLE", "FLOAT", "VARCHAR", "BOOLEAN", "TIMESTAMP", "TRUE", "FALSE",
    "bm25_search", "vector_search", "hybrid_search", "bm25_snippet",
)
META_COMMANDS = {
    "\\d": "list the tables; \\d NAME: a table's columns, types and indexes",
    "\\dt": "list the tables",
    "\\timing": "toggle printing each statement's elapsed time",
    "\\?": "this help",
    "\\q": "quit (also Ctrl-D)",
}
_DDL = re.compile(r"^\s*(?:CREATE|DROP|ALTER)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


# -- completion ---------------------------------------------------------------------------------


@dataclass
class Names:
    """The table and column names completion offers, read through a ``Client``."""

    tables: list[str] = field(default_factory=list)
    columns: dict[str, list[str]] = field(default_factory=dict)

    def refresh(self, client: Client) -> None:
        """Reads the names again; a failure keeps the old ones (completion is a help)."""
        try:
            tables = client.tables()
            columns = client.columns(MAX_TABLES_WITH_COLUMNS)
        except Exception as exc:
            log.debug("completion names not refreshed: %s", one_line(exc))
            return
        self.tables, self.columns = tables, columns

    def all_columns(self) -> list[str]:
        return sorted({c for cols in self.columns.values() for c in cols})


def candidates(text: str, names: Names) -> Iterator[tuple[str, str]]:
    """(completion, kind) for the word before the cursor at the end of ``text``."""
    match = _WORD.search(text)
    word = match.group(0) if match else ""
    before = text[: len(text) - len(word)]
    stripped = text.lstrip()
    if stripped.startswith("\\"):
        if " " not in stripped:
            # The whole command is replaced: the backslash is no word character.
            for command in META_COMMANDS:
                if command.startswith(stripped):
                    yield command, "meta"
            return
        for table in names.tables:
            if table.lower().startswith(word.lower()):
                yield table, "table"
        return
    if not word:
        return
    lower = word.lower()
    after_table_word = re.search(r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE|DESCRIBE)\s+$", before,
                                 re.IGNORECASE) is not None
    seen: set[str] = set()
    groups: list[tuple[Iterable[str], str]] = [(names.tables, "table")]
    if not after_table_word:
        groups += [(_columns_in_scope(text, names), "column"), (KEYWORDS, "keyword")]
    for values, kind in groups:
        for value in values:
            if value.lower().startswith(lower) and value not in seen:
                seen.add(value)
                shown = value
                if kind == "keyword" and value.isupper() and word.islower():
                    shown = value.lower()
                yield shown, kind


def _columns_in_scope(text: str, names: Names) -> list[str]:
    """The columns of the tables the statement names, or of every table when it names none."""
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)}
    named = [t for t in names.tables if t.lower() in words]
    if not named:
        return names.all_columns()
    return sorted({c for t in named for c in names.columns.get(t, [])})


def completer(names: Names) -> Any:
    """A prompt_toolkit completer over ``candidates``."""
    from prompt_toolkit.completion import Completer, Completion

    class _SqlCompleter(Completer):
        def get_completions(self, document: Any, complete_event: Any) -> Iterator[Completion]:
            text = document.text_before_cursor
            match = _WORD.search(text)
            word = match.group(0) if match else ""
            meta = text.lstrip().startswith("\\") and " " not in text.lstrip()
            start = -len(text.lstrip()) if meta else -len(word)
            for value, kind in candidates(text, names):
                yield Completion(value, start_position=start, display_meta=kind)

    return _SqlCompleter()


# -- meta-commands ------------------------------------------------------------------------------


@dataclass
class PromptState:
    """What the prompt's meta-commands change."""

    timing: bool = False


def is_meta(text: str) -> bool:
    return text.strip().startswith("\\")


def run_meta(client: Client, text: str, state: PromptState) -> bool:
    """Runs one meta-command; whether the prompt should end."""
    from quiver.flight_server.cli.sql_shell import cancellable, write_result

    parts = text.strip().split(None, 1)
    command, rest = parts[0], (parts[1].strip() if len(parts) > 1 else "")
    out = sys.stdout
    if command == "\\q":
        return True
    if command == "\\?":
        width = max(len(c) for c in META_COMMANDS)
        for name, what in META_COMMANDS.items():
            out.write(f"  {name.ljust(width)}  {what}\n")
        out.write("  Statements end with ';'. Ctrl-C cancels the running statement.\n")
    elif command == "\\timing":
        if rest.lower() in ("on", "off"):
            state.timing = rest.lower() == "on"
        elif rest:
            raise ValueError("\\timing takes on, off or nothing")
        else:
            state.timing = not state.timing
        out.write(f"Timing is {'on' if state.timing else 'off'}.\n")
    elif command in ("\\d", "\\dt") and not rest:
        tables = cancellable(client, client.tables)
        write_result(pa.table({"table": pa.array(tables, pa.string())}).to_reader(), "table",
                     max_rows=max(len(tables), 1))
    elif command == "\\d":
        name = rest.strip('"') if rest.startswith('"') else rest
        reader = cancellable(client, lambda: client.stream(f"DESCRIBE {quote_ident(name)}")
                             .read_all())
        write_result(reader.to_reader(), "table", max_rows=max(reader.num_rows, 1),
                     max_width=200)
    else:
        raise ValueError(f"unknown command {command}; \\? lists them")
    out.flush()
    return False


# -- the prompt ---------------------------------------------------------------------------------


def interactive(client: Client, args: argparse.Namespace) -> int:
    """A prompt: statements end at ``;``; errors are shown and the prompt goes on."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings

    from quiver.flight_server.cli.sql_shell import (
        run_statement,
        split_statements,
        statement_complete,
    )

    bindings = KeyBindings()

    @bindings.add("enter")
    def _enter(event: Any) -> None:
        buffer = event.current_buffer
        if statement_complete(buffer.text):
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    names = Names()
    names.refresh(client)
    history = HISTORY_FILE.expanduser()
    session: PromptSession = PromptSession(
        history=FileHistory(str(history)), multiline=True, key_bindings=bindings,
        completer=completer(names), complete_while_typing=False)
    state = PromptState()
    sys.stdout.write(f"quiver sql on {client.where}; end statements with ';', "
                     "\\? for help, quit with \\q or Ctrl-D\n")
    while True:
        try:
            text = session.prompt("quiver> ", prompt_continuation="   ...> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        if text.strip().lower() in ("exit", "quit"):
            return 0
        if is_meta(text):
            try:
                if run_meta(client, text, state):
                    return 0
            except KeyboardInterrupt:
                sys.stderr.write("cancelled\n")
            except Exception as exc:
                sys.stderr.write(f"error: {one_line(exc)}\n")
            continue
        for statement in split_statements(text):
            started = time.monotonic()
            try:
                run_statement(client, statement, args)
            except KeyboardInterrupt:
                sys.stderr.write("cancelled\n")
                break
            except Exception as exc:
                sys.stderr.write(f"error: {one_line(exc)}\n")
            finally:
                if state.timing:
                    sys.stdout.write(f"Time: {(time.monotonic() - started) * 1000:.3f} ms\n")
                    sys.stdout.flush()
            if _DDL.match(statement):
                names.refresh(client)
