"""Password guessing is slowed to a few checks per second at most, without locking the real
user out from another address.

The attack: a loop of Basic logins with wrong passwords ran at ~2,700 checks per second.
Now each address gets a few free failures, then a doubling wait during which logins are
refused unchecked (RESOURCE_EXHAUSTED, saying to wait); failures are logged with user
and peer, never the password.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator

import grpc
import pytest

from quiver.flight_server.service import auth
from quiver.flight_server.service.login_limit import LoginLimiter, TooManyFailures, peer_address
from quiver.flight_server.service.server import QuiverFlightServer
from tests.flight_server.conftest import stop_on_memory, two_docs

USER, PASSWORD = "ann", "correct horse"
HANDSHAKE = "/arrow.flight.protocol.FlightService/Handshake"
GUESSING_S = 4.0


def _server(limiter: LoginLimiter | None = None) -> QuiverFlightServer:
    # "localhost" listens on 127.0.0.1 and ::1: two addresses of one machine.
    config = auth.AuthConfig(users={USER: PASSWORD, "bob": "bob's"})
    return QuiverFlightServer(two_docs("logins"), "grpc://localhost:0",
                              middleware=auth.middleware(config, limiter=limiter))


@pytest.fixture
def server() -> Iterator[QuiverFlightServer]:
    srv = _server()
    try:
        yield srv
    finally:
        stop_on_memory(srv)


def _login(channel: grpc.Channel, user: str, password: str) -> grpc.StatusCode:
    """One Handshake with a Basic header; the status it ends with."""
    call = channel.stream_stream(HANDSHAKE, request_serializer=None,
                                 response_deserializer=None)
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        list(call(iter(()), metadata=[("authorization", f"Basic {basic}")], timeout=10))
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _message(channel: grpc.Channel, user: str, password: str) -> str:
    call = channel.stream_stream(HANDSHAKE, request_serializer=None,
                                 response_deserializer=None)
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    with pytest.raises(grpc.RpcError) as info:
        list(call(iter(()), metadata=[("authorization", f"Basic {basic}")], timeout=10))
    return f"{info.value.code().name}: {info.value.details()}"


def test_guessing_one_password_from_one_address_gets_a_few_checks_and_never_the_user(
        server, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="flight_server")
    codes: list[grpc.StatusCode] = []
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as attacker:
        start = time.monotonic()
        while time.monotonic() - start < GUESSING_S and len(codes) < 50_000:
            codes.append(_login(attacker, USER, f"guess {len(codes)}"))
        elapsed = time.monotonic() - start
        checked = codes.count(grpc.StatusCode.UNAUTHENTICATED)
        refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert checked + refused == len(codes)
        # 5 free failures, then waits of 1 s and 2 s: at most 7 checks in 4 s.
        assert checked <= 8, f"{checked} password checks in {elapsed:.1f}s"
        assert checked / elapsed < 3
        assert refused > 0
        # Even the right password is not checked from the guessing address now...
        message = _message(attacker, USER, PASSWORD)
        assert message.startswith("RESOURCE_EXHAUSTED") and "wait" in message
    # ...but the real user, from another address, logs in at once.
    with grpc.insecure_channel(f"[::1]:{server.port}") as real:
        assert _login(real, USER, PASSWORD) == grpc.StatusCode.OK
    failures = [r for r in caplog.records if "failed login" in r.getMessage()]
    assert len(failures) == checked
    for record in failures:
        text = record.getMessage()
        assert record.levelno == logging.WARNING
        assert "'ann'" in text and "127.0.0.1" in text
        assert "guess" not in text and PASSWORD not in text


def test_spraying_many_users_from_one_address_is_slowed_the_same(server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as attacker:
        codes = [_login(attacker, f"user{i}", "password") for i in range(40)]
        assert codes.count(grpc.StatusCode.UNAUTHENTICATED) <= 6
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 34
    with grpc.insecure_channel(f"[::1]:{server.port}") as real:
        assert _login(real, "bob", "bob's") == grpc.StatusCode.OK


def test_an_address_is_let_in_again_once_its_wait_is_over() -> None:
    srv = _server(LoginLimiter(free_failures=2, base_delay=0.3, max_delay=0.3))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            codes = [_login(channel, USER, "typo") for _ in range(4)]
            assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 3 + \
                [grpc.StatusCode.RESOURCE_EXHAUSTED]
            time.sleep(0.5)
            assert _login(channel, USER, PASSWORD) == grpc.StatusCode.OK
    finally:
        stop_on_memory(srv)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_waits_double_up_to_the_cap_and_failures_are_forgotten() -> None:
    clock = _Clock()
    limiter = LoginLimiter(free_failures=2, base_delay=1.0, max_delay=8.0,
                           forget_after=100.0, clock=clock)
    peer = "ipv4:10.0.0.9:4000"
    waits = []
    for _ in range(8):
        limiter.check(USER, peer)
        limiter.failed(USER, peer)
        try:
            limiter.check(USER, peer)
            waits.append(0.0)
        except TooManyFailures as exc:
            waits.append(exc.wait)
            clock.now += exc.wait
    assert waits == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    clock.now += 101.0
    limiter.check(USER, peer)  # forgotten


def test_a_user_guessed_from_many_addresses_is_still_checked_from_a_clean_one() -> None:
    clock = _Clock()
    limiter = LoginLimiter(free_failures=3, user_free_failures=5, clock=clock)
    for i in range(10):
        limiter.failed(USER, f"ipv4:10.0.0.{i}:1")
    # An address that failed before waits for the user's backoff...
    with pytest.raises(TooManyFailures, match="for this user"):
        limiter.check(USER, "ipv4:10.0.0.1:2")
    # ...one that never failed is checked, as is another user from a failed one.
    limiter.check(USER, "ipv4:192.168.1.1:5")
    limiter.check("bob", "ipv4:10.0.0.1:2")


def test_peer_addresses_ignore_ports_and_group_ipv6_by_network() -> None:
    assert peer_address("ipv4:127.0.0.1:5555") == peer_address("ipv4:127.0.0.1:6666")
    assert peer_address("ipv6:%5B2001:db8::1%5D:1") == peer_address("ipv6:[2001:db8::2]:9")
    assert peer_address("ipv6:%5B::1%5D:1") == "::1"
