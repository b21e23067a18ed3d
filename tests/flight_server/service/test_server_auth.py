"""Authentication: credentials loading, and a real server refusing or admitting real clients."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as adbc
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from flightsql import FlightSQLClient

from quiver.flight_server.service import auth
from quiver.flight_server.service.server import QuiverFlightServer
from tests.flight_server.conftest import start_server, stop_on_memory, two_docs

USER, PASSWORD = "ann", "pa:ss word"  # a ':' and a space in the password on purpose
STATIC = "static-token-0123456789abcdef"
AUTH_HEADER = adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value
QUERY = "SELECT id, title FROM docs ORDER BY id"
EXPECTED = {"id": [1, 2], "title": ["alpha", "beta"]}


# ------------------------------------------------------------------ loading credentials


def test_load_auth_reads_entries_files_and_environment(tmp_path, monkeypatch):
    users_file = tmp_path / "users"
    users_file.write_text("# team\n\nbob:b0b\n  carl:c:a:r:l  \n")
    token_file = tmp_path / "tokens"
    token_file.write_text("# ci\nfile-token-0123456789\n\n")
    monkeypatch.setenv("QUIVER_TEST_TOKENS", " env-token-a-0123456789 , ,env-token-b-0123456789")
    config = auth.load_auth(
        users=["ann:pa:ss"],
        users_file=users_file,
        token_file=token_file,
        token_env="QUIVER_TEST_TOKENS",
    )
    assert dict(config.users) == {"ann": "pa:ss", "bob": "b0b", "carl": "c:a:r:l"}
    assert config.tokens == {
        "file-token-0123456789",
        "env-token-a-0123456789",
        "env-token-b-0123456789",
    }
    assert config.enabled


def test_no_credentials_means_authentication_is_off():
    assert not auth.load_auth().enabled
    assert auth.handshake_handler(auth.AuthConfig()) is None
    with pytest.raises(ValueError, match="no users and no tokens"):
        auth.middleware(auth.AuthConfig())


def test_config_repr_and_mapping_hide_and_protect_secrets():
    config = auth.AuthConfig(users={"ann": "hunter2"}, tokens=frozenset({"tok-secret"}))
    assert "hunter2" not in repr(config) and "tok-secret" not in repr(config)
    assert "ann" in repr(config)
    with pytest.raises(TypeError):
        config.users["eve"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("ann", "name:password"),
        (":secret", "name:password"),
        ("ann:", "name:password"),
        ("an n:secret", "white space"),
    ],
)
def test_malformed_user_entries_are_refused_without_echoing_the_password(entry, message):
    with pytest.raises(ValueError, match=message) as info:
        auth.load_auth(users=[entry])
    assert "secret" not in str(info.value)


def test_a_user_given_twice_is_refused(tmp_path):
    users_file = tmp_path / "users"
    users_file.write_text("ann:one\n")
    with pytest.raises(ValueError, match=r"users:1: user 'ann' is given more than once"):
        auth.load_auth(users=["ann:two"], users_file=users_file)


def test_a_single_string_of_users_is_refused():
    with pytest.raises(ValueError, match="sequence"):
        auth.load_auth(users="ann:pw")  # type: ignore[arg-type]


def test_malformed_files_and_environment_name_where_the_problem_is(tmp_path, monkeypatch):
    bad_users = tmp_path / "users"
    bad_users.write_text("ok:pw\n# fine\nnot-a-pair\n")
    with pytest.raises(ValueError, match=r"users:3: expected 'name:password'"):
        auth.load_auth(users_file=bad_users)
    bad_tokens = tmp_path / "tokens"
    bad_tokens.write_text("good-token-0123456789\nhas space inside\n")
    with pytest.raises(ValueError, match=r"tokens:2: a token must not contain white space"):
        auth.load_auth(token_file=bad_tokens)
    with pytest.raises(ValueError, match="cannot read the users file"):
        auth.load_auth(users_file=tmp_path / "missing")
    with pytest.raises(ValueError, match="cannot read the token file"):
        auth.load_auth(token_file=tmp_path)
    monkeypatch.delenv("QUIVER_TEST_UNSET", raising=False)
    with pytest.raises(ValueError, match="'QUIVER_TEST_UNSET' is not set"):
        auth.load_auth(token_env="QUIVER_TEST_UNSET")
    monkeypatch.setenv("QUIVER_TEST_EMPTY", " , ")
    with pytest.raises(ValueError, match="holds no token"):
        auth.load_auth(token_env="QUIVER_TEST_EMPTY")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("128.0.0.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host, loopback):
    assert auth.is_loopback(host) is loopback


# ------------------------------------------------------------------------- a real server


def _start(config: auth.AuthConfig, **options) -> QuiverFlightServer:
    conn = two_docs("auth")
    srv = QuiverFlightServer(
        conn,
        "grpc://127.0.0.1:0",
        middleware=auth.middleware(config, **options),
        auth_handler=auth.handshake_handler(config),
    )
    return srv


@pytest.fixture(scope="module")
def server() -> Iterator[QuiverFlightServer]:
    srv = _start(auth.AuthConfig(users={USER: PASSWORD}, tokens=frozenset({STATIC})))
    yield srv
    stop_on_memory(srv)


@pytest.fixture
def uri(server) -> str:
    return f"grpc://127.0.0.1:{server.port}"


def _adbc_rows(uri: str, db_kwargs: dict[str, str]) -> dict:
    with adbc.connect(uri, db_kwargs=db_kwargs, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(QUERY)
        return cur.fetch_arrow_table().to_pydict()


def _adbc_refused(uri: str, db_kwargs: dict[str, str]) -> str:
    with pytest.raises(adbc_driver_manager.Error) as info:
        _adbc_rows(uri, db_kwargs)
    assert info.value.status_code == adbc_driver_manager.AdbcStatusCode.UNAUTHENTICATED
    return str(info.value)


def test_adbc_with_username_and_password_runs_queries(uri):
    assert _adbc_rows(uri, {"username": USER, "password": PASSWORD}) == EXPECTED


def test_adbc_with_a_wrong_password_is_unauthenticated(uri):
    message = _adbc_refused(uri, {"username": USER, "password": "wrong"})
    assert "UNAUTHENTICATED" in message and "invalid username or password" in message


def test_adbc_with_an_unknown_user_gets_the_same_answer(uri):
    message = _adbc_refused(uri, {"username": "mallory", "password": PASSWORD})
    assert "invalid username or password" in message


def test_adbc_without_credentials_is_told_how_to_authenticate(uri):
    message = _adbc_refused(uri, {})
    assert "authentication required" in message
    assert "authorization: Basic" in message and "Bearer" in message


def test_adbc_with_a_static_token_header_runs_queries(uri):
    assert _adbc_rows(uri, {AUTH_HEADER: f"Bearer {STATIC}"}) == EXPECTED


def test_adbc_with_a_bad_token_header_is_unauthenticated(uri):
    message = _adbc_refused(uri, {AUTH_HEADER: f"Bearer {STATIC}x"})
    assert "invalid or expired bearer token" in message


def test_adbc_with_a_basic_header_option_runs_queries(uri):
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert _adbc_rows(uri, {AUTH_HEADER: f"Basic {basic}"}) == EXPECTED


def _read(client: flight.FlightClient, headers=()) -> dict:
    options = flight.FlightCallOptions(headers=list(headers))
    return client.do_get(flight.Ticket(QUERY.encode()), options).read_all().to_pydict()


def test_pyarrow_basic_token_flow_issues_a_fresh_bearer_token(uri):
    with flight.connect(uri) as client:
        first = client.authenticate_basic_token(USER, PASSWORD)
        second = client.authenticate_basic_token(USER, PASSWORD)
        assert first[0] == b"authorization" and first[1].startswith(b"Bearer ")
        assert first[1] != second[1]
        assert _read(client, [first]) == EXPECTED
        assert _read(client, [second]) == EXPECTED


def test_pyarrow_static_bearer_header_reads_and_missing_or_bad_headers_do_not(uri):
    with flight.connect(uri) as client:
        assert _read(client, [(b"authorization", f"Bearer {STATIC}".encode())]) == EXPECTED
        with pytest.raises(flight.FlightUnauthenticatedError, match="authentication required"):
            _read(client)
        with pytest.raises(flight.FlightUnauthenticatedError, match="invalid or expired"):
            _read(client, [(b"authorization", b"Bearer not-a-token")])
        with pytest.raises(flight.FlightUnauthenticatedError, match="invalid username"):
            client.authenticate_basic_token(USER, PASSWORD + "x")
        with pytest.raises(flight.FlightUnauthenticatedError, match="unsupported"):
            _read(client, [(b"authorization", b"Digest abc")])


def test_unpadded_basic_credentials_are_accepted(uri):
    # Go clients send base64 without its '=' padding.
    raw = base64.b64encode(b"ann:" + PASSWORD.encode()).rstrip(b"=")
    assert raw != base64.b64encode(b"ann:" + PASSWORD.encode())
    with flight.connect(uri) as client:
        assert _read(client, [(b"authorization", b"Basic " + raw)]) == EXPECTED


def test_flightsql_dbapi_client_with_user_and_password_runs_queries(server):
    client = FlightSQLClient(
        host="127.0.0.1", port=server.port, user=USER, password=PASSWORD, insecure=True
    )
    try:
        info = client.execute(QUERY)
        table = pa.concat_tables(
            client.do_get(ep.ticket).read_all() for ep in info.endpoints
        )
        assert table.to_pydict() == EXPECTED
    finally:
        client.close()


def test_issued_tokens_expire_their_lifetime_after_being_issued():
    srv = _start(auth.AuthConfig(users={USER: PASSWORD}), token_ttl=1.5)
    try:
        with flight.connect(f"grpc://127.0.0.1:{srv.port}") as client:
            pair = client.authenticate_basic_token(USER, PASSWORD)
            assert _read(client, [pair]) == EXPECTED
            time.sleep(2.5)
            with pytest.raises(flight.FlightUnauthenticatedError, match="expired"):
                _read(client, [pair])
    finally:
        stop_on_memory(srv)


def test_later_logins_never_end_an_issued_token():
    # Tokens are signed, not stored: issuing many cannot push an earlier one out.
    srv = _start(auth.AuthConfig(users={USER: PASSWORD}))
    try:
        with flight.connect(f"grpc://127.0.0.1:{srv.port}") as client:
            first = client.authenticate_basic_token(USER, PASSWORD)
            for _ in range(50):
                client.authenticate_basic_token(USER, PASSWORD)
            assert _read(client, [first]) == EXPECTED
    finally:
        stop_on_memory(srv)


def test_a_token_only_server_says_passwords_are_not_taken():
    srv = _start(auth.AuthConfig(tokens=frozenset({STATIC})))
    try:
        uri = f"grpc://127.0.0.1:{srv.port}"
        message = _adbc_refused(uri, {"username": USER, "password": PASSWORD})
        assert "only bearer tokens" in message
        assert _adbc_rows(uri, {AUTH_HEADER: f"Bearer {STATIC}"}) == EXPECTED
    finally:
        stop_on_memory(srv)


def test_quiver_serve_process_with_users_and_env_tokens_authenticates(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("QUIVER_TEST_SERVE_TOKENS", f"{STATIC},another-token-0123456789")
    proc = start_server(
        root, "--user", f"{USER}:{PASSWORD}", "--token-env", "QUIVER_TEST_SERVE_TOKENS"
    )
    try:
        uri = proc.uri
        for db_kwargs in (
            {"username": USER, "password": PASSWORD},
            {AUTH_HEADER: "Bearer another-token-0123456789"},
        ):
            with (
                adbc.connect(uri, db_kwargs=db_kwargs, autocommit=True) as conn,
                conn.cursor() as cur,
            ):
                cur.execute("SELECT 41 + 1 AS answer")
                assert cur.fetchall() == [(42,)]
        assert "invalid username or password" in _adbc_refused(
            uri, {"username": USER, "password": "nope"}
        )
        assert "authentication required" in _adbc_refused(uri, {})
    finally:
        assert proc.stop() == 0, proc.log()
