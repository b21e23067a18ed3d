"""TLS: certificate files checked up front, and a real server over grpc+tls with real clients."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as adbc
import adbc_driver_manager
import pyarrow.flight as flight
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quiver.flight_server.service import auth
from quiver.flight_server.service.server import QuiverFlightServer
from tests.flight_server.conftest import REPO, start_server, stop_on_memory, two_docs

ROOT_CERTS = adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value
QUERY = "SELECT id, title FROM docs ORDER BY id"
EXPECTED = {"id": [1, 2], "title": ["alpha", "beta"]}
USER, PASSWORD = "ann", "tls-password"


def _self_signed(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pem(tmp_path_factory) -> tuple[Path, Path]:
    return _self_signed(tmp_path_factory.mktemp("tls"))


def _start(cert: Path, key: Path, config: auth.AuthConfig | None = None) -> QuiverFlightServer:
    conn = two_docs("tls")
    secured = config is not None and config.enabled
    srv = QuiverFlightServer(
        conn,
        "grpc+tls://127.0.0.1:0",
        tls_certificates=auth.tls_certificates(cert, key),
        middleware=auth.middleware(config) if secured else None,
        auth_handler=auth.handshake_handler(config) if secured else None,
    )
    return srv


@pytest.fixture(scope="module")
def server(pem) -> Iterator[QuiverFlightServer]:
    srv = _start(*pem)
    yield srv
    stop_on_memory(srv)


# ------------------------------------------------------------------- certificate files


def test_tls_certificates_returns_the_pem_pair(pem):
    cert, key = pem
    [pair] = auth.tls_certificates(cert, key)
    assert pair.cert == cert.read_bytes() and pair.key == key.read_bytes()


def test_missing_certificate_or_key_file_is_named(pem, tmp_path):
    cert, key = pem
    with pytest.raises(ValueError, match=r"certificate file .*nope\.crt' does not exist"):
        auth.tls_certificates(tmp_path / "nope.crt", key)
    with pytest.raises(ValueError, match=r"private key file .*nope\.key' does not exist"):
        auth.tls_certificates(cert, tmp_path / "nope.key")


def test_unreadable_certificate_file_is_named(pem, tmp_path):
    with pytest.raises(ValueError, match="cannot read the TLS certificate file"):
        auth.tls_certificates(tmp_path, pem[1])


def test_files_that_are_not_pem_or_swapped_are_refused(pem, tmp_path):
    cert, key = pem
    der = tmp_path / "cert.der"
    der.write_bytes(
        x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
    )
    with pytest.raises(ValueError, match=r"certificate file .* is not PEM"):
        auth.tls_certificates(der, key)
    with pytest.raises(ValueError, match=r"private key file .* is not PEM"):
        auth.tls_certificates(cert, cert)
    with pytest.raises(ValueError, match=r"certificate file .* is not PEM"):
        auth.tls_certificates(key, key)


# ------------------------------------------------------------------------- a real server


def test_adbc_over_tls_with_the_certificate_as_root_runs_queries(server, pem):
    uri = f"grpc+tls://127.0.0.1:{server.port}"
    db_kwargs = {ROOT_CERTS: pem[0].read_text()}
    with adbc.connect(uri, db_kwargs=db_kwargs, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(QUERY)
        assert cur.fetch_arrow_table().to_pydict() == EXPECTED


def test_pyarrow_over_tls_with_the_certificate_as_root_reads(server, pem):
    uri = f"grpc+tls://localhost:{server.port}"
    with flight.connect(uri, tls_root_certs=pem[0].read_bytes()) as client:
        table = client.do_get(flight.Ticket(QUERY.encode())).read_all()
    assert table.to_pydict() == EXPECTED


def test_plain_grpc_client_fails_against_a_tls_server(server):
    options = flight.FlightCallOptions(timeout=10)
    with (
        flight.connect(f"grpc://127.0.0.1:{server.port}") as client,
        pytest.raises(flight.FlightUnavailableError),
    ):
        client.do_get(flight.Ticket(QUERY.encode()), options).read_all()


def test_plain_adbc_client_fails_against_a_tls_server(server):
    uri = f"grpc://127.0.0.1:{server.port}"
    with (
        adbc.connect(uri, autocommit=True) as conn,
        conn.cursor() as cur,
        pytest.raises(adbc_driver_manager.OperationalError) as info,
    ):
        cur.execute(QUERY)
    # The driver reports the gRPC status UNAVAILABLE (14): the TLS server never speaks
    # plain HTTP/2 back.
    assert info.value.status_code == adbc_driver_manager.AdbcStatusCode.IO
    assert info.value.vendor_code == 14 and "Unavailable" in str(info.value)


def test_a_client_that_does_not_trust_the_certificate_is_refused(server, tmp_path):
    other_cert, _ = _self_signed(tmp_path, "other")
    with (
        flight.connect(
            f"grpc+tls://127.0.0.1:{server.port}", tls_root_certs=other_cert.read_bytes()
        ) as client,
        pytest.raises(flight.FlightUnavailableError),
    ):
        client.do_get(
            flight.Ticket(QUERY.encode()), flight.FlightCallOptions(timeout=10)
        ).read_all()


def test_authentication_works_over_tls(pem):
    srv = _start(*pem, config=auth.AuthConfig(users={USER: PASSWORD}))
    try:
        uri = f"grpc+tls://127.0.0.1:{srv.port}"
        db_kwargs = {ROOT_CERTS: pem[0].read_text(), "username": USER, "password": PASSWORD}
        with (
            adbc.connect(uri, db_kwargs=db_kwargs, autocommit=True) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(QUERY)
            assert cur.fetch_arrow_table().to_pydict() == EXPECTED
        db_kwargs["password"] = "wrong"
        with pytest.raises(adbc_driver_manager.Error, match="invalid username or password"):
            adbc.connect(uri, db_kwargs=db_kwargs, autocommit=True)
    finally:
        stop_on_memory(srv)


def test_quiver_serve_process_with_tls_flags_serves_grpc_tls(tmp_path, pem):
    root = tmp_path / "root"
    root.mkdir()
    cert, key = pem
    proc = start_server(
        root, "--tls-cert", str(cert), "--tls-key", str(key), "--user", f"{USER}:{PASSWORD}"
    )
    try:
        uri = f"grpc+tls://127.0.0.1:{proc.port}"
        db_kwargs = {ROOT_CERTS: cert.read_text(), "username": USER, "password": PASSWORD}
        with (
            adbc.connect(uri, db_kwargs=db_kwargs, autocommit=True) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT 41 + 1 AS answer")
            assert cur.fetchall() == [(42,)]
    finally:
        assert proc.stop() == 0, proc.log()


def test_quiver_serve_refuses_a_key_file_that_is_not_pem(tmp_path, pem):
    bad_key = tmp_path / "bad.key"
    bad_key.write_bytes(b"\x00\x01 not a key")
    result = subprocess.run(
        [sys.executable, "-m", "quiver", "serve", "--root", str(tmp_path),
         "--port", "0", "--tls-cert", str(pem[0]), "--tls-key", str(bad_key)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "private key file" in result.stderr and "is not PEM" in result.stderr
