"""Slowing down password guessing: failed logins counted per peer address and per user.

Each address (an IPv4 address, or the /64 network of an IPv6 one, since one host
can hold a whole /64) gets ``free_failures`` failed logins; after that every further
failure blocks logins from it for a delay that doubles from ``base_delay`` up to
``max_delay``. While blocked, a login from there is refused without its password
being checked. Each user name gets ``user_free_failures`` failures from all
addresses together before its own backoff starts, and that backoff only applies to
addresses that have failed recently: a guesser (or many) can slow the user down on
the addresses they guess from, but the real user logging in from an address with no
failures is always checked. The trade-off: a user sharing an address with a guesser
(one NAT) is blocked with it, for at most ``max_delay`` at a time; and a guesser
spread over many fresh addresses gets ``free_failures`` guesses per address.

Failures are forgotten ``forget_after`` seconds after the last one; a successful login
does not clear them (else one account the guesser knows would reset the count).
At most ``max_records`` addresses and users are tracked, the oldest forgotten first.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from urllib.parse import unquote

from quiver.root_error import Kind, QuiverError

log = logging.getLogger(__name__)

DEFAULT_FREE_FAILURES = 5
DEFAULT_USER_FREE_FAILURES = 20
DEFAULT_BASE_DELAY = 1.0
DEFAULT_MAX_DELAY = 60.0
DEFAULT_FORGET_AFTER = 900.0


class TooManyFailures(QuiverError):
    """A login refused unchecked because of recent failures; ``wait`` is in seconds."""

    kind = Kind.RESOURCE_EXHAUSTED

    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message)
        self.wait = wait


def peer_address(peer: str) -> str:
    """The address part of a gRPC peer (``ipv4:1.2.3.4:5678`` -> ``1.2.3.4``; IPv6, which
    gRPC sends as ``ipv6:%5B::1%5D:5678``, as its /64 network); anything else as it is."""
    kind, _, rest = unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = rest.rpartition(":")[0].strip("[]") or rest
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and not address.is_loopback:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


class _Backoffs:
    """Failure records by key, bounded in number."""

    def __init__(self, free: int, base: float, cap: float, forget: float, limit: int) -> None:
        self.free, self.base, self.cap, self.forget, self.limit = free, base, cap, forget, limit
        self._records: OrderedDict[Hashable, _Record] = OrderedDict()

    def get(self, key: Hashable, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and now - record.last > self.forget:
            del self._records[key]
            return None
        return record

    def fail(self, key: Hashable, now: float) -> _Record:
        record = self.get(key, now)
        if record is None:
            record = _Record()
            while len(self._records) >= self.limit:
                self._records.popitem(last=False)
        self._records[key] = record
        self._records.move_to_end(key)
        record.failures += 1
        record.last = now
        over = record.failures - self.free
        if over > 0:
            record.blocked_until = now + min(self.cap, self.base * 2 ** min(over - 1, 30))
        return record


class LoginLimiter:
    """Decides whether a login may be checked, and counts the ones that failed."""

    def __init__(self, *, free_failures: int = DEFAULT_FREE_FAILURES,
                 user_free_failures: int = DEFAULT_USER_FREE_FAILURES,
                 base_delay: float = DEFAULT_BASE_DELAY, max_delay: float = DEFAULT_MAX_DELAY,
                 forget_after: float = DEFAULT_FORGET_AFTER, max_records: int = 65_536,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if free_failures < 0 or user_free_failures < 0 or not 0 < base_delay <= max_delay:
            raise ValueError("free failures must be 0 or more and 0 < base_delay <= max_delay")
        self._peers = _Backoffs(free_failures, base_delay, max_delay, forget_after,
                                max_records)
        self._users = _Backoffs(user_free_failures, base_delay, max_delay, forget_after,
                                max_records)
        self._clock = clock
        self._lock = threading.Lock()
        self.max_delay = max_delay

    def check(self, user: str, peer: str) -> None:
        """Raises ``TooManyFailures`` when a login of ``user`` from ``peer`` must wait."""
        address = peer_address(peer)
        now = self._clock()
        with self._lock:
            by_peer = self._peers.get(address, now)
            if by_peer is not None and by_peer.blocked_until > now:
                wait = by_peer.blocked_until - now
                raise TooManyFailures(f"too many failed logins from {address}; wait "
                                      f"{wait:.0f}s before trying again", wait)
            by_user = self._users.get(user, now)
            if by_peer is not None and by_user is not None and by_user.blocked_until > now:
                wait = by_user.blocked_until - now
                raise TooManyFailures(f"too many failed logins for this user from addresses "
                                      f"that failed before; wait {wait:.0f}s before trying "
                                      "again", wait)

    def failed(self, user: str, peer: str) -> None:
        """Counts a failed login (and logs it, never with the password)."""
        address = peer_address(peer)
        now = self._clock()
        with self._lock:
            by_peer = self._peers.fail(address, now)
            by_user = self._users.fail(user, now)
        log.warning("failed login for user %r from %s (%d recent failures from this address, "
                    "%d for this user)", user[:64], peer, by_peer.failures, by_user.failures)
        if by_peer.blocked_until > now:
            log.warning("logins from %s are refused for %.0fs after %d failures", address,
                        by_peer.blocked_until - now, by_peer.failures)
