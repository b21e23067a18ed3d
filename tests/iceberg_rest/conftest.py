"""The Iceberg REST catalog fixture server shared by this folder's tests (one per module)."""

from __future__ import annotations

import pytest

from tests.iceberg_rest import server as fixture

TOKEN = "rest-catalog-s3cret-9d1f"


@pytest.fixture(scope="module")
def catalog_server(tmp_path_factory):
    reason = fixture.missing_tools()
    if reason:
        pytest.skip(reason)
    try:
        fixture.prepare()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"the Iceberg REST catalog fixture cannot be obtained: {exc}")
    with fixture.running(tmp_path_factory.mktemp("warehouse"), token=TOKEN) as srv:
        yield srv
