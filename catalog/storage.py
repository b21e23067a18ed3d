"""Object storage under one root URI, through obstore (Rust ``object_store``).

Owns opening a storage root (``memory://``, a local path or ``file://``, ``s3://``,
``gs://``, ``az://``), the one place where client errors become the table layer's
``quiver.supertable.errors``, conditional writes on every backend, and a ``RangeReader``
over one stored object for the superfile reader.

Semantics shared by all backends:

* Paths are relative to the root, ``/``-separated, without a leading slash.
* ``list(prefix)`` matches by string prefix (as S3 does, not by path segment) and
  yields objects in path order.
* ``put(..., mode="create")`` is create-if-absent and ``put(..., mode=ObjectVersion)``
  is update-if-match on every backend (see ``_LocalRoot`` for how local disk does it).
* ``memory://NAME/PREFIX`` roots live in a process-wide registry keyed by ``NAME``:
  opening the same name twice gives views of the same data (a server and the tests
  driving it see one store); ``drop_memory_store`` forgets one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import obstore as obs
from obstore import exceptions as obx
from obstore.store import AzureStore, GCSStore, LocalStore, MemoryStore, S3Store

from quiver.supertable.errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
    StorageFullError,
    StoragePermissionError,
    StorageUnavailableError,
)
from quiver.supertable.store import ObjectMeta, ObjectStore, ObjectVersion, PutMode
from quiver.supertable.store import StoreRangeReader as ObjectStoreRangeReader

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CLIENT_OPTIONS",
    "DEFAULT_RETRY_OPTIONS",
    "SUPPORTED_SCHEMES",
    "ObjectStoreRangeReader",
    "ObstoreObjectStore",
    "drop_memory_store",
    "open_store",
]

SUPPORTED_SCHEMES = ("memory://", "file:// (or a local path)", "s3://", "gs://", "az://")

# Bounded so that an unreachable endpoint fails in seconds rather than after the
# client's defaults (10 retries over up to 3 minutes). Every key can be overridden
# through ``open_store`` options.
DEFAULT_CLIENT_OPTIONS: dict[str, str] = {
    "connect_timeout": "2s",
    "read_timeout": "15s",
    "timeout": "120s",
}
DEFAULT_RETRY_OPTIONS: dict[str, str] = {
    "max_retries": "3",
    "retry_timeout": "4s",
    "init_backoff": "50ms",
    "max_backoff": "1s",
}

_CLIENT_KEYS = frozenset({
    "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type",
    "http1_only", "http2_keep_alive_interval", "http2_keep_alive_timeout",
    "http2_keep_alive_while_idle", "http2_only", "pool_idle_timeout",
    "pool_max_idle_per_host", "proxy_url", "proxy_ca_certificate", "proxy_excludes",
    "randomize_addresses", "read_timeout", "timeout", "user_agent",
})
_RETRY_KEYS = frozenset({"max_retries", "retry_timeout", "init_backoff", "max_backoff",
                         "backoff_base"})
_ENDPOINT_KEYS = ("aws_endpoint", "aws_endpoint_url", "endpoint", "endpoint_url",
                  "google_base_url", "azure_storage_endpoint", "azure_endpoint")

_memory_lock = threading.Lock()
_memory_stores: dict[str, MemoryStore] = {}


# --------------------------------------------------------------------------- options


_DURATION_UNITS = {"ms": 1e-3, "msec": 1e-3, "s": 1.0, "sec": 1.0, "second": 1.0,
                   "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
                   "h": 3600.0}


def _duration(key: str, value: str) -> timedelta:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", str(value))
    if match is None or match.group(2) not in {"", *_DURATION_UNITS}:
        raise StorageError(f"storage option {key}={value!r} is not a duration like '4s' or '500ms'")
    return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS.get(match.group(2), 1.0))


def _retry_config(options: dict[str, str]) -> dict[str, Any]:
    merged = {**DEFAULT_RETRY_OPTIONS, **options}
    try:
        return {
            "max_retries": int(merged["max_retries"]),
            "retry_timeout": _duration("retry_timeout", merged["retry_timeout"]),
            "backoff": {
                "init_backoff": _duration("init_backoff", merged["init_backoff"]),
                "max_backoff": _duration("max_backoff", merged["max_backoff"]),
                "base": float(merged.get("backoff_base", 2)),
            },
        }
    except ValueError as exc:
        raise StorageError(f"invalid retry option: {exc}") from exc


def _split_options(options: dict[str, Any]) -> tuple[dict[str, str], dict[str, str],
                                                     dict[str, str]]:
    """Sorts user options into store config, HTTP client options and retry options."""
    config: dict[str, str] = {}
    client: dict[str, str] = dict(DEFAULT_CLIENT_OPTIONS)
    retry: dict[str, str] = {}
    for key, value in options.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        bare = key.lower()
        for vendor in ("aws_", "google_", "azure_"):
            if bare.startswith(vendor) and bare[len(vendor):] in _CLIENT_KEYS:
                bare = bare[len(vendor):]
        if bare in _CLIENT_KEYS:
            client[bare] = text
        elif bare in _RETRY_KEYS:
            retry[bare] = text
        else:
            config[key] = text
    endpoint = next((config[k] for k in _ENDPOINT_KEYS if k in config), None)
    # An endpoint written as http:// is an explicit request for plain HTTP (MinIO,
    # a test server); requiring allow_http on top of it only produces confusing errors.
    if endpoint is not None and endpoint.startswith("http://"):
        client.setdefault("allow_http", "true")
    return config, client, retry


# --------------------------------------------------------------------------- errors


_STATUS_RE = re.compile(r"status code: (\d{3})")
_S3_CODE_RE = re.compile(r"<Code>([^<]*)</Code>")
_S3_MESSAGE_RE = re.compile(r"<Message>([^<]*)</Message>")
_CONNECTION_HINTS = ("error sending request", "connection refused", "connect error",
                     "timed out", "timeout", "dns error", "connection reset",
                     "broken pipe", "tcp connect", "unexpected eof")
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# obstore's text for a full disk: "No space left on device (os error 28)", kind StorageFull.
_FULL_RE = re.compile(rf"\(os error (?:{errno.ENOSPC}|{errno.EDQUOT})\)|\bStorageFull\b"
                      r"|no space left on device|disk quota exceeded", re.IGNORECASE)


def _summary(exc: BaseException) -> str:
    """The useful part of a client error: first line, plus any S3 error code/message."""
    text = str(exc)
    head = text.split("\n\nDebug source", 1)[0]
    first = head.split("<?xml", 1)[0].strip().replace("\n", " ")
    if len(first) > 400:
        first = first[:400] + "..."
    code = _S3_CODE_RE.search(text)
    message = _S3_MESSAGE_RE.search(text)
    if code:
        first += f" [{code.group(1)}" + (f": {message.group(1)}]" if message else "]")
    return first or type(exc).__name__


def _reraise_interrupts(exc: BaseException) -> None:
    """Lets interrupts through; everything else a client call raises is a storage failure.

    A Rust panic inside the client surfaces as a ``BaseException`` subclass, which is
    still a failure of this one call and is mapped like any other.
    """
    if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
        raise exc


def _storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk or quota is full: an ``OSError`` with ENOSPC or
    EDQUOT, or the object store client's text for one (it carries the OS error code)."""
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    return _FULL_RE.search(str(exc)) is not None


