"""Apache Iceberg's REST catalog fixture as a process on loopback, for the REST catalog tests.

The jars (the fixture from ``iceberg-open-api``'s test fixtures, Iceberg core and its test
jar, Jetty, SQLite JDBC, a trimmed Hadoop) are resolved by Maven from this folder's
``pom.xml`` into ``~/.cache/quiver/iceberg-rest/jars``, and ``src/LoopbackCatalogServer.java``
(the fixture's catalog adapter behind a connector bound to 127.0.0.1) is compiled beside
them. ``python -m tests.iceberg_rest.server fetch`` (run by ``make iceberg-rest``) does both;
the tests call ``prepare()`` too, which fetches only what is missing, once, with a time limit.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
SOURCE = HERE / "src" / "LoopbackCatalogServer.java"
MAIN_CLASS = "org.apache.iceberg.rest.LoopbackCatalogServer"
CACHE = Path(os.environ.get("QUIVER_ICEBERG_REST_DIR")
             or Path.home() / ".cache" / "quiver" / "iceberg-rest")
JARS = CACHE / "jars"
CLASSES = CACHE / "classes"
MAVEN_TIMEOUT_S = 420
START_TIMEOUT_S = 60.0


def missing_tools() -> str | None:
    absent = [cmd for cmd in ("java", "javac", "mvn") if shutil.which(cmd) is None]
    if absent:
        return (f"the REST catalog fixture needs {', '.join(absent)} on the PATH (a JDK 17+ "
                "and Maven: `make system-deps` installs them)")
    return None


def _stamp() -> str:
    return POM.read_text() + SOURCE.read_text()


def prepare() -> Path:
    """The class path of the fixture server, fetching and compiling it when missing."""
    reason = missing_tools()
    if reason:
        raise RuntimeError(reason)
    marker = CACHE / "ready"
    if marker.exists() and marker.read_text() == _stamp():
        return CACHE
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=".partial-"))
    try:
        subprocess.run(["mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
                        f"-DoutputDirectory={tmp / 'jars'}", "-DincludeScope=runtime"],
                       check=True, timeout=MAVEN_TIMEOUT_S, capture_output=True)
        subprocess.run(["javac", "-d", str(tmp / "classes"), "-cp", f"{tmp / 'jars'}/*",
                        str(SOURCE)], check=True, timeout=300, capture_output=True)
        # Moved into place whole: an interrupted fetch is never taken for a complete one.
        for name in ("jars", "classes"):
            shutil.rmtree(CACHE / name, ignore_errors=True)
            os.rename(tmp / name, CACHE / name)
        marker.write_text(_stamp())
    except subprocess.CalledProcessError as exc:
        out = (exc.stderr or b"").decode(errors="replace")[-2000:]
        raise RuntimeError(f"fetching the REST catalog fixture failed: {out}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CACHE


@dataclass
class RestServer:
    """A running fixture: its base URL (``http://127.0.0.1:port``) and warehouse folder."""

    url: str
    warehouse: Path
    process: subprocess.Popen

    @property
    def uri(self) -> str:
        """The URI Quiver's options take."""
        return f"rest+{self.url}"


@contextmanager
def running(warehouse: Path, token: str | None = None) -> Iterator[RestServer]:
    """Starts the fixture (requiring ``Authorization: Bearer token`` when given) and stops
    it on exit."""
    prepare()
    warehouse.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CATALOG_WAREHOUSE": str(warehouse)}
    env.pop("REQUIRED_TOKEN", None)
    if token:
        env["REQUIRED_TOKEN"] = token
    log_file = (warehouse / "server.log").open("wb")
    process = subprocess.Popen(
        ["java", "-Xmx512m", "-cp", f"{CLASSES}{os.pathsep}{JARS}/*", MAIN_CLASS],
        stdout=subprocess.PIPE, stderr=log_file, env=env)
    try:
        port = _await_port(process, warehouse)
        yield RestServer(f"http://127.0.0.1:{port}", warehouse, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log_file.close()


def _await_port(process: subprocess.Popen, warehouse: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode().strip()
        if line.startswith("PORT "):
            return int(line.split()[1])
        if not line and process.poll() is not None:
            break
    log_text = (warehouse / "server.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"the REST catalog fixture did not start: {log_text}")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv != ["fetch"]:
        log.error("usage: python -m tests.iceberg_rest.server fetch")
        return 2
    try:
        prepare()
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        log.error("the REST catalog fixture could not be fetched (%s): its tests will be "
                  "skipped", exc)
        return 1
    log.info("Iceberg REST catalog fixture: ready in %s", CACHE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
