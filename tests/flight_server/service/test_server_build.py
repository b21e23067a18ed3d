"""``build_server``: address checks, TLS option pairing, authentication wiring, workers."""

from __future__ import annotations

import warnings

import adbc_driver_flightsql.dbapi as adbc
import pyarrow.flight as flight
import pytest
from adbc_driver_manager import AdbcStatusCode

from quiver.flight_server.service.auth import load_auth
from quiver.flight_server.service.serve import ServeError, build_server, listening_uri


def test_loopback_server_without_auth_serves_queries(server_root) -> None:
    server = build_server(str(server_root), port=0, workers=1)
    try:
        uri = listening_uri(server)
        assert uri == f"grpc://127.0.0.1:{server.port}"
        got = flight.connect(uri).do_get(flight.Ticket(b"SELECT 41 + 1 AS x")).read_all()
        assert got.to_pylist() == [{"x": 42}]
    finally:
        server.shutdown()


def test_non_loopback_host_needs_auth_or_explicit_permission(server_root) -> None:
    with pytest.raises(ServeError, match="without authentication"):
        build_server(str(server_root), host="0.0.0.0", port=0)
    server = build_server(str(server_root), host="0.0.0.0", port=0,
                          allow_unauthenticated=True)
    server.shutdown()
    secured = build_server(str(server_root), host="0.0.0.0", port=0,
                           auth=load_auth(users=["ann:pw"]))
    secured.shutdown()


def test_tls_needs_both_certificate_and_key(server_root, tmp_path) -> None:
    with pytest.raises(ServeError, match="both --tls-cert and --tls-key"):
        build_server(str(server_root), port=0, tls_cert=tmp_path / "cert.pem")
    with pytest.raises(ServeError, match="does not exist"):
        build_server(str(server_root), port=0, tls_cert=tmp_path / "cert.pem",
                     tls_key=tmp_path / "key.pem")


def test_auth_config_makes_every_call_authenticate(server_root) -> None:
    server = build_server(str(server_root), port=0, auth=load_auth(users=["ann:secret"]))
    uri = listening_uri(server)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            anonymous = adbc.connect(uri)
            with pytest.raises(adbc.Error) as refused:
                anonymous.cursor().execute("SELECT 1")
            assert refused.value.status_code == AdbcStatusCode.UNAUTHENTICATED
            anonymous.close()
            conn = adbc.connect(uri, db_kwargs={"username": "ann", "password": "secret"})
        cur = conn.cursor()
        cur.execute("SELECT 1 AS one")
        assert cur.fetchall() == [(1,)]
        cur.close()
        conn.close()
    finally:
        server.shutdown()


def test_memory_cache_option_bounds_the_decoded_rows(server_root) -> None:
    with pytest.raises(ServeError, match="--memory-cache"):
        build_server(str(server_root), port=0, memory_cache_bytes=-1)
    server = build_server(str(server_root), port=0, memory_cache_bytes=12345)
    try:
        assert server.conn.engine.decoded.budget == 12345
    finally:
        server.shutdown()