def _map_error(exc: BaseException, what: str) -> StorageError:
    """Turns any client failure into the table layer's error for it; the one mapping."""
    if isinstance(exc, StorageError):
        return exc
    detail = f"{what}: {_summary(exc)}"
    if isinstance(exc, FileNotFoundError | obx.NotFoundError):
        return ObjectNotFoundError(detail)
    if isinstance(exc, obx.AlreadyExistsError | FileExistsError):
        return ObjectExistsError(detail)
    if isinstance(exc, obx.PreconditionError | obx.NotModifiedError):
        return PreconditionFailedError(detail)
    if isinstance(exc, obx.PermissionDeniedError | obx.UnauthenticatedError | PermissionError):
        return StoragePermissionError(detail)
    if _storage_full(exc):
        return StorageFullError(detail)
    if isinstance(exc, obx.NotSupportedError | NotImplementedError):
        return StorageError(f"{what}: not supported by this backend: {_summary(exc)}")
    if isinstance(exc, obx.UnknownConfigurationKeyError):
        return StorageError(f"{what}: {_summary(exc)}")
    text = str(exc)
    status = _STATUS_RE.search(text)
    if status is not None:
        code = int(status.group(1))
        if code in (401, 403):
            return StoragePermissionError(detail)
        if code == 404:
            return ObjectNotFoundError(detail)
        if code in (409, 412):
            # 409 is S3's "a conflicting conditional write is in progress": this writer
            # lost the race either way.
            return PreconditionFailedError(detail)
        if code in (408, 429) or code >= 500:
            return StorageUnavailableError(detail)
        return StorageError(detail)
    lowered = text.lower()
    if any(hint in lowered for hint in _CONNECTION_HINTS):
        return StorageUnavailableError(detail)
    if isinstance(exc, ConnectionError | TimeoutError):
        return StorageUnavailableError(detail)
    return StorageError(detail)


