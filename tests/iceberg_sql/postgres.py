"""A private PostgreSQL server for the tests: a fresh cluster in a temporary folder, on a free
loopback port, stopped by its pid at the end.

The server programs are Debian's ``postgresql`` package (``make install`` installs it where
it may): ``initdb`` and ``postgres`` on the PATH or under ``/usr/lib/postgresql/<ver>/bin``.
PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user
the package creates and the programs run as that user. Unix sockets are off: clients reach
it over TCP on 127.0.0.1 with a password (SCRAM), as they would a remote server.
``unavailable()`` says why no server can be had here, for the tests to skip with.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

USER = "quiver"
SERVICE_USER = "postgres"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
START_ATTEMPTS = 3


def bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, newest version first."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                      key=lambda p: int(Path(p).parent.parent.name)
                      if Path(p).parent.parent.name.isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _run_as() -> pwd.struct_passwd | None:
    """The account the server runs as when this process is root, else None (itself)."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam(SERVICE_USER)


def unavailable() -> str | None:
    """Why no PostgreSQL server can be started here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg 3 is not installed (pip install 'quiver[postgres]')"
    if bin_dir() is None:
        return ("no PostgreSQL server programs (initdb, postgres): `make install` installs "
                "Debian's postgresql package")
    try:
        _run_as()
    except KeyError:
        return (f"running as root and there is no {SERVICE_USER!r} user to run PostgreSQL as "
                "(Debian's postgresql package creates it)")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    """A running server: ``uri(db)`` reaches database ``db`` as its superuser."""

    port: int
    password: str
    folder: Path
    process: subprocess.Popen[bytes]
    _names: int = field(default=0, repr=False)

    def uri(self, database: str = "postgres", *, scheme: str = "postgresql",
            password: str | None = None) -> str:
        secret = quote(self.password if password is None else password, safe="")
        return f"{scheme}://{USER}:{secret}@127.0.0.1:{self.port}/{database}"

    def new_database(self, stem: str = "catalog") -> str:
        """Creates an empty database with a fresh name and returns the name."""
        import psycopg

        self._names += 1
        name = f"{stem}_{self._names}"
        with psycopg.connect(self.uri(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return name

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown of this server (its pid only), then its folder is removed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
        shutil.rmtree(self.folder, ignore_errors=True)


def _as_user(account: pwd.struct_passwd | None) -> dict:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [],
            "env": {**os.environ, "HOME": account.pw_dir, "USER": account.pw_name}}


def _ready(uri: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(uri, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def start() -> Postgres:
    """A new cluster, initialised and started; raises RuntimeError when it will not start."""
    binaries = bin_dir()
    assert binaries is not None, unavailable()
    account = _run_as()
    folder = Path(tempfile.mkdtemp(prefix="quiver-pg-"))
    try:
        password = secrets.token_urlsafe(16)
        (folder / "pwfile").write_text(password + "\n")
        if account is not None:
            for path in (folder, folder / "pwfile"):
                os.chown(path, account.pw_uid, account.pw_gid)
        subprocess.run([str(binaries / "initdb"), "-D", str(folder / "data"), "-U", USER,
                        "--auth=scram-sha-256", f"--pwfile={folder / 'pwfile'}",
                        "-E", "UTF8", "--locale=C", "--no-sync"],
                       check=True, capture_output=True, timeout=120, **_as_user(account))
        last = ""
        for _ in range(START_ATTEMPTS):
            port = _free_port()
            log = open(folder / "server.log", "ab")  # noqa: SIM115  the server's own stream
            process = subprocess.Popen(
                [str(binaries / "postgres"), "-D", str(folder / "data"), "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=50"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                **_as_user(account))
            log.close()
            server = Postgres(port, password, folder, process)
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and process.poll() is None:
                if _ready(server.uri()):
                    return server
                time.sleep(0.2)
            last = server.log()[-2000:]
            if process.poll() is None:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        raise RuntimeError(f"PostgreSQL did not start: {last}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
