"""What every benchmark shares: its command-line options, waiting for a quiet machine,
library versions, and writing its results (a JSON record and a Markdown page in
``bench/results/``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.machine import machine_slug

log = logging.getLogger(__name__)

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



def benchmark_parser(doc: str, quiet_load: float) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick`` and the wait for a quiet machine."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer runs")
    parser.add_argument("--quiet-load", type=float, default=quiet_load,
                        help="wait for the 1-minute load average to drop to this first")
    parser.add_argument("--quiet-wait", type=float, default=180.0,
                        help="longest wait for a quiet machine, seconds (0: do not wait)")
    return parser


def wait_for_quiet(max_load: float, max_wait_s: float) -> dict[str, Any]:
    """Waits (bounded) until the 1-minute load average drops to ``max_load``: the machine
    may be shared, and latencies are only comparable on a quiet one."""
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    while load > max_load and time.perf_counter() - t0 < max_wait_s:
        time.sleep(5.0)
        load = os.getloadavg()[0]
    waited = time.perf_counter() - t0
    if load > max_load:
        log.warning("starting on a busy machine: load average %.2f after waiting %.0fs",
                    load, waited)
    return {"max_load": max_load, "waited_s": waited, "load_at_start": load}


def library_version(name: str) -> str:
    """The installed version of a distribution, or "-"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def result_head(benchmark: str, quick: bool, started: dt.datetime, wall_s: float,
                machine: dict[str, Any], quiet: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields every benchmark's result starts with."""
    head = {"benchmark": benchmark, "quick": quick,
            "started_utc": started.strftime("%Y-%m-%d %H:%M:%S UTC"), "wall_s": wall_s,
            "machine": machine, "load_average_at_end": list(os.getloadavg())}
    if quiet is not None:
        head["wait_for_quiet"] = quiet
    return head


def targets_section(targets: list[dict[str, Any]], value: str = "ratio") -> list[str]:
    """The Markdown "Targets" section: each target's value, limit and PASS / MISS
    (n/a when it could not be judged)."""
    lines = ["## Targets", "", f"| target | {value} | limit | result |",
             "| --- | --- | --- | --- |"]
    for t in targets:
        verdict = "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "MISS")
        lines.append(f"| {t['name']} | {fmt(t['value'])} | {t['limit']} | {verdict} |")
    return lines
