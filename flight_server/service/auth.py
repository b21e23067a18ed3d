"""Who may call the Flight SQL server: credentials, the call authenticator, TLS files.

Every call must carry an ``authorization`` header, either ``Basic base64(user:password)``
or ``Bearer <token>``. A valid Basic header is answered with a fresh bearer token in the
response headers (``authorization: Bearer ...``), which later calls send instead of the
password; static bearer tokens come from a file or an environment variable.

Issued tokens are signed, not stored: any server of the root (sharing its secret,
``quiver.flight_server.service.keys``, and its users) accepts a token another one issued, until it
expires. Failed logins are slowed down per address and per user
(``quiver.flight_server.service.login_limit``); a login refused for that answers RESOURCE_EXHAUSTED.

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
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pyarrow.flight as flight

from quiver.flight_server.service.errors import ResourceExhausted, Unauthenticated
from quiver.flight_server.service.keys import ServerKey, mac
from quiver.flight_server.service.login_limit import LoginLimiter, TooManyFailures

__all__ = [
    "AuthConfig",
    "Authenticator",
    "Identity",
    "handshake_handler",
    "is_loopback",
    "load_auth",
    "middleware",
    "tls_certificates",
]

log = logging.getLogger(__name__)

HOW_TO_AUTHENTICATE = (
    "send the header 'authorization: Basic <base64 of user:password>' (ADBC: the "
    "username and password options; pyarrow: FlightClient.authenticate_basic_token) "
    "or 'authorization: Bearer <token>' (ADBC: adbc.flight.sql.authorization_header)"
)

DEFAULT_TOKEN_TTL = 8 * 3600.0


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
        log.warning("%s: a bearer token shorter than 16 characters is easy to guess", where)
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


@dataclass(frozen=True)
class Identity:
    """Who a call authenticated as, and the headers to send back (a bearer token)."""

    user: str | None
    headers: list[tuple[str, str]] = field(default_factory=list)


class _Tokens:
    """Bearer tokens any server on the root can check without asking another.

    A token is ``base64url(body) + "." + base64url(HMAC)``, the body holding a format
    byte, the expiry (Unix seconds), a random id and the user name. The HMAC key is
    derived from the root's shared secret, and the user's password digest is signed
    along, so a password change (or the user's removal) ends the user's tokens.
    """

    _HEAD = struct.Struct("<BQ16s")

    def __init__(self, key: bytes, ttl: float) -> None:
        self._key = key
        self.ttl = ttl

    def issue(self, user: str, password_digest: bytes) -> str:
        body = self._HEAD.pack(1, int(time.time() + self.ttl), secrets.token_bytes(16))
        body += user.encode()
        tag = mac(self._key, body, password_digest)
        return f"{_b64(body)}.{_b64(tag)}"

    @classmethod
    def user_of(cls, token: bytes) -> tuple[str, bytes, bytes, int] | None:
        """(user, body, tag, expiry) of a token's parts, not yet checked; None if it is
        not one."""
        body_text, dot, tag_text = token.partition(b".")
        if not dot:
            return None
        body, tag = _unb64(body_text), _unb64(tag_text)
        if body is None or tag is None or len(body) < cls._HEAD.size:
            return None
        version, expiry, _ = cls._HEAD.unpack_from(body)
        try:
            user = body[cls._HEAD.size:].decode()
        except UnicodeDecodeError:
            return None
        return (user, body, tag, expiry) if version == 1 else None

    def valid(self, body: bytes, tag: bytes, password_digest: bytes) -> bool:
        return hmac.compare_digest(mac(self._key, body, password_digest), tag)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: bytes) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


class Authenticator:
    """Checks the ``authorization`` header of every call, whatever serves it.

    ``authenticate`` answers who the call is (and the headers to send back: a fresh
    bearer token for a valid Basic header) or raises ``Unauthenticated`` (bad
    credentials) or ``ResourceExhausted`` (too many failed logins, see
    ``quiver.flight_server.service.login_limit``). Issued tokens are signed with a key derived from
    ``key`` (the root's shared secret, ``quiver.flight_server.service.keys``), so every server given
    the same key and users accepts them; until ``use_key`` is called, a key of this
    process alone is used.
    """

    def __init__(self, config: AuthConfig, token_ttl: float = DEFAULT_TOKEN_TTL,
                 max_tokens: int | None = None, *, key: ServerKey | None = None,
                 limiter: LoginLimiter | None = None) -> None:
        # max_tokens is accepted for old callers: tokens are no longer kept.
        if not config.enabled:
            raise ValueError("authentication has no users and no tokens configured")
        if token_ttl <= 0:
            raise ValueError("token_ttl must be positive")
        self._passwords = {name: _digest(pw.encode()) for name, pw in config.users.items()}
        self._static = [_digest(token.encode()) for token in config.tokens]
        self.token_ttl = float(token_ttl)
        self.limiter = limiter or LoginLimiter()
        self._key_given = key is not None
        self._tokens = _Tokens((key or ServerKey.random()).derive("bearer tokens"),
                               self.token_ttl)
        # Compared against when the user is unknown, so both cases take the same time.
        self._dummy = _digest(secrets.token_bytes(32))

    def use_key(self, key: ServerKey) -> None:
        """Signs and checks tokens with ``key`` unless a key was given when made."""
        if not self._key_given:
            self._tokens = _Tokens(key.derive("bearer tokens"), self.token_ttl)
            self._key_given = True

    def check(self, method: str, values: Sequence[str | bytes],
              peer: str = "") -> list[tuple[str, str]]:
        """The response headers of an authenticated call (see ``authenticate``)."""
        return self.authenticate(method, values, peer).headers

    def authenticate(self, method: str, values: Sequence[str | bytes],
                     peer: str = "") -> Identity:
        """Who a call to ``method`` from ``peer`` is, given its ``authorization`` header
        values; raises ``Unauthenticated`` when none is valid."""
        if not values:
            raise Unauthenticated(f"authentication required: {HOW_TO_AUTHENTICATE}")
        failure = None
        for value in values:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, credentials = text.strip().partition(" ")
            scheme = scheme.lower()
            if scheme == "basic":
                user = self._check_password(credentials, peer)
                if user is not None:
                    token = self._tokens.issue(user, self._passwords[user])
                    return Identity(user, [("authorization", f"Bearer {token}")])
                failure = failure or self._basic_failure()
            elif scheme == "bearer":
                identity = self._check_bearer(credentials.strip().encode())
                if identity is not None:
                    return identity
                failure = failure or (
                    "invalid or expired bearer token; authenticate again with a "
                    "username and password or use a valid static token"
                )
            else:
                failure = failure or f"unsupported authorization scheme {scheme[:20]!r}"
        log.info("refused %s call from %s: %s", method, peer or "?", failure)
        raise Unauthenticated(f"{failure}. To authenticate, {HOW_TO_AUTHENTICATE}")

    def _basic_failure(self) -> str:
        if not self._passwords:
            return "this server takes no username/password, only bearer tokens"
        return "invalid username or password"

    def _check_password(self, credentials: str, peer: str) -> str | None:
        decoded = _decode_basic(credentials)
        if decoded is None or not self._passwords:
            return None
        name, password = decoded
        try:
            self.limiter.check(name, peer)
        except TooManyFailures as exc:
            log.debug("login of %r from %s refused unchecked: %s", name[:64], peer, exc)
            raise ResourceExhausted(str(exc)) from None
        expected = self._passwords.get(name, self._dummy)
        matches = hmac.compare_digest(_digest(password.encode()), expected)
        if matches and name in self._passwords:
            return name
        self.limiter.failed(name, peer)
        return None

    def _check_bearer(self, token: bytes) -> Identity | None:
        if not token:
            return None
        offered = _digest(token)
        # Every static token is compared, so the time does not depend on which matched.
        static = False
        for known in self._static:
            static |= hmac.compare_digest(offered, known)
        if static:
            return Identity(f"token:{offered.hex()[:8]}")
        parts = _Tokens.user_of(token)
        if parts is None:
            return None
        user, body, tag, expiry = parts
        if not self._tokens.valid(body, tag, self._passwords.get(user, self._dummy)):
            return None
        if user not in self._passwords or expiry <= time.time():
            return None
        headers = []
        if expiry - time.time() < self.token_ttl / 2:
            # Clients that take tokens from any response keep a busy connection going.
            headers.append(("authorization",
                            f"Bearer {self._tokens.issue(user, self._passwords[user])}"))
        return Identity(user, headers)


def middleware(
    config: AuthConfig,
    *,
    token_ttl: float = DEFAULT_TOKEN_TTL,
    max_tokens: int | None = None,
    key: ServerKey | None = None,
    limiter: LoginLimiter | None = None,
) -> dict[str, Authenticator]:
    """What authenticates every call, as the server's ``middleware=``: ``{"auth": ...}``.

    Issued bearer tokens are valid for ``token_ttl`` seconds after they are issued (a
    fresh one is sent back on calls made in the second half of that time). The server
    gives the authenticator its root's key unless ``key`` is given here.
    """
    return {"auth": Authenticator(config, token_ttl, max_tokens, key=key, limiter=limiter)}


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
