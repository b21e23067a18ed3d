"""A ``quiver`` process on a pseudo-terminal, driven like a person at a keyboard.

``PtySession`` starts the command with ``pty.fork`` (the terminal is its controlling
terminal, so ``\\x03`` typed while no prompt is reading becomes SIGINT, as at a real
keyboard), collects what it prints with escape sequences removed, and waits for text
with a bound on every wait."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import time

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\x1b\][^\x07]*\x07")


class PtySession:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: becomes the command
            try:
                os.chdir(cwd)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.raw = ""
        self.seen = 0  # what ``expect`` already matched

    @property
    def text(self) -> str:
        return _ESCAPES.sub("", self.raw).replace("\r", "")

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                data = b""
            if data:
                self.raw += data.decode("utf-8", errors="replace")
                # Answer cursor position requests as a terminal would.
                if "\x1b[6n" in data.decode("utf-8", errors="replace"):
                    os.write(self.fd, b"\x1b[1;1R")

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """Waits (at most ``timeout`` s) for ``pattern`` in the output after the last match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.text, self.seen)
            if match is not None:
                self.seen = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {pattern!r} within {timeout}s; output:\n"
                                   f"{self.text[-3000:]}")
            self._read(min(left, 0.2))

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def line(self, text: str) -> None:
        self.send(text + "\r")

    def wait(self, timeout: float = 30.0) -> int | None:
        """The exit status, or None if still running after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.pid = 0
                return os.waitstatus_to_exitcode(status)
            self._read(0.1)
        return None

    def close(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = 0
        with contextlib.suppress(OSError):
            os.close(self.fd)
