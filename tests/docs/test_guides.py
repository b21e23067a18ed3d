"""The guides in ``docs/`` (and the README) run as written, against a real ``quiver serve``.

Every ```python block of a guide is a step: the blocks of one guide run in order in one
namespace, in a fresh working folder, with a ``quiver serve`` process on ``./data`` of that
folder. Guides name the server ``127.0.0.1:50051``; the test rewrites that address to the
port it picked. Two markers steer a run and stay invisible when the page is rendered:

- ``# requires: pyspark, data:pypi-minilm, cmd:java`` as the first line of a block skips that
  block unless the module can be imported (``importlib.util.find_spec``), the sample data
  folder exists beside the checkout, and the command is on the PATH. A skipped block must not
  define anything a later block needs.
- ``<!-- docs-test: run -->`` right before a ```bash block runs that block's lines in the
  working folder; a ``quiver serve …`` line (re)starts the guide's server with exactly those
  options instead of blocking. Without it shell blocks are only read.
- ``<!-- docs-test: skip -->`` right before a block leaves it out: a block that needs what
  the guide's process cannot have (another Spark version) and that a test of its own runs
  (the Spark guide's Iceberg blocks: tests/spark_iceberg).

The guide's working folder has ``../shared`` linked to the repository's sample data, as a
checkout with ``shared/`` beside it has.
"""

from __future__ import annotations

import contextlib
import importlib.util
import linecache
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.flight_server.conftest import free_port, wait_listening

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SHARED = REPO.parent / "shared"
GUIDE_PORT = 50051
# Guides that start something much slower than a server, run only when asked for. The Spark
# guide starts a JVM and Python workers (about a minute on two cores); its data source has
# its own tests in tests/flight_server/connectors/test_spark_connector.py.
OPT_IN = {"docs/spark.md": "QUIVER_DOCS_SPARK"}
# The guides this test was written with; each must keep at least one runnable block.
KNOWN_GUIDES = ("pandas.md", "adbc.md", "jdbc-bi.md", "duckdb.md", "hybrid-search.md",
                "python-api.md")
SHELL_STEP_TIMEOUT_S = 60.0
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(?P<what>[a-z-]+)\s*-->")
_ADDRESS = re.compile(rf"\b(127\.0\.0\.1|localhost):{GUIDE_PORT}\b")


# -- reading a guide ------------------------------------------------------------------------


@dataclass
class Block:
    """One fenced code block of a guide."""

    number: int          # 1-based among the guide's runnable steps
    line: int            # 1-based line of the opening fence
    lang: str
    code: str
    run_shell: bool = False

    @property
    def requires(self) -> list[str]:
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        m = re.match(r"#\s*requires:\s*(.+)$", first.strip())
        return [r.strip() for r in m.group(1).split(",") if r.strip()] if m else []


@dataclass
class Guide:
    path: Path
    steps: list[Block] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.path.is_relative_to(REPO):
            return self.path.relative_to(REPO).as_posix()
        return self.path.name

    @property
    def needs_server(self) -> bool:
        return any(_ADDRESS.search(s.code) for s in self.steps)


def parse_guide(path: Path, text: str | None = None) -> Guide:
    """The runnable steps of a markdown file: its python blocks and marked shell blocks."""
    lines = (path.read_text() if text is None else text).splitlines()
    guide = Guide(path)
    pending: str | None = None
    i = 0
    while i < len(lines):
        directive = _DIRECTIVE.search(lines[i])
        if directive:
            if directive.group("what") not in ("run", "skip"):
                raise ValueError(f"{path.name}:{i + 1}: unknown docs-test marker "
                                 f"{directive.group('what')!r}")
            pending = directive.group("what")
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, start = m.group("fence"), i
        lang = (m.group("info").strip().split() or [""])[0].lower()
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        code = "\n".join(body) + "\n"
        if pending == "skip":
            pass
        elif lang in ("python", "py"):
            guide.steps.append(Block(len(guide.steps) + 1, start + 1, "python", code))
        elif pending == "run" and lang in ("bash", "sh", "shell", "console"):
            guide.steps.append(Block(len(guide.steps) + 1, start + 1, lang, code,
                                     run_shell=True))
        pending = None
    return guide


