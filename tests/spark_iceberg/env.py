"""The Spark that reads Quiver tables through Iceberg in the tests: which pyspark, which
Iceberg runtime jar, where both are kept, and fetching them once.

Iceberg's Spark runtime is compiled against one Spark minor version and fails on others (on
Spark 4.3 with ``IncompatibleClassChangeError``). Iceberg 1.11.0, the newest release, ships
runtimes for Spark 4.0 and 4.1 only. When the environment's pyspark is one of those, it is
used as is; otherwise a pyspark 4.1 is installed once into a cache folder and the reader
runs in a child interpreter with that folder first on its path.

``python -m tests.spark_iceberg.env fetch`` (run by ``make install``) resolves the jars
(the runtime; Iceberg's AWS bundle and H2 for tables on S3) into Maven's local repository and
the side pyspark into the cache, each with a time limit. Tests never download: they skip,
saying what is missing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ICEBERG_VERSION = "1.11.0"
SCALA = "2.13"
H2_VERSION = "2.3.232"
# The Spark minor versions ICEBERG_VERSION ships a runtime for.
RUNTIME_SPARK_MINORS = ("4.0", "4.1")
# The pyspark installed beside the environment when its own has no Iceberg runtime.
SIDE_PYSPARK = "4.1.4"
CACHE = Path(os.environ.get("QUIVER_SPARK_ICEBERG_DIR")
             or Path.home() / ".cache" / "quiver" / "spark-iceberg")
MAVEN_REPO = Path.home() / ".m2" / "repository"
PIP_TIMEOUT_S = 600
MAVEN_TIMEOUT_S = 300


def _maven_jar(artifact: str) -> Path:
    return (MAVEN_REPO / "org/apache/iceberg" / artifact / ICEBERG_VERSION
            / f"{artifact}-{ICEBERG_VERSION}.jar")


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def installed_pyspark() -> str | None:
    """The version of the environment's own pyspark, without importing it."""
    if importlib.util.find_spec("pyspark") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyspark")
    except PackageNotFoundError:
        return None


@dataclass(frozen=True)
class SparkIceberg:
    """A pyspark and the Iceberg runtime jar built for its Spark minor version."""

    pyspark_version: str
    # A folder to put first on the reader's PYTHONPATH, or None for the environment's own.
    pyspark_path: Path | None

    @property
    def spark_minor(self) -> str:
        return _minor(self.pyspark_version)

    @property
    def artifact(self) -> str:
        """Maven coordinates of the runtime (what ``spark.jars.packages`` takes)."""
        return (f"org.apache.iceberg:iceberg-spark-runtime-{self.spark_minor}_{SCALA}:"
                f"{ICEBERG_VERSION}")

    @property
    def jar(self) -> Path:
        return _maven_jar(f"iceberg-spark-runtime-{self.spark_minor}_{SCALA}")

    @property
    def s3_jars(self) -> dict[str, Path]:
        """What reading tables on S3 adds, by Maven coordinates: Iceberg's ``S3FileIO``
        with the AWS SDK it needs, and H2 to hold a JDBC catalog in memory."""
        return {f"org.apache.iceberg:iceberg-aws-bundle:{ICEBERG_VERSION}":
                _maven_jar("iceberg-aws-bundle"),
                f"com.h2database:h2:{H2_VERSION}":
                MAVEN_REPO / "com/h2database/h2" / H2_VERSION / f"h2-{H2_VERSION}.jar"}

    def s3_missing(self) -> str | None:
        absent = [artifact for artifact, jar in self.s3_jars.items() if not jar.exists()]
        if absent:
            return (f"{', '.join(absent)} not in {MAVEN_REPO}: `make install` (or "
                    "`python -m tests.spark_iceberg.env fetch`) fetches them")
        return None

    def python_path(self, *more: str) -> str:
        parts = [str(self.pyspark_path)] if self.pyspark_path else []
        return os.pathsep.join([*parts, *more])


def chosen() -> SparkIceberg:
    """The environment's pyspark when Iceberg has a runtime for it, else the side one."""
    own = installed_pyspark()
    if own is not None and _minor(own) in RUNTIME_SPARK_MINORS:
        return SparkIceberg(own, None)
    return SparkIceberg(SIDE_PYSPARK, CACHE / f"pyspark-{SIDE_PYSPARK}")


def missing(setup: SparkIceberg | None = None) -> str | None:
    """Why Spark cannot read through Iceberg here, or None when everything is in place."""
    setup = setup or chosen()
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "Spark needs a Java runtime (java on the PATH or JAVA_HOME)"
    hint = "`make install` (or `python -m tests.spark_iceberg.env fetch`) fetches it"
    if setup.pyspark_path is not None and not (setup.pyspark_path / "pyspark").is_dir():
        return (f"the installed pyspark ({installed_pyspark()}) has no Iceberg {ICEBERG_VERSION}"
                f" runtime and pyspark {setup.pyspark_version} is not in {setup.pyspark_path}:"
                f" {hint}")
    if not setup.jar.exists():
        return f"the Iceberg runtime {setup.artifact} is not in {MAVEN_REPO}: {hint}"
    return None


def _fetch_pyspark(setup: SparkIceberg) -> None:
    target = setup.pyspark_path
    assert target is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    # Installed beside and renamed into place: an interrupted install is never taken
    # for a complete one.
    tmp = tempfile.mkdtemp(dir=target.parent, prefix=".partial-")
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", tmp,
                        f"pyspark=={setup.pyspark_version}"],
                       check=True, timeout=PIP_TIMEOUT_S)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fetch_jar(artifact: str) -> None:
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is not installed: `make system-deps` installs it")
    subprocess.run(["mvn", "-B", "-q", "dependency:get", f"-Dartifact={artifact}",
                    "-Dtransitive=false"], check=True, timeout=MAVEN_TIMEOUT_S)


def fetch() -> SparkIceberg:
    """Brings what ``chosen()`` needs onto this machine, if it is not there yet."""
    setup = chosen()
    if setup.pyspark_path is not None and not (setup.pyspark_path / "pyspark").is_dir():
        log.info("installing pyspark %s into %s", setup.pyspark_version, setup.pyspark_path)
        _fetch_pyspark(setup)
    for artifact, jar in {setup.artifact: setup.jar, **setup.s3_jars}.items():
        if not jar.exists():
            log.info("resolving %s", artifact)
            _fetch_jar(artifact)
    return setup


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv != ["fetch"]:
        log.error("usage: python -m tests.spark_iceberg.env fetch")
        return 2
    try:
        setup = fetch()
    except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
        log.error("Spark with Iceberg could not be fetched (%s): its tests will be skipped",
                  exc)
        return 1
    log.info("Spark %s with %s: ready", setup.pyspark_version, setup.artifact)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
