"""Fixtures of the Iceberg SQL catalog tests: a private PostgreSQL server for the session
(``postgres.py``), a fresh database per test, and pyiceberg's SqlCatalog as the reader
(``reader.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.iceberg_sql import postgres, reader


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.Postgres]:
    reason = postgres.unavailable()
    if reason is not None:
        pytest.skip(f"no PostgreSQL server: {reason}")
    server = postgres.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(postgres_server: postgres.Postgres) -> str:
    """An empty database on the session's server, its name."""
    return postgres_server.new_database()


@pytest.fixture
def sql_catalog_reader() -> None:
    reason = reader.missing()
    if reason is not None:
        pytest.skip(reason)
