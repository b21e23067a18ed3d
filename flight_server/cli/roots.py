"""Whether a command's ``--root`` exists before anything is opened on it.

Opening a local root creates its folder, so a typo in ``--root`` would quietly start
an empty root somewhere. ``require_root`` refuses a local root folder that does not
exist unless the command was asked to create it (``--create-root``), or it is the
default ``./data`` (``make run`` and the first commands on a fresh clone). Object store
roots (``s3://``, ``gs://``, ``az://``) and ``memory://`` roots cannot be missing: an
empty prefix is simply a root without tables.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from quiver.root_error import Kind, QuiverError

__all__ = ["DEFAULT_ROOT", "RootMissingError", "is_default_root", "local_root_path",
           "require_root"]

DEFAULT_ROOT = "data"


class RootMissingError(QuiverError):
    """A local ``--root`` folder that does not exist, and nobody asked to create it."""

    kind = Kind.NOT_FOUND


def local_root_path(uri: str) -> Path | None:
    """The folder of a local root (a plain path or ``file://``), else None."""
    if "://" not in uri:
        return Path(uri) if uri else None
    if uri.split("://", 1)[0].lower() != "file":
        return None
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.path else None


def is_default_root(uri: str | None) -> bool:
    """Whether ``uri`` is the default root, ``./data`` (not given, or spelled out)."""
    if uri is None:
        return True
    path = local_root_path(uri)
    return path is not None and path.absolute() == Path(DEFAULT_ROOT).absolute()


def require_root(uri: str, *, create: bool) -> None:
    """Refuses a missing local root folder (``RootMissingError``) unless ``create``; with
    ``create`` the folder is made now."""
    path = local_root_path(uri)
    if path is None:
        return
    if path.is_dir():
        return
    if path.exists():
        raise RootMissingError(f"--root {uri!r} is not a folder")
    if not create:
        raise RootMissingError(f"--root {uri!r} does not exist; give --create-root to start a "
                               "new root there")
    path.mkdir(parents=True, exist_ok=True)
