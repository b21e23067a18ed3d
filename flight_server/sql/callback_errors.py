"""Recovering the exception a Python callback raised inside DataFusion.

A search table function, or any Python function DataFusion calls while it plans or runs
a statement, may raise one of Quiver's errors (a ``SqlPlanError`` naming a bad argument,
a storage or corruption error of the table layer). DataFusion does not pass it on: it
raises a plain exception whose text embeds the original as
``PyErr { type: <class 'module.Name'>, value: Name(args), traceback: ... }``.
``recover`` is the one way such an error is turned back into the exception raised, so
callers map it by its type and kind, never by parsing messages.
"""

from __future__ import annotations

import ast
import importlib
import re

from quiver.root_error import QuiverError

__all__ = ["recover"]

_PYERR = re.compile(r"PyErr \{ type: <class '([A-Za-z_][\w.]*)'>, value: [A-Za-z_]\w*\((.*?)\), "
                    r"traceback: ", re.DOTALL)
# Only classes of Quiver's own modules are looked up: the text may quote a client.
_OWN_PACKAGE = "quiver."


def recover(exc: BaseException) -> QuiverError | None:
    """The Quiver error a Python callback raised inside DataFusion, which reported it as
    ``exc``: rebuilt with its own class and arguments; None when ``exc`` carries none.

    Only a ``QuiverError`` subclass defined in a ``quiver.`` module is rebuilt, from
    arguments that are Python literals (read with ``ast.literal_eval``, never evaluated):
    what else the text names is neither imported nor constructed.
    """
    m = _PYERR.search(str(exc))
    if m is None or not m.group(1).startswith(_OWN_PACKAGE):
        return None
    module, _, name = m.group(1).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        args = ast.literal_eval(f"({m.group(2)},)") if m.group(2) else ()
    except (ImportError, AttributeError, ValueError, SyntaxError):
        return None
    if not (isinstance(cls, type) and issubclass(cls, QuiverError)):
        return None
    try:
        return cls(*args)
    except TypeError:
        return None