def missing_requirement(block: Block) -> str | None:
    """Why ``block`` cannot run here, or None when everything it names is present."""
    for req in block.requires:
        if req.startswith("data:"):
            if not (SHARED / "data" / req[len("data:"):]).exists():
                return f"sample data {req[len('data:'):]!r} is not in {SHARED / 'data'}"
        elif req.startswith("cmd:"):
            if shutil.which(req[len("cmd:"):]) is None:
                return f"command {req[len('cmd:'):]!r} is not on the PATH"
        elif importlib.util.find_spec(req) is None:
            return f"module {req!r} is not installed"
    return None


def rewrite_port(text: str, port: int) -> str:
    return _ADDRESS.sub(lambda m: f"{m.group(1)}:{port}", text)


# -- the guide's server ---------------------------------------------------------------------


class GuideServer:
    """The ``quiver serve`` process a guide talks to, started in the guide's folder."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = cwd.parent / "server.log"

    def start(self, options: list[str]) -> None:
        self.stop()
        options = list(options)
        if "--port" in options:
            options[options.index("--port") + 1] = str(self.port)
        else:
            options += ["--port", str(self.port)]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "quiver", "serve", *options],
                cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_listening(self.port, self.proc)
        except BaseException:
            self.stop()
            raise RuntimeError(f"quiver serve {' '.join(options)} did not start:\n"
                               f"{self.log()}") from None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# -- running a guide ------------------------------------------------------------------------


class GuideError(AssertionError):
    """A step of a guide failed; the message names the guide, the block and its line."""


@dataclass
class RunReport:
    ran: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)


def _run_shell(block: Block, server: GuideServer, port: int) -> None:
    for raw in block.code.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        if words[:2] == ["quiver", "serve"]:
            server.start(words[2:])
            continue
        if words[:1] == ["quiver"]:
            # The command as installed, whether or not the environment's bin is on PATH.
            line = f"{shlex.quote(sys.executable)} -m quiver {line[len('quiver'):]}"
        done = subprocess.run(rewrite_port(line, port), shell=True, cwd=server.cwd,
                              capture_output=True, text=True, timeout=SHELL_STEP_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"`{line}` exited {done.returncode}: {done.stderr[-2000:]}")


def run_guide(guide: Guide, workdir: Path) -> RunReport:
    """Runs every step of ``guide`` in ``workdir``; raises ``GuideError`` on the first failure."""
    cwd = workdir / "work"
    cwd.mkdir(parents=True, exist_ok=True)
    if SHARED.exists() and not (workdir / "shared").exists():
        (workdir / "shared").symlink_to(SHARED, target_is_directory=True)
    server = GuideServer(cwd)
    report = RunReport()
    namespace: dict[str, object] = {"__name__": "__guide__"}
    old_cwd, old_path = Path.cwd(), os.environ.get("PYTHONPATH")
    # As if Quiver were installed: processes a guide starts (Spark's Python workers)
    # import it from any folder.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *([old_path] if old_path else [])])
    os.chdir(cwd)
    try:
        if guide.needs_server and not (guide.steps and guide.steps[0].run_shell):
            server.start([])
        for block in guide.steps:
            why = missing_requirement(block)
            if why is not None:
                report.skipped[block.number] = why
                continue
            where = f"{guide.name} block {block.number} (line {block.line})"
            try:
                if block.run_shell:
                    _run_shell(block, server, server.port)
                else:
                    source = rewrite_port(block.code, server.port)
                    filename = f"<{where}>"
                    # Tracebacks then show the guide's own lines.
                    linecache.cache[filename] = (len(source), None,
                                                 source.splitlines(True), filename)
                    exec(compile(source, filename, "exec"), namespace)
            except Exception as exc:
                detail = "".join(traceback.format_exception(exc, limit=100))
                log = server.log()
                raise GuideError(f"{where} failed: {exc!r}\n{detail}"
                                 + (f"\nserver log:\n{log[-3000:]}" if log else "")) from None
            report.ran.append(block.number)
    finally:
        os.chdir(old_cwd)
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path
        _close_clients(namespace)
        server.stop()
    return report


def _close_clients(namespace: dict[str, object]) -> None:
    """Closes connections a guide left open, so their threads do not outlive the test."""
    for value in list(namespace.values()):
        close = getattr(value, "close", None)
        if callable(close) and type(value).__module__.split(".")[0] in (
                "adbc_driver_manager", "adbc_driver_flightsql", "pyarrow", "duckdb",
                "quiver"):
            # Best effort: some were closed by the guide itself.
            with contextlib.suppress(Exception):
                close()


def guide_files() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), REPO / "README.md"]


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", guide_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_guide_runs_as_written_against_a_real_server(path: Path, tmp_path: Path) -> None:
    guide = parse_guide(path)
    if not guide.steps:
        pytest.skip(f"{guide.name} has no runnable block")
    for block in guide.steps:
        if block.lang == "python":
            compile(block.code, f"{guide.name} block {block.number}", "exec")
    switch = OPT_IN.get(guide.name)
    if switch and os.environ.get(switch) != "1":
        pytest.skip(f"{guide.name} runs only with {switch}=1 (its blocks were compiled)")
    started = time.monotonic()
    report = run_guide(guide, tmp_path)
    if not report.ran:
        pytest.skip(f"every block of {guide.name} was skipped: {report.skipped}")
    if report.skipped:
        # Visible with -rs and in the warnings summary, without failing the guide.
        sys.stderr.write(f"{guide.name}: skipped blocks {report.skipped} "
                         f"({time.monotonic() - started:.1f}s)\n")


@pytest.mark.parametrize("name", KNOWN_GUIDES)
def test_each_guide_has_runnable_blocks_and_names_the_default_address(name: str) -> None:
    path = DOCS / name
    assert path.exists(), f"docs/{name} is missing"
    guide = parse_guide(path)
    python = [s for s in guide.steps if s.lang == "python"]
    assert python, f"docs/{name} has no ```python block: a typo in a fence runs nothing"
    for block in python:
        compile(block.code, f"{name} block {block.number}", "exec")


def test_python_blocks_and_marked_shell_blocks_are_steps_in_order(tmp_path: Path) -> None:
    text = "\n".join([
        "# Guide", "```python", "a = 1", "```", "```text", "not run", "```",
        "```bash", "echo only read", "```",
        "<!-- docs-test: run -->", "```bash", "touch made.txt", "```",
        "````python (runnable)", "b = a + 1", "````",
    ])
    guide = parse_guide(tmp_path / "g.md", text)
    assert [(s.number, s.lang, s.line, s.run_shell) for s in guide.steps] == [
        (1, "python", 2, False), (2, "bash", 12, True), (3, "python", 15, False)]
    assert guide.steps[2].code == "b = a + 1\n"
    assert not guide.needs_server


def test_a_block_marked_skip_is_not_a_step(tmp_path: Path) -> None:
    text = ("```python\na = 1\n```\n<!-- docs-test: skip -->\n```python\n"
            "raise SystemExit('must not run')\n```\n```python\nassert a == 1\n```\n")
    guide = parse_guide(tmp_path / "g.md", text)
    assert [(s.number, s.line) for s in guide.steps] == [(1, 1), (2, 8)]
    assert run_guide(guide, tmp_path).ran == [1, 2]


def test_a_failing_block_is_reported_with_the_guide_and_block_number(tmp_path: Path) -> None:
    text = "```python\nx = 1\n```\n\n```python\nassert x == 2, 'x is one'\n```\n"
    guide = parse_guide(REPO / "docs" / "broken.md", text)
    with pytest.raises(GuideError) as info:
        run_guide(guide, tmp_path)
    message = str(info.value)
    assert "docs/broken.md block 2 (line 5) failed" in message
    assert "x is one" in message and "assert x == 2" in message


def test_requires_marker_skips_only_blocks_whose_needs_are_missing(tmp_path: Path) -> None:
    text = ("```python\n# requires: json, cmd:sh\nimport json\nran = ['first']\n```\n"
            "```python\n# requires: surely_no_such_module_here\nraise SystemExit(3)\n```\n"
            "```python\n# requires: data:no-such-data-set\nraise SystemExit(4)\n```\n"
            "<!-- docs-test: run -->\n```bash\ntouch made.txt\n```\n"
            "```python\nfrom pathlib import Path\nassert Path('made.txt').exists()\n```\n")
    report = run_guide(parse_guide(tmp_path / "g.md", text), tmp_path)
    assert report.ran == [1, 4, 5]
    assert "surely_no_such_module_here" in report.skipped[2]
    assert "no-such-data-set" in report.skipped[3]


def test_the_default_address_is_rewritten_to_the_servers_port() -> None:
    code = 'connect("grpc://127.0.0.1:50051")  # or grpc+tls://localhost:50051, not :500510'
    assert rewrite_port(code, 6001) == (
        'connect("grpc://127.0.0.1:6001")  # or grpc+tls://localhost:6001, not :500510')


def test_a_serve_line_restarts_the_server_with_its_options(tmp_path: Path) -> None:
    text = ("<!-- docs-test: run -->\n```bash\nquiver serve --user ann:pw\n```\n"
            "```python\nimport pyarrow.flight as flight\n"
            "client = flight.connect('grpc://127.0.0.1:50051')\n"
            "try:\n    client.do_get(flight.Ticket(b'SELECT 1')).read_all()\n"
            "except flight.FlightUnauthenticatedError:\n    refused = True\n"
            "token = client.authenticate_basic_token('ann', 'pw')\n"
            "opts = flight.FlightCallOptions(headers=[token])\n"
            "assert client.do_get(flight.Ticket(b'SELECT 1 AS one'), opts).read_all()"
            ".column('one').to_pylist() == [1]\n"
            "assert refused\n```\n")
    guide = parse_guide(tmp_path / "g.md", text)
    assert guide.needs_server
    assert run_guide(guide, tmp_path).ran == [1, 2]


def _iter_blocks(paths: list[Path]) -> Iterator[tuple[Path, Block]]:
    for path in paths:
        for block in parse_guide(path).steps:
            yield path, block


def test_requires_markers_name_importable_modules_or_known_kinds() -> None:
    # A misspelt marker would skip a block forever; module names must at least be valid.
    for path, block in _iter_blocks(guide_files()):
        for req in block.requires:
            kind, _, rest = req.partition(":")
            if rest:
                assert kind in ("data", "cmd"), f"{path.name} block {block.number}: {req!r}"
            else:
                assert re.fullmatch(r"[A-Za-z_][\w.]*", req), (
                    f"{path.name} block {block.number}: {req!r} is not a module name")


# Where a guide's runnable code names a table it creates or writes.
_CREATED = (
    re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?[\"`]?(\w+)", re.IGNORECASE),
    re.compile(r"\bcreate_table\(\s*[\"'](\w+)[\"']"),
    re.compile(r"\badbc_ingest\(\s*[\"'](\w+)[\"']"),
    re.compile(r"\bto_sql\(\s*[\"'](\w+)[\"']"),
    re.compile(r"\.option\(\s*[\"']table[\"']\s*,\s*[\"'](\w+)[\"']"),
)


def created_tables(guide: Guide) -> set[str]:
    """The names of the tables a guide's runnable blocks create or write."""
    names: set[str] = set()
    for block in guide.steps:
        for pattern in _CREATED:
            names.update(n.lower() for n in pattern.findall(block.code))
    return names


def test_created_tables_finds_every_way_a_guide_makes_a_table(tmp_path: Path) -> None:
    text = ("```python\ncur.execute(\"CREATE TABLE IF NOT EXISTS a (x INT)\")\n"
            "db.create_table('b', rows)\ncur.adbc_ingest(\"c\", t, mode='create')\n"
            "frame.to_sql(\"d\", conn)\ndf.write.format('quiver').option('table', 'e')\n```\n")
    assert created_tables(parse_guide(tmp_path / "g.md", text)) == {"a", "b", "c", "d", "e"}


def test_guides_followed_in_order_on_one_root_never_reuse_a_table_name() -> None:
    # A reader follows the guides one after another against the same ./data: a table one
    # guide made would make the next guide's CREATE fail, or its counts differ.
    owners: dict[str, str] = {}
    clashes = []
    for path in guide_files():
        guide = parse_guide(path)
        for name in sorted(created_tables(guide)):
            if name in owners:
                clashes.append(f"{name!r} in {owners[name]} and {guide.name}")
            owners.setdefault(name, guide.name)
    assert not clashes, "guides reuse table names: " + "; ".join(clashes)
    assert len(owners) >= 5, f"the table names were not found: {owners}"
