"""The Arrow Flight SQL JDBC driver (what DBeaver, Tableau and Superset load) against real
``quiver serve`` processes.

The Java tests live in this folder's Maven project (``src/test/java``). This module prepares
a root with the tables they read, starts three servers over it (plain, with users and a
bearer token, with TLS), runs ``mvn test`` once with the servers' addresses as system
properties, and reports each Java test class from Surefire's reports. Maven resolves the
driver on its first run (network); later runs are offline.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.flight_server.conftest import ServerProcess, start_server
from tests.flight_server.service.test_server_tls import _self_signed

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
REPORTS = HERE / "target" / "surefire-reports"
JAVA_CLASSES = sorted(p.stem for p in (HERE / "src" / "test" / "java").rglob("*Test.java"))
# The driver version, as pom.xml pins it.
DRIVER_VERSION = re.search(r"<flight\.jdbc\.version>([^<]+)<", POM.read_text()).group(1)
BIG_ROWS = 1_000_000
USER, PASSWORD = "alice", "jdbc-s3cret"
TOKEN = "q-token-jdbc-7f3a9c1e5b2d4a60"
STORE_PASSWORD = "changeit"
MAVEN_TIMEOUT_S = 300

_missing = [cmd for cmd in ("java", "javac", "mvn", "keytool") if shutil.which(cmd) is None]
if _missing:
    pytest.skip(f"the JDBC driver tests need {', '.join(_missing)} on the PATH "
                "(a JDK 17+ and Maven: `make system-deps` installs them)",
                allow_module_level=True)


def prepare_root(root: Path) -> None:
    """The tables the Java tests read: ``big`` (1M rows), ``docs`` (full-text indexed),
    ``typed`` (one column of each common type)."""
    from quiver.flight_server.sql import connect

    conn = connect(str(root))
    try:
        big = conn.create_table("big", pa.schema([("id", pa.int64()), ("v", pa.float64())]))
        ids = np.arange(BIG_ROWS, dtype=np.int64)
        big.append(pa.table({"id": ids, "v": ids * 0.5}))
        big.commit()
        conn.sql("CREATE TABLE docs (id BIGINT, title VARCHAR, body VARCHAR, "
                 "embedding FLOAT[3]) WITH (fts = 'body', vector = 'embedding')")
        conn.sql("INSERT INTO docs VALUES "
                 "(1, 'Rust async', 'tokio runtime for async rust', [1.0, 0.0, 0.0]), "
                 "(2, 'Python', 'asyncio event loop in python', [0.0, 1.0, 0.0]), "
                 "(3, 'Go', 'goroutines and channels', [0.0, 0.0, 1.0])")
        conn.sql("CREATE TABLE typed (i INT, l BIGINT, d DOUBLE, s VARCHAR, b BOOLEAN, "
                 "dt DATE, ts TIMESTAMP)")
        conn.sql("INSERT INTO typed VALUES (1, 10000000000, 1.5, 'one', true, "
                 "DATE '2024-01-02', TIMESTAMP '2024-01-02 03:04:05'), "
                 "(2, NULL, NULL, NULL, NULL, NULL, NULL)")
    finally:
        conn.close()


def trust_store(cert: Path, directory: Path) -> Path:
    """A JKS trust store holding ``cert``, made the way a BI user makes one."""
    store = directory / "truststore.jks"
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "quiver",
                    "-file", str(cert), "-keystore", str(store), "-storetype", "JKS",
                    "-storepass", STORE_PASSWORD], check=True, capture_output=True, timeout=60)
    return store


def offline_ready() -> bool:
    """Whether Maven's local repository already holds the driver and Surefire's JUnit
    provider, the last things the first run resolves (then -o is safe)."""
    local = Path.home() / ".m2" / "repository"
    jar = (local / "org/apache/arrow/flight-sql-jdbc-driver" / DRIVER_VERSION
           / f"flight-sql-jdbc-driver-{DRIVER_VERSION}.jar")
    provider = local / "org/apache/maven/surefire/surefire-junit-platform"
    return jar.exists() and provider.exists()


@dataclass
class Servers:
    """The three servers over one root, and the TLS server's certificate files."""

    plain: ServerProcess
    auth: ServerProcess
    tls: ServerProcess
    cert: Path
    trust_store: Path

    def logs(self) -> str:
        return "\n".join(f"--- {name} server log ---\n{s.log()[-3000:]}"
                         for name, s in (("plain", self.plain), ("auth", self.auth),
                                         ("tls", self.tls)))