def _version(e_tag: str | None, version: str | None) -> ObjectVersion:
    return ObjectVersion(e_tag=e_tag, version=version)


def _meta(raw: Any, path: str) -> ObjectMeta:
    return ObjectMeta(path=path, size=int(raw["size"]), last_modified=raw.get("last_modified"),
                      version=_version(raw.get("e_tag"), raw.get("version")))


def _check_path(path: str) -> None:
    if not path or path.startswith("/") or path.endswith("/"):
        raise StorageError(f"object path {path!r} must be non-empty, relative and not end in '/'")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise StorageError(f"object path {path!r} has an empty, '.' or '..' segment")


def _check_range(path: str, offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise StorageError(f"invalid range offset={offset} length={length} of {path!r}")


# --------------------------------------------------------------------------- local disk


class _LocalRoot:
    """What local disk needs beyond obstore's ``LocalStore``: durability and update-if-match.

    ``LocalStore`` writes through a staging file and a rename (overwrite) or a hard
    link (create, so create-if-absent is atomic across processes), but does not fsync
    and has no update-if-match. Updates here hold an exclusive ``flock`` on the current
    file's inode while they compare its e-tag and rename the new content over it. A
    writer that locked an inode which was replaced meanwhile sees the path now names
    another inode and starts again, so two processes can never both win against the
    same version, and no lock files appear in listings.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        # Directories (path, inode) whose own entry in their parent is known to be durable:
        # a directory removed and made again has another inode, and so do all below it.
        self._linked: set[tuple[Path, int]] = set()

    def file(self, key: str) -> Path:
        return self.root / key

    def sync(self, key: str) -> None:
        target = self.file(key)
        try:
            fd = os.open(target, os.O_RDONLY)
        except FileNotFoundError:
            return  # replaced or deleted by someone else already; their write syncs itself
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # New directory entries (the file, and directories made for it) are durable only
        # once each containing directory is synced, up to the root, or up to a directory
        # whose own entry is already known to be durable.
        directory = target.parent
        child: tuple[Path, int] | None = None
        while True:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
                here = (directory, os.fstat(dfd).st_ino)
            finally:
                os.close(dfd)
            if child is not None:
                # The child's entry in this directory is durable now.
                if len(self._linked) > 65536:
                    self._linked.clear()
                self._linked.add(child)
            if (directory == self.root or self.root not in directory.parents
                    or here in self._linked):
                break
            child = here
            directory = directory.parent

    @contextlib.contextmanager
    def locked_current(self, key: str, what: str) -> Iterator[None]:
        """Holds an exclusive lock on the inode the path names now, checked after locking."""
        target = self.file(key)
        while True:
            try:
                fd = os.open(target, os.O_RDONLY)
            except FileNotFoundError as exc:
                raise PreconditionFailedError(f"{what}: the object does not exist") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                locked = os.fstat(fd)
                try:
                    now = os.stat(target)
                except FileNotFoundError as exc:
                    raise PreconditionFailedError(f"{what}: the object was deleted") from exc
                if (locked.st_dev, locked.st_ino) == (now.st_dev, now.st_ino):
                    yield
                    return
            finally:
                os.close(fd)  # also releases the lock


# --------------------------------------------------------------------------- the store


class ObstoreObjectStore:
    """``quiver.supertable.store.ObjectStore`` over one obstore client and a root prefix."""

    def __init__(self, client: Any, uri: str, *, kind: str, key_prefix: str = "",
                 local_root: Path | None = None, endpoint: str | None = None) -> None:
        self._client = client
        self._uri = uri
        self._kind = kind
        # obstore applies the prefix itself except for memory stores, which have none.
        self._key_prefix = key_prefix
        self._local = _LocalRoot(local_root) if local_root is not None else None
        self._where = uri if endpoint is None else f"{uri} (endpoint {endpoint})"

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def kind(self) -> str:
        """The backend: ``memory``, ``local``, ``s3``, ``gs`` or ``az``."""
        return self._kind

    def __repr__(self) -> str:
        return f"ObstoreObjectStore({self._where})"

    @property
    def local_root(self) -> Path | None:
        """The root's folder on local disk (local roots only), for readers that open files
        by path."""
        return self._local.root if self._local is not None else None

    def s3_settings(self) -> dict[str, Any] | None:
        """What another S3 client needs to reach this root (S3 roots only): bucket, prefix,
        region, endpoint, allow_http and static credentials where configured."""
        if self._kind != "s3":
            return None
        config = getattr(self._client, "config", None)
        if not isinstance(config, dict) or "bucket" not in config:
            return None
        options = getattr(self._client, "client_options", None) or {}
        allow_http = str(options.get("allow_http", "false")).lower() in ("true", "1", "yes")
        return {
            "bucket": config["bucket"],
            "prefix": (getattr(self._client, "prefix", None) or "").strip("/"),
            "region": config.get("region"),
            "endpoint": config.get("endpoint"),
            "access_key_id": config.get("access_key_id"),
            "secret_access_key": config.get("secret_access_key"),
            "session_token": config.get("token") or config.get("session_token"),
            "allow_http": allow_http,
        }

    def _key(self, path: str) -> str:
        _check_path(path)
        return self._key_prefix + path

    def _what(self, op: str, path: str) -> str:
        return f"{op} {path!r} in {self._where}"

    # ----------------------------------------------------------------------- reads

    def get(self, path: str) -> tuple[bytes, ObjectMeta]:
        key = self._key(path)
        try:
            result = obs.get(self._client, key)
            data = bytes(result.bytes())
            raw = result.meta
        except BaseException as exc:
            _reraise_interrupts(exc)
            raise _map_error(exc, self._what("get", path)) from exc
        return data, _meta(raw, path)

    def get_range(self, path: str, offset: int, length: int) -> bytes:
        return bytes(self.get_range_buffer(path, offset, length))

    def get_range_buffer(self, path: str, offset: int, length: int) -> memoryview:
        """Like ``get_range`` but without copying out of the client's buffer."""
        key = self._key(path)
        _check_range(path, offset, length)
        if length == 0:
            return memoryview(b"")
        try:
            view = memoryview(obs.get_range(self._client, key, start=offset, length=length))
        except BaseException as exc:
            _reraise_interrupts(exc)
            raise self._range_error(exc, path, [(offset, length)]) from exc
        if len(view) != length:
            raise self._past_end(path, offset, length, offset + len(view))
        return view

    def get_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return [bytes(b) for b in self.get_ranges_buffers(path, ranges)]

    def get_ranges_buffers(self, path: str, ranges: Sequence[tuple[int, int]]
                           ) -> list[memoryview]:
        """Like ``get_ranges`` but without copying out of the client's buffers."""
        key = self._key(path)
        for offset, length in ranges:
            _check_range(path, offset, length)
        wanted = [i for i, (_, length) in enumerate(ranges) if length > 0]
        out: list[memoryview] = [memoryview(b"")] * len(ranges)
        if not wanted:
            return out
        starts = [ranges[i][0] for i in wanted]
        lengths = [ranges[i][1] for i in wanted]
        try:
            if self._kind == "memory":
                # Nothing to gain from batching in memory, and the batched call panics
                # on a range that starts past the end instead of reporting it.
                blobs = [obs.get_range(self._client, key, start=s, length=n)
                         for s, n in zip(starts, lengths, strict=True)]
            else:
                blobs = obs.get_ranges(self._client, key, starts=starts, lengths=lengths)
        except BaseException as exc:
            _reraise_interrupts(exc)
            raise self._range_error(exc, path, [ranges[i] for i in wanted]) from exc
        for i, blob in zip(wanted, blobs, strict=True):
            view = memoryview(blob)
            offset, length = ranges[i]
            if len(view) != length:
                raise self._past_end(path, offset, length, offset + len(view))
            out[i] = view
        return out

    def _past_end(self, path: str, offset: int, length: int, size: int) -> StorageError:
        return StorageError(
            f"range [{offset}, {offset + length}) of {path!r} in {self._where} lies past the "
            f"end of the {size}-byte object")

    def _range_error(self, exc: BaseException, path: str,
                     ranges: Sequence[tuple[int, int]]) -> StorageError:
        mapped = _map_error(exc, self._what("read a range of", path))
        if type(mapped) is not StorageError:
            return mapped
        # The backends word an unsatisfiable range differently (416, "Invalid range",
        # a ValueError); the object's size says plainly whether that is what happened.
        try:
            size = self.head(path).size
        except StorageError:
            return mapped
        for offset, length in ranges:
            if offset + length > size:
                return self._past_end(path, offset, length, size)
        return mapped

    def head(self, path: str) -> ObjectMeta:
        key = self._key(path)
        if self._local is not None and not os.path.lexists(self._local.file(key)):
            # Answered in the calling thread: the client would hand the request to its
            # runtime's threads and back, which on a busy machine costs far more than the
            # lookup. A table's freshness check is exactly this miss, once per query.
            raise ObjectNotFoundError(f"{self._what('head', path)}: no such object")
        try:
            raw = obs.head(self._client, key)
        except BaseException as exc:
            _reraise_interrupts(exc)
            raise _map_error(exc, self._what("head", path)) from exc
        return _meta(raw, path)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        if prefix.startswith("/"):
            raise StorageError(f"list prefix {prefix!r} must be relative to the root")
        # The client lists whole path segments; listing the enclosing directory and
        # filtering gives plain string-prefix semantics on every backend.
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        listed = self._key_prefix + directory
        strip = len(self._key_prefix)
        found: list[ObjectMeta] = []
        try:
            for chunk in obs.list(self._client, listed.rstrip("/") or None):
                for raw in chunk:
                    rel = raw["path"][strip:]
                    if rel.startswith(prefix):
                        found.append(_meta(raw, rel))
        except FileNotFoundError:
            return iter(())
        except BaseException as exc:
            _reraise_interrupts(exc)
            raise _map_error(exc, self._what("list", prefix)) from exc
        found.sort(key=lambda m: m.path)
        return iter(found)

    # ----------------------------------------------------------------------- writes

    def put(self, path: str, data: bytes, mode: PutMode = "overwrite") -> ObjectVersion:
        key = self._key(path)
        what = self._what("put", path)
        if isinstance(mode, ObjectVersion):
            if mode.e_tag is None and mode.version is None:
                raise StorageError(f"{what}: a conditional update needs an e_tag or a version")
            if self._local is not None:
                return self._local_update(key, path, data, mode)
            client_mode: Any = {k: v for k, v in (("e_tag", mode.e_tag),
                                                   ("version", mode.version)) if v is not None}
        elif mode in ("overwrite", "create"):
            client_mode = mode
        else:
            raise StorageError(f"{what}: unknown put mode {mode!r}")
        try:
            # Multipart uploads cannot carry a precondition, so conditional writes are
            # always single requests.
            result = obs.put(self._client, key, data, mode=client_mode,
                             use_multipart=None if client_mode == "overwrite" else False)
        except BaseException as exc:
            _reraise_interrupts(exc)
            mapped = _map_error(exc, what)
            if isinstance(client_mode, dict) and isinstance(mapped, ObjectNotFoundError):
                mapped = PreconditionFailedError(f"{what}: the object does not exist")
            elif client_mode == "create" and type(mapped) is PreconditionFailedError:
                mapped = ObjectExistsError(str(mapped))
            raise mapped from exc
        if self._local is not None:
            self._local.sync(key)
        return _version(result.get("e_tag"), result.get("version"))

    def _local_update(self, key: str, path: str, data: bytes,
                      expected: ObjectVersion) -> ObjectVersion:
        assert self._local is not None
        what = self._what("conditional put", path)
        with self._local.locked_current(key, what):
            if expected.e_tag is None:
                raise StorageError(f"{what}: local disk versions objects by e_tag only")
            current = self.head(path).version
            if current.e_tag != expected.e_tag:
                raise PreconditionFailedError(
                    f"{what}: object is at version {current.e_tag}, not {expected.e_tag}")
            try:
                result = obs.put(self._client, key, data, mode="overwrite",
                                 use_multipart=False)
            except BaseException as exc:
                _reraise_interrupts(exc)
                raise _map_error(exc, what) from exc
            self._local.sync(key)
        return _version(result.get("e_tag"), result.get("version"))

    def delete(self, path: str) -> None:
        key = self._key(path)
        try:
            obs.delete(self._client, key)
        except FileNotFoundError:
            return
        except BaseException as exc:
            _reraise_interrupts(exc)
            mapped = _map_error(exc, self._what("delete", path))
            if isinstance(mapped, ObjectNotFoundError):
                return
            raise mapped from exc

    # ----------------------------------------------------------------------- probing

    def validate(self) -> None:
        """One cheap request that fails the way first use would: credentials, endpoint,
        bucket. Raises the mapped error with a message naming the root and endpoint."""
        if self._kind == "memory":
            return
        if self._local is not None:
            root = self._local.root
            if not os.access(root, os.W_OK | os.X_OK):
                raise StoragePermissionError(f"storage root {self._where} is not writable")
            return
        try:
            next(iter(obs.list(self._client, None, chunk_size=1)), None)
        except BaseException as exc:
            _reraise_interrupts(exc)
            mapped = _map_error(exc, f"cannot open storage root {self._where}")
            hint = {
                StoragePermissionError: "check the access key, secret and region",
                StorageUnavailableError: "check the endpoint address and that it is up",
                ObjectNotFoundError: "check that the bucket/container exists",
            }.get(type(mapped))
            message = str(mapped) + (f" ({hint})" if hint else "")
            raise type(mapped)(message) from exc


# --------------------------------------------------------------------------- opening


def drop_memory_store(uri_or_name: str) -> None:
    """Forgets a ``memory://`` store so its data can be freed; absent names are ignored."""
    name = urlparse(uri_or_name).netloc if "://" in uri_or_name else uri_or_name
    with _memory_lock:
        _memory_stores.pop(name, None)


def _bucket_and_prefix(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    bucket = parsed.netloc
    if not bucket:
        raise StorageError(f"storage root {uri!r} names no bucket/container")
    return bucket, unquote(parsed.path).strip("/")


def _open_memory(uri: str) -> ObstoreObjectStore:
    parsed = urlparse(uri)
    name = parsed.netloc
    prefix = unquote(parsed.path).strip("/")
    with _memory_lock:
        client = _memory_stores.get(name)
        if client is None:
            client = _memory_stores[name] = MemoryStore()
    canonical = f"memory://{name}" + (f"/{prefix}" if prefix else "")
    return ObstoreObjectStore(client, canonical, kind="memory",
                              key_prefix=f"{prefix}/" if prefix else "")


def _open_local(path: str) -> ObstoreObjectStore:
    root = Path(path).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise StoragePermissionError(f"cannot create storage root {root}: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"cannot create storage root {root}: {exc}") from exc
    if not root.is_dir():
        raise StorageError(f"storage root {root} is not a directory")
    client = LocalStore(root)
    return ObstoreObjectStore(client, root.as_uri(), kind="local", local_root=root)


def _open_cloud(scheme: str, uri: str, options: dict[str, Any]) -> ObstoreObjectStore:
    bucket, prefix = _bucket_and_prefix(uri)
    config, client_options, retry = _split_options(options)
    endpoint = next((config[k] for k in _ENDPOINT_KEYS if k in config), None)
    kwargs: dict[str, Any] = {
        "prefix": prefix or None,
        "config": config,
        "client_options": client_options,
        "retry_config": _retry_config(retry),
    }
    client: S3Store | GCSStore | AzureStore
    try:
        if scheme == "s3":
            client = S3Store(bucket, **kwargs)
        elif scheme == "gs":
            client = GCSStore(bucket, **kwargs)
        else:
            client = AzureStore(bucket, **kwargs)
    except Exception as exc:
        raise _map_error(exc, f"cannot configure storage root {uri}") from exc
    canonical = f"{scheme}://{bucket}" + (f"/{prefix}" if prefix else "")
    return ObstoreObjectStore(client, canonical, kind=scheme, endpoint=endpoint)


def open_store(uri: str, *, validate: bool = False, **options: str) -> ObjectStore:
    """Opens the storage root ``uri``.

    ``memory://NAME[/PREFIX]`` (process-wide, shared by name), a local path or
    ``file:///abs/path`` (created if missing), ``s3://bucket[/prefix]``,
    ``gs://bucket[/prefix]``, ``az://container[/prefix]``. ``options`` go to the
    backend's configuration (``aws_endpoint``, ``aws_access_key_id``, ``aws_region``,
    ``google_service_account``, ``azure_storage_account_name``, ...), except HTTP
    client keys (``allow_http``, ``connect_timeout``, ``timeout``, ...) and retry keys
    (``max_retries``, ``retry_timeout``, ``init_backoff``, ``max_backoff``).

    With ``validate`` one cheap request is made now, so wrong credentials or an
    unreachable endpoint fail here (``StoragePermissionError`` /
    ``StorageUnavailableError``) rather than on first use.
    """
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else "file"
    if options and scheme in ("memory", "file"):
        raise StorageError(f"{scheme} roots take no options, got {sorted(options)}")
    store: ObstoreObjectStore
    if "://" not in uri:
        if not uri:
            raise StorageError("empty storage root")
        store = _open_local(uri)
    elif scheme == "memory":
        store = _open_memory(uri)
    elif scheme == "file":
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"file:// root {uri!r} must name a local absolute path")
        store = _open_local(unquote(parsed.path))
    elif scheme in ("s3", "gs", "az"):
        store = _open_cloud(scheme, uri, options)
    else:
        raise StorageError(f"unsupported storage root {uri!r}: use one of "
                           + ", ".join(SUPPORTED_SCHEMES))
    if validate:
        store.validate()
    log.debug("opened storage root %s", store.uri)
    return store


# --------------------------------------------------------------------------- range reads


