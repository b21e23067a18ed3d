"""The full-text modules import each other in one direction only, and the BM25 constants
live in one place: a circle between modules (even through an import hidden inside a
function) or a second copy of the block size or the idf formula is what this pins out."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import quiver.superfile.fts as fts_package
from tests.source_tree import parse_source

FTS = Path(fts_package.__file__).resolve().parent
SUPERTABLE = FTS.parent.parent / "supertable"


def _runtime_imports(path: Path) -> set[str]:
    """Sibling modules ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks aside)."""
    tree = parse_source(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            prefix = "quiver.superfile.fts."
            if node.module.startswith(prefix):
                found.add(node.module[len(prefix):])
            elif node.module == "quiver.superfile.fts":
                found.update(a.name for a in node.names)
    return found


def test_fts_modules_import_each_other_without_a_circle():
    graph = {p.stem: _runtime_imports(p) for p in FTS.glob("*.py") if p.stem != "__init__"}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, f"import circle: {' -> '.join([*path, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert "reader" not in graph["scoring"]


def _code_files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts]


def test_the_postings_block_size_and_the_idf_formula_are_written_once():
    block = re.compile(r"\b(127|128)\b")
    idf = re.compile(r"log1p\(|math\.log\(1|np\.log\(1")
    blocks, idfs = [], []
    for path in _code_files(FTS, SUPERTABLE):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            # The dictionary's terms per block and byte sizes are other quantities.
            if block.search(code) and "DICT_BLOCK_TERMS" not in code and "<<" not in code:
                blocks.append(f"{path.name}:{n}: {line.strip()}")
    for path in _code_files(FTS.parent, SUPERTABLE):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if idf.search(line.split("#", 1)[0]):
                idfs.append(f"{path.name}:{n}: {line.strip()}")
    assert len(blocks) == 1 and blocks[0].startswith("codec.py:"), blocks
    assert blocks[0].endswith("BLOCK_SIZE = 128"), blocks
    assert len(idfs) == 1 and idfs[0].startswith("engine.py:"), idfs
