"""Who may call the Flight SQL server: credentials, the call authenticator, TLS files.

Every call must carry an ``authorization`` header, either ``Basic base64(user:password)``
or ``Bearer <token>``. A valid Basic header is answered with a fresh bearer token in the
response headers (``authorization: Bearer ...``), which later calls send instead of the
password; static bearer tokens come from a file or an environment variable.

The server takes ``middleware=middleware(config)`` when ``config.enabled``; its
``Authenticator`` checks every RPC including Handshake. The ADBC driver (given
``username``/``password``) and ``FlightClient.authenticate_basic_token`` both call
Handshake with the Basic header and read the bearer token from its response headers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pyarrow.flight as flight

from flight_server.errors import Unauthenticated

__all__ = [
    "AuthConfig",
    "Authenticator",
    "handshake_handler",
    "is_loopback",
    "load_auth",
    "middleware",
    "tls_certificates",
]

logger = logging.getLogger(__name__)

HOW_TO_AUTHENTICATE = (
    "send the header 'authorization: Basic <base64 of user:password>' (ADBC: the "
    "username and password options; pyarrow: FlightClient.authenticate_basic_token) "
    "or 'authorization: Bearer <token>' (ADBC: adbc.flight.sql.authorization_header)"
)

DEFAULT_TOKEN_TTL = 8 * 3600.0
DEFAULT_MAX_TOKENS = 10_000


@dataclass(frozen=True)
class AuthConfig:
    """Accepted credentials: passwords by username, and static bearer tokens."""

    users: Mapping[str, str] = field(default_factory=dict, repr=False)
    tokens: frozenset[str] = field(default_factory=frozenset, repr=False)

    def __post_init__(self) -> None:
        # Read-only view, so a config handed around cannot be changed behind the server.
        object.__setattr__(self, "users", MappingProxyType(dict(self.users)))
        object.__setattr__(self, "tokens", frozenset(self.tokens))

    @property
    def enabled(self) -> bool:
        """Whether any credential is configured, i.e. whether calls must authenticate."""
        return bool(self.users) or bool(self.tokens)

    def __repr__(self) -> str:
        # Never the secrets themselves: configs end up in logs and tracebacks.
        return f"AuthConfig(users={sorted(self.users)!r}, tokens=<{len(self.tokens)}>)"


def _parse_user(entry: str, where: str) -> tuple[str, str]:
    name, sep, password = entry.partition(":")
    name = name.strip()
    if not sep or not name or not password:
        raise ValueError(f"{where}: expected 'name:password', got an entry without both parts")
    if any(c.isspace() for c in name):
        raise ValueError(f"{where}: the user name {name!r} contains white space")
    return name, password


def _check_token(token: str, where: str) -> str:
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError(f"{where}: a token must not contain white space or control characters")
    if len(token) < 16:
        logger.warning("%s: a bearer token shorter than 16 characters is easy to guess", where)
    return token


def _content_lines(path: Path, what: str) -> Iterable[tuple[int, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the {what} {str(path)!r}: {exc}") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


def load_auth(
    users: Sequence[str] = (),
    users_file: Path | None = None,
    token_file: Path | None = None,
    token_env: str | None = None,
) -> AuthConfig:
    """Gather credentials from the command line, files and the environment.

    ``users`` entries and users-file lines are ``name:password`` (the password may contain
    ':'); a token file holds one token per line; ``token_env`` names an environment
    variable holding comma-separated tokens. Blank lines and lines starting with '#' are
    skipped. Malformed input raises ValueError naming where it is, never the secret.
    """
    found: dict[str, str] = {}

    def add_user(entry: str, where: str) -> None:
        name, password = _parse_user(entry, where)
        if name in found:
            raise ValueError(f"{where}: user {name!r} is given more than once")
        found[name] = password

    if isinstance(users, str):
        raise ValueError("users must be a sequence of 'name:password' entries, not one string")
    for index, entry in enumerate(users, start=1):
        add_user(entry, f"user entry {index}")
    if users_file is not None:
        for number, line in _content_lines(users_file, "users file"):
            add_user(line, f"{users_file}:{number}")

    tokens: set[str] = set()
    if token_file is not None:
        for number, line in _content_lines(token_file, "token file"):
            tokens.add(_check_token(line, f"{token_file}:{number}"))
    if token_env is not None:
        value = os.environ.get(token_env)
        if value is None:
            raise ValueError(f"the environment variable {token_env!r} is not set")
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not parts:
            raise ValueError(f"the environment variable {token_env!r} holds no token")
        for part in parts:
            tokens.add(_check_token(part, f"${token_env}"))
    return AuthConfig(users=found, tokens=frozenset(tokens))


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def _decode_basic(credentials: str) -> tuple[str, str] | None:
    # Some clients (Go) leave out the base64 padding.
    text = credentials.strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


class _IssuedTokens:
    """Bearer tokens handed out for a password: idle expiry, bounded count, thread-safe."""

    def __init__(self, ttl: float, limit: int) -> None:
        self._ttl = ttl
        self._limit = limit
        self._lock = threading.Lock()
        # Keyed by the token's SHA-256: a dict lookup then says nothing about the token's
        # characters, and memory never holds the tokens themselves.
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    def issue(self) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._drop_expired(now)
            while len(self._expiry) >= self._limit:
                self._expiry.popitem(last=False)
            self._expiry[_digest(token.encode())] = now + self._ttl
        return token

    def check(self, token: bytes) -> bool:
        key = _digest(token)
        now = time.monotonic()
        with self._lock:
            expiry = self._expiry.get(key)
            if expiry is None:
                return False
            if expiry <= now:
                del self._expiry[key]
                return False
            # Sliding expiry: a connection in use keeps its token.
            self._expiry[key] = now + self._ttl
            self._expiry.move_to_end(key)
            return True

    def _drop_expired(self, now: float) -> None:
        while self._expiry:
            key, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                break
            del self._expiry[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)


class Authenticator:
    """Checks the ``authorization`` header of every call, whatever serves it.

    ``check`` answers the headers to send back (a fresh bearer token for a valid Basic
    header, nothing for a valid bearer token) or raises ``Unauthenticated``.
    """

    def __init__(self, config: AuthConfig, token_ttl: float = DEFAULT_TOKEN_TTL,
                 max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        if not config.enabled:
            raise ValueError("authentication has no users and no tokens configured")
        if token_ttl <= 0 or max_tokens < 1:
            raise ValueError("token_ttl must be positive and max_tokens at least 1")
        self._passwords = {name: _digest(pw.encode()) for name, pw in config.users.items()}
        self._static = [_digest(token.encode()) for token in config.tokens]
        self._issued = _IssuedTokens(float(token_ttl), int(max_tokens))
        # Compared against when the user is unknown, so both cases take the same time.
        self._dummy = _digest(secrets.token_bytes(32))

    def check(self, method: str, values: Sequence[str | bytes]) -> list[tuple[str, str]]:
        """The response headers for a call to ``method`` whose ``authorization`` header
        values are ``values``; raises ``Unauthenticated`` when none is valid."""
        if not values:
            raise Unauthenticated(f"authentication required: {HOW_TO_AUTHENTICATE}")
        failure = None
        for value in values:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, credentials = text.strip().partition(" ")
            scheme = scheme.lower()
            if scheme == "basic":
                if self._check_password(credentials):
                    return [("authorization", f"Bearer {self._issued.issue()}")]
                failure = failure or self._basic_failure()
            elif scheme == "bearer":
                if self._check_bearer(credentials.strip().encode()):
                    return []
                failure = failure or (
                    "invalid or expired bearer token; authenticate again with a "
                    "username and password or use a valid static token"
                )
            else:
                failure = failure or f"unsupported authorization scheme {scheme[:20]!r}"
        logger.info("refused %s call: %s", method, failure)
        raise Unauthenticated(f"{failure}. To authenticate, {HOW_TO_AUTHENTICATE}")

    def _basic_failure(self) -> str:
        if not self._passwords:
            return "this server takes no username/password, only bearer tokens"
        return "invalid username or password"

    def _check_password(self, credentials: str) -> bool:
        decoded = _decode_basic(credentials)
        if decoded is None:
            return False
        name, password = decoded
        expected = self._passwords.get(name, self._dummy)
        matches = hmac.compare_digest(_digest(password.encode()), expected)
        return matches and name in self._passwords

    def _check_bearer(self, token: bytes) -> bool:
        if not token:
            return False
        offered = _digest(token)
        # Every static token is compared, so the time does not depend on which matched.
        static = False
        for known in self._static:
            static |= hmac.compare_digest(offered, known)
        return static or self._issued.check(token)


def middleware(
    config: AuthConfig,
    *,
    token_ttl: float = DEFAULT_TOKEN_TTL,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> dict[str, Authenticator]:
    """What authenticates every call, as the server's ``middleware=``: ``{"auth": ...}``.

    Issued bearer tokens expire after ``token_ttl`` seconds without use; at most
    ``max_tokens`` are kept, the least recently used going first.
    """
    return {"auth": Authenticator(config, token_ttl, max_tokens)}


def handshake_handler(config: AuthConfig) -> bool | None:
    """The server's ``auth_handler=``: kept for callers that pass it; Handshake is
    answered (and its headers checked) whenever ``middleware`` is given."""
    return True if config.enabled else None


def _read_pem(path: Path, what: str, marker: bytes) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ValueError(f"the TLS {what} file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot read the TLS {what} file {str(path)!r}: {exc}") from None
    if b"-----BEGIN " not in data or marker not in data:
        raise ValueError(
            f"the TLS {what} file {str(path)!r} is not PEM: expected a "
            f"'-----BEGIN {marker.decode()}' block"
        )
    return data


def tls_certificates(cert: Path, key: Path) -> list[flight.CertKeyPair]:
    """The certificate chain and private key (PEM files) for ``tls_certificates=``."""
    cert_pem = _read_pem(cert, "certificate", b"CERTIFICATE-----")
    key_pem = _read_pem(key, "private key", b"PRIVATE KEY-----")
    return [flight.CertKeyPair(cert=cert_pem, key=key_pem)]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
