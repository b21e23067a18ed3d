"""The secret every server on one storage root shares, and the keys derived from it.

Servers sign what they hand to clients (statement tickets, prepared-statement handles,
bearer tokens) so that any server on the same root can check them and nobody else can
make or alter them. The secret comes from, in order:

1. ``secret_file`` (``quiver serve --secret-file PATH``), else
2. the file named by the environment variable ``QUIVER_SECRET_FILE``, else
3. the object ``_system/server.key`` in the storage root itself, created with 32 random
   bytes by the first server that finds it missing. The create is conditional
   (create-if-absent), so two servers starting at once end up with the same secret.

Table files live under ``tables/`` and catalog entries under ``_catalog/``, and a table
name cannot hold a ``/``, so no table can ever be stored at the reserved ``_system/``
prefix. Whoever can read the bucket can read the secret in case 3 and mint tickets and
tokens; give every server the same ``--secret-file`` to keep it out of the bucket.

Each use gets its own key (``ServerKey.derive``), so a ticket can never pass as a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from quiver.root_error import QuiverError
from quiver.supertable.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from quiver.supertable.store import ObjectStore

log = logging.getLogger(__name__)

SECRET_PATH = "_system/server.key"
SECRET_FILE_ENV = "QUIVER_SECRET_FILE"
MIN_SECRET_BYTES = 32
MAC_BYTES = 32


class SecretError(QuiverError):
    """The server secret cannot be read or created (the server must not start)."""


@dataclass(frozen=True)
class ServerKey:
    """The shared secret; ``derive`` gives the key of one purpose."""

    secret: bytes = field(repr=False)
    source: str = "generated"

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise SecretError(f"the server secret ({self.source}) is shorter than "
                              f"{MIN_SECRET_BYTES} bytes")

    def derive(self, purpose: str) -> bytes:
        return hmac.new(self.secret, b"quiver key/" + purpose.encode(), hashlib.sha256).digest()

    @classmethod
    def random(cls) -> ServerKey:
        """A key known to this process only (tests, or one server that shares nothing)."""
        return cls(secrets.token_bytes(MIN_SECRET_BYTES), "random, this process only")


def mac(key: bytes, *parts: bytes) -> bytes:
    """The keyed BLAKE2b tag (``MAC_BYTES``) of ``parts``, each length-prefixed so no two
    splits sign alike; ``key`` is a derived key (at most 64 bytes).

    Keyed BLAKE2b is a MAC by design (no HMAC construction needed) and runs in
    Python's own C code: signing a ticket costs a third of OpenSSL's HMAC-SHA256 warm,
    and far less in a server thread woken per call, where OpenSSL's per-call algorithm
    lookup runs cold. Every statement signs one ticket and checks one.
    """
    if len(parts) == 1:
        part = bytes(parts[0])
        data = len(part).to_bytes(8, "little") + part
    else:
        data = b"".join(len(part).to_bytes(8, "little") + bytes(part) for part in parts)
    return hashlib.blake2b(data, key=key, digest_size=MAC_BYTES).digest()


def read_secret_file(path: Path | str) -> ServerKey:
    """The secret in the file at ``path`` (its bytes with surrounding white space removed)."""
    path = Path(path)
    try:
        data = path.read_bytes().strip()
        mode = path.stat().st_mode
    except OSError as exc:
        raise SecretError(f"cannot read the secret file {str(path)!r}: {exc}") from None
    if len(data) < MIN_SECRET_BYTES:
        raise SecretError(f"the secret file {str(path)!r} holds fewer than {MIN_SECRET_BYTES} "
                          "bytes; make one with e.g. 'openssl rand -hex 32 > FILE'")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the secret file %s can be read by other users of this machine; "
                    "chmod 600 it", path)
    return ServerKey(data, f"file {path}")


def root_secret(store: ObjectStore) -> ServerKey:
    """The secret stored in the root at ``SECRET_PATH``, created there when missing."""
    try:
        try:
            data, _ = store.get(SECRET_PATH)
        except ObjectNotFoundError:
            fresh = secrets.token_hex(MIN_SECRET_BYTES).encode()
            try:
                store.put(SECRET_PATH, fresh, mode="create")
                log.info("created the server secret %s in %s", SECRET_PATH, store.uri)
            except ObjectExistsError:
                pass  # another server created it first: use theirs
            data, _ = store.get(SECRET_PATH)
    except StorageError as exc:
        raise SecretError(f"cannot read or create the server secret {SECRET_PATH} in "
                          f"{store.uri}: {exc}; give --secret-file instead") from None
    data = data.strip()
    if len(data) < MIN_SECRET_BYTES:
        raise SecretError(f"the server secret {SECRET_PATH} in {store.uri} is too short; "
                          "delete it (all issued tickets and tokens become invalid) or give "
                          "--secret-file")
    return ServerKey(data, f"{store.uri}/{SECRET_PATH}")


def server_key(store: ObjectStore, secret_file: Path | str | None = None) -> ServerKey:
    """The key of a server on ``store``: from ``secret_file``, ``$QUIVER_SECRET_FILE`` or
    the root (see the module docstring)."""
    if secret_file is None:
        secret_file = os.environ.get(SECRET_FILE_ENV) or None
    if secret_file is not None:
        return read_secret_file(secret_file)
    return root_secret(store)