@dataclass
class MavenRun:
    returncode: int
    output: str
    seconds: float
    offline: bool

    def reports(self) -> dict[str, ET.Element]:
        return {p.stem.removeprefix("TEST-").rsplit(".", 1)[-1]: ET.parse(p).getroot()
                for p in REPORTS.glob("TEST-*.xml")}

    def surefire_text(self) -> str:
        texts = [p.read_text(errors="replace") for p in sorted(REPORTS.glob("*.txt"))]
        return "\n".join(texts)[-20000:]


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("jdbc")
    root = base / "root"
    root.mkdir()
    prepare_root(root)
    cert, key = _self_signed(base)
    store = trust_store(cert, base)
    tokens = base / "tokens.txt"
    tokens.write_text(TOKEN + "\n")
    started: list[ServerProcess] = []
    try:
        for extra in ((), ("--user", f"{USER}:{PASSWORD}", "--token-file", str(tokens)),
                      ("--tls-cert", str(cert), "--tls-key", str(key),
                       "--user", f"{USER}:{PASSWORD}")):
            started.append(start_server(root, *extra))
        yield Servers(*started, cert=cert, trust_store=store)
    finally:
        for server in started:
            server.stop()


def _mvn(props: dict[str, str], offline: bool) -> MavenRun:
    command = ["mvn", "-B", "-q", *(["-o"] if offline else []), "-f", str(POM), "test",
               *(f"-D{k}={v}" for k, v in props.items())]
    shutil.rmtree(REPORTS, ignore_errors=True)
    started = time.monotonic()
    done = subprocess.run(command, cwd=HERE, capture_output=True, text=True,
                          timeout=MAVEN_TIMEOUT_S)
    return MavenRun(done.returncode, done.stdout + done.stderr,
                    time.monotonic() - started, offline)


@pytest.fixture(scope="module")
def maven(servers: Servers) -> MavenRun:
    """One ``mvn test`` for the whole module (run online again only when the offline run
    could not resolve something, before any test ran)."""
    props = {
        "quiver.plain": f"127.0.0.1:{servers.plain.port}",
        "quiver.auth": f"127.0.0.1:{servers.auth.port}",
        # The certificate names localhost and 127.0.0.1; a tool connects by host name.
        "quiver.tls": f"localhost:{servers.tls.port}",
        "quiver.user": USER,
        "quiver.password": PASSWORD,
        "quiver.token": TOKEN,
        "quiver.tlsCert": str(servers.cert),
        "quiver.trustStore": str(servers.trust_store),
        "quiver.trustStorePassword": STORE_PASSWORD,
        "quiver.bigRows": str(BIG_ROWS),
    }
    run = _mvn(props, offline_ready())
    if run.returncode != 0 and run.offline and not REPORTS.exists():
        run = _mvn(props, offline=False)
    return run


def _failure(run: MavenRun, servers: Servers) -> str:
    return (f"mvn test exited {run.returncode} after {run.seconds:.0f}s "
            f"({'offline' if run.offline else 'online'}):\n{run.output[-15000:]}\n"
            f"--- surefire ---\n{run.surefire_text()}\n{servers.logs()}")


@pytest.mark.timeout(MAVEN_TIMEOUT_S * 2 + 120)
def test_maven_runs_every_java_test_against_the_servers(maven: MavenRun,
                                                        servers: Servers) -> None:
    assert maven.returncode == 0, _failure(maven, servers)
    reports = maven.reports()
    assert sorted(reports) == JAVA_CLASSES, _failure(maven, servers)
    ran = sum(int(r.get("tests", 0)) - int(r.get("skipped", 0)) for r in reports.values())
    assert ran >= 40, f"only {ran} Java tests ran"
    sys.stderr.write(f"mvn test ({'offline' if maven.offline else 'online'}, driver "
                     f"{DRIVER_VERSION}): {ran} Java tests in {maven.seconds:.1f}s\n")


@pytest.mark.timeout(MAVEN_TIMEOUT_S * 2 + 120)
@pytest.mark.parametrize("java_class", JAVA_CLASSES)
def test_java_class_passed(java_class: str, maven: MavenRun, servers: Servers) -> None:
    report = maven.reports().get(java_class)
    assert report is not None, f"no Surefire report for {java_class}\n{_failure(maven, servers)}"
    failed = int(report.get("failures", 0)) + int(report.get("errors", 0))
    if failed:
        cases = [f"{c.get('name')}: {(bad.get('message') or '')[:500]}\n{(bad.text or '')[:3000]}"
                 for c in report.iter("testcase")
                 for bad in [*c.findall("failure"), *c.findall("error")]]
        pytest.fail(f"{java_class}: {failed} failed\n" + "\n".join(cases))
    disabled = [c.get("name") for c in report.iter("testcase") if c.find("skipped") is not None]
    assert int(report.get("tests", 0)) > len(disabled), f"{java_class} ran no test"
