"""Helpers for the deployment tests: the compose file, its variable syntax, the CLI parsers.

``interpolate`` implements the part of compose's variable syntax the file uses
(``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``, ``$$``), so a test can run the
quiver service's command without a Docker engine.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from quiver.flight_server.cli import health
from quiver.flight_server.cli import main as cli

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(KeyError):
    """A required ``${VAR:?message}`` variable is unset or empty."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with compose variables replaced from ``env``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = env.get(name)
        empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op is not None and op.endswith("?") and empty:
            raise MissingVariable(f"{name}: {arg}")
        if op is not None and op.endswith("-") and empty:
            return arg
        return value or ""

    return _VARIABLE.sub(replace, text)


def load_compose() -> dict[str, Any]:
    """The compose file as written (variables not yet replaced)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def serve_args(command: list[str]) -> argparse.Namespace:
    """``command`` (starting with ``serve``) parsed by the real ``quiver`` parser.

    Raises AssertionError naming the command when the parser rejects it.
    """
    try:
        args = cli._parser().parse_args(command)
    except SystemExit as exc:
        raise AssertionError(f"quiver rejects {command!r} (exit {exc.code})") from None
    assert args.command == "serve", command
    return args


def health_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` (what follows ``quiver health``) parsed by the health check's parser."""
    parser = argparse.ArgumentParser(prog="quiver health", exit_on_error=False)
    health.add_arguments(parser)
    try:
        return parser.parse_args(argv)
    except (SystemExit, argparse.ArgumentError) as exc:
        raise AssertionError(f"quiver health rejects {argv!r}: {exc}") from None


def cli_has_health() -> bool:
    """Whether ``quiver health`` is wired into the command line yet."""
    parser = cli._parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return "health" in action.choices
    return False
