"""One root for every exception Quiver defines: ``quiver.QuiverError``, each class with a
kind that the server and the API map once."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pyarrow as pa
import pytest

import quiver
from quiver.errors import translate
from quiver.flight_server.service.errors import _CODE_OF_KIND, status_of
from quiver.flight_server.sql.callback_errors import recover
from quiver.flight_server.sql.errors import SqlPlanError, SqlResourceError
from quiver.root_error import Kind, QuiverError
from quiver.superfile.errors import SuperfileError
from quiver.supertable.errors import StorageFullError, TableError

# Running these would start the command line.
_ENTRY_POINTS = ("quiver.__main__",)
_LAYERS = ("superfile", "supertable", "catalog", "flight_server", "proto")


def _project_exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    # Installed, each layer folder is mapped under ``quiver`` (setup.py): walk each one.
    names = [m.name for m in pkgutil.iter_modules(quiver.__path__, "quiver.")]
    for layer in _LAYERS:
        package = importlib.import_module(f"quiver.{layer}")
        names.append(package.__name__)
        names += [m.name for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    for name in names:
        if name in _ENTRY_POINTS:
            continue
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and (obj.__module__ == "quiver" or obj.__module__.startswith("quiver."))):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_exception_class_the_project_defines_derives_from_quiver_error() -> None:
    classes = _project_exception_classes()
    # The walk reaches every layer (a broken walk would pass vacuously).
    layers = {cls.__module__.split(".")[1] for cls in classes if cls.__module__ != "quiver"}
    assert {"superfile", "supertable", "catalog", "flight_server", "errors"} <= layers
    assert len(classes) >= 50
    outside = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in classes
                     if not issubclass(cls, QuiverError))
    assert outside == []


def test_the_public_root_is_the_one_every_layer_derives_from() -> None:
    assert quiver.QuiverError is QuiverError
    for base in (SuperfileError, TableError, SqlPlanError):
        assert issubclass(base, quiver.QuiverError)


def test_every_kind_has_a_status_code() -> None:
    assert set(_CODE_OF_KIND) == set(Kind)


@pytest.mark.parametrize(("exc", "api"), [
    (SqlPlanError("bad"), quiver.InvalidInput),
    (SqlResourceError("too big"), quiver.InvalidInput),
    (StorageFullError("full"), quiver.StorageError),
    (TableError("odd"), quiver.QuiverError),
    (pa.ArrowInvalid("ragged"), quiver.InvalidInput),
])
def test_the_api_translates_by_kind_and_keeps_the_cause(exc, api) -> None:
    ours = translate(exc)
    assert type(ours) is api
    assert ours.__cause__ is exc


def test_a_quiver_error_the_api_already_raises_is_not_wrapped_again() -> None:
    err = quiver.NotFound("t")
    assert translate(err) is err


def test_recover_rebuilds_only_quiver_errors_from_datafusion_text() -> None:
    text = ("Execution error: PyErr { type: <class 'quiver.flight_server.sql.errors."
            "SqlPlanError'>, value: SqlPlanError(\"column 'x' has no index\"), traceback: None")
    got = recover(ValueError(text))
    assert type(got) is SqlPlanError and str(got) == "column 'x' has no index"
    assert status_of(got)[0].name == "INVALID_ARGUMENT"
    # A class outside the root, or outside Quiver's modules, is never imported or built.
    for cls in ("builtins.ValueError", "quiver.flight_server.sql.engine.SqlEngine",
                "os.system"):
        other = text.replace("quiver.flight_server.sql.errors.SqlPlanError", cls)
        assert recover(ValueError(other)) is None
    assert recover(ValueError("Schema error: no field named x")) is None
