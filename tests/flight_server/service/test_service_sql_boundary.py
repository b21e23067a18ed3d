"""The service reads statements only through the SQL layer: no module of
``flight_server/service`` imports sqlglot or the SQL layer's parser."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.source_tree import parse_source

SERVICE = Path(__file__).resolve().parents[3] / "flight_server" / "service"
FORBIDDEN = ("sqlglot", "quiver.flight_server.sql.parse", "flight_server.sql.parse")


def _imported(tree: ast.AST) -> list[str]:
    """Every module name an import statement of ``tree`` reaches, ``from a import b``
    counted as both ``a`` and ``a.b`` (b may be a module)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_the_service_package_has_modules_to_check() -> None:
    assert (SERVICE / "server.py").is_file()


@pytest.mark.parametrize("path", sorted(SERVICE.glob("*.py")), ids=lambda p: p.name)
def test_no_service_module_imports_sqlglot_or_the_sql_parser(path: Path) -> None:
    found = [n for n in _imported(parse_source(path.read_text(), str(path))) if _forbidden(n)]
    assert not found, f"{path.name} imports {found}; ask quiver.flight_server.sql instead"


def test_the_check_sees_each_form_of_a_forbidden_import() -> None:
    for source in ("from sqlglot import exp", "import sqlglot.expressions",
                   "from quiver.flight_server.sql import parse as sqlparse",
                   "from quiver.flight_server.sql.parse import table_refs",
                   "import quiver.flight_server.sql.parse"):
        assert any(_forbidden(n) for n in _imported(parse_source(source))), source
    assert not any(_forbidden(n) for n in _imported(parse_source(
        "from quiver.flight_server.sql import SqlConnection, analyse\nimport sqlglotx")))
