"""The health check: is a Quiver server up and answering Flight SQL calls?

``main(argv)`` (also ``python -m quiver.flight_server.cli.health`` and ``quiver health``) connects
to a server, authenticates as told, and asks for the server's name with
``CommandGetSqlInfo`` (GetFlightInfo, then DoGet of its ticket). That round trip goes
through authentication, the Flight SQL command dispatch and a result stream, yet reads
no table, so it is cheap enough for a container health check run every few seconds.

Exit status 0 means healthy (one line on stdout); 1 means anything else, with one line on
stderr. Usage errors exit 1 as well: container engines reserve other statuses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight

from quiver.flight_server.cli.credentials import (
    CredentialError,
    Credentials,
    add_credential_arguments,
    credentials_of,
)
from quiver.flight_server.cli.messages import one_line
from quiver.proto import flight_sql_pb2, pack
from quiver.root_error import Kind, QuiverError

__all__ = ["Credentials", "HealthError", "add_arguments", "check", "main", "run"]

DEFAULT_SERVER = "grpc://127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 5.0
# FLIGHT_SQL_SERVER_NAME in the specification's SqlInfo enum.
_SERVER_NAME_ID = flight_sql_pb2.SqlInfo.Value("FLIGHT_SQL_SERVER_NAME")


class HealthError(QuiverError):
    """The server is not healthy, or the check could not be made; the message says why."""


class _UsageError(QuiverError):
    kind = Kind.INVALID_INPUT


class _Parser(argparse.ArgumentParser):
    # argparse's own error path prints the usage block and exits 2; a health check
    # reports one line and exits 1 instead.
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the health check's options to ``parser`` (for a ``quiver health`` subcommand):
    the same server and credential flags as every other ``quiver`` command."""
    parser.add_argument("--server", default=DEFAULT_SERVER, metavar="URI",
                        help=f"server to check: grpc://host:port or grpc+tls://host:port "
                        f"(default {DEFAULT_SERVER})")
    add_credential_arguments(parser, for_what="the server")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"give up after this many seconds (default {DEFAULT_TIMEOUT_S:g})")


def _credentials(args: argparse.Namespace) -> Credentials:
    try:
        return credentials_of(args)
    except CredentialError as exc:
        raise HealthError(str(exc)) from None


def _client(server: str, tls_root_certs: Path | None) -> flight.FlightClient:
    if not server.startswith(("grpc://", "grpc+tcp://", "grpc+tls://")):
        raise HealthError(f"--server wants grpc://host:port or grpc+tls://host:port, "
                          f"got {server!r}")
    kwargs = {}
    if tls_root_certs is not None:
        if not server.startswith("grpc+tls://"):
            raise HealthError("--tls-root-certs needs a grpc+tls:// server address")
        try:
            kwargs["tls_root_certs"] = tls_root_certs.read_bytes()
        except OSError as exc:
            raise HealthError(f"cannot read --tls-root-certs {str(tls_root_certs)!r}: "
                              f"{exc.strerror or exc}") from None
    try:
        return flight.FlightClient(server, **kwargs)
    except (pa.ArrowException, ValueError) as exc:
        raise HealthError(f"cannot connect to {server}: {one_line(exc)}") from None


def check(server: str = DEFAULT_SERVER, credentials: Credentials | None = None, *,
          tls_root_certs: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """Asks ``server`` for its name through Flight SQL and returns it.

    Raises HealthError (one line) when the server cannot be reached, refuses the
    credentials, fails the call, or answers something that is not a SqlInfo result.
    """
    if not timeout > 0:
        raise HealthError("--timeout must be positive")
    credentials = credentials or Credentials()
    client = _client(server, tls_root_certs)
    try:
        headers: list[tuple[bytes, bytes]] = []
        if credentials.token:
            headers.append((b"authorization", f"Bearer {credentials.token}".encode()))
        options = flight.FlightCallOptions(timeout=timeout, headers=headers)
        if credentials.username is not None:
            pair = client.authenticate_basic_token(credentials.username,
                                                   credentials.password or "", options)
            options = flight.FlightCallOptions(timeout=timeout, headers=[pair])
        command = pack(flight_sql_pb2.CommandGetSqlInfo(info=[_SERVER_NAME_ID]))
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
        if not info.endpoints:
            raise HealthError(f"{server} answered GetSqlInfo with no endpoint to read")
        tables = [client.do_get(endpoint.ticket, options).read_all()
                  for endpoint in info.endpoints]
    except flight.FlightUnauthenticatedError as exc:
        raise HealthError(f"{server} refused the credentials: {one_line(exc)}") from None
    except flight.FlightTimedOutError:
        raise HealthError(f"{server} did not answer within {timeout:g}s") from None
    except flight.FlightUnavailableError as exc:
        raise HealthError(f"{server} is unavailable: {one_line(exc)}") from None
    except (pa.ArrowException, OSError) as exc:
        raise HealthError(f"{server} failed GetSqlInfo: {one_line(exc)}") from None
    finally:
        client.close()
    return _server_name(server, tables)


def _server_name(server: str, tables: list[pa.Table]) -> str:
    for table in tables:
        if "info_name" not in table.column_names or "value" not in table.column_names:
            raise HealthError(f"{server} answered GetSqlInfo without info_name/value columns")
        names = table.column("info_name").to_pylist()
        if _SERVER_NAME_ID in names:
            value = table.column("value")[names.index(_SERVER_NAME_ID)].as_py()
            return str(value)
    raise HealthError(f"{server} answered GetSqlInfo without FLIGHT_SQL_SERVER_NAME")


def run(args: argparse.Namespace) -> int:
    """Runs the check for parsed ``add_arguments`` options; returns the exit status."""
    try:
        name = check(args.server, _credentials(args), tls_root_certs=args.tls_root_certs,
                     timeout=args.timeout)
    except HealthError as exc:
        sys.stderr.write(f"quiver health: unhealthy: {exc}\n")
        return 1
    sys.stdout.write(f"quiver health: ok: {name} at {args.server}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``quiver health`` options in ``argv``; 0 when healthy, else 1 with one stderr line."""
    parser = _Parser(
        prog="quiver health",
        description="Check that a Quiver server answers Flight SQL: asks its name with "
        "GetSqlInfo. Exit status 0 when healthy, 1 otherwise.",
    )
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        sys.stderr.write(f"quiver health: error: {exc}\n")
        return 1
    except SystemExit as exc:  # --help
        return 0 if exc.code in (0, None) else 1
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
