"""Parsing the project's own source in tests that check its structure.

CPython 3.11's ``ast.parse`` can fail with "AST constructor recursion depth mismatch"
when a garbage collection runs finalizers in the middle of building the tree, which a
long test process full of connections and threads makes likely; collections are paused
for the parse.
"""

from __future__ import annotations

import ast
import gc


def parse_source(text: str, filename: str = "<unknown>") -> ast.Module:
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(text, filename)
    finally:
        if enabled:
            gc.enable()
