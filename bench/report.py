"""Writing a benchmark's results: a JSON record and a Markdown page in ``bench/results/``."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.machine import machine_slug

RESULTS = Path(__file__).resolve().parent / "results"


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for a results table; ``-`` when there is none."""
    return "-" if x is None else f"{x:.{digits}f}"


def write_results(result: dict[str, Any], kind: str,
                  render: Callable[[dict[str, Any]], str]) -> tuple[Path, Path]:
    """Writes ``<kind>-<start time>-<machine>[-quick].{json,md}`` and returns both paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.strptime(result["started_utc"], "%Y-%m-%d %H:%M:%S UTC")
    name = f"{kind}-{stamp:%Y%m%d-%H%M%S}-{machine_slug(result['machine'])}"
    if result["quick"]:
        name += "-quick"
    jpath = RESULTS / f"{name}.json"
    mpath = RESULTS / f"{name}.md"
    jpath.write_text(json.dumps(result, indent=2, default=str) + "\n")
    mpath.write_text(render(result))
    return jpath, mpath


def publish(result: dict[str, Any], kind: str, render: Callable[[dict[str, Any]], str]) -> int:
    """Writes the results files, prints the page, a verdict per target and the paths."""
    jpath, mpath = write_results(result, kind, render)
    sys.stdout.write(render(result) + "\n")
    for t in result["targets"]:
        verdict = "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "MISS")
        sys.stdout.write(f"{verdict}: {t['name']} (ratio {fmt(t['value'])})\n")
    repo = RESULTS.parent.parent
    sys.stdout.write(f"results: {jpath.relative_to(repo)} {mpath.relative_to(repo)}\n")
    return 0

