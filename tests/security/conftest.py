"""Fixtures for the attack tests: servers are the shared ones of ``tests/flight_server``."""

from __future__ import annotations

from tests.flight_server.conftest import *  # noqa: F403
