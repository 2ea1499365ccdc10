"""Child processes for integration tests: started, waited for by what they print, stopped.

No sleeps: a process is ready when it prints the line we wait for, within a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# Every child started by the tests; tests/conftest.py stops those still running when the
# session ends, so a test that fails before stopping its child leaks nothing.
STARTED: list[Child] = []


class Child:
    """A child process whose stdout and stderr lines are collected as they come."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
        stdin: bool = False,
    ):
        self.argv = list(argv)
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            text=True,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        STARTED.append(self)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(
                target=self._read, args=(self.process.stdout, self.stdout), daemon=True
            ),
            threading.Thread(
                target=self._read, args=(self.process.stderr, self.stderr), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(
        self, pattern: str, *, stream: str = "stdout", timeout_s: float = 120.0
    ) -> re.Match[str]:
        """The first line of `stream` matching `pattern`; fails on exit or deadline."""
        regex = re.compile(pattern)
        lines = self.stdout if stream == "stdout" else self.stderr

        def found():
            return next((m for m in map(regex.search, list(lines)) if m), None)

        with self._changed:
            ok = self._changed.wait_for(
                lambda: found() is not None or self.process.poll() is not None, timeout=timeout_s
            )
        match = found()
        if match is None:
            state = "timed out" if not ok else f"exited with {self.process.poll()}"
            raise AssertionError(
                f"{self.argv[:4]} {state} before printing /{pattern}/ on {stream}\n"
                f"--- stdout\n{self.text('stdout')}\n--- stderr\n{self.text('stderr')[-4000:]}"
            )
        return match

    def send(self, line: str) -> None:
        """Write a line to the child's stdin (started with stdin=True)."""
        assert self.process.stdin is not None, "started without stdin=True"
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def text(self, stream: str = "stdout") -> str:
        return "\n".join(self.stdout if stream == "stdout" else self.stderr)

    def wait(self, timeout_s: float = 120.0) -> int:
        code = self.process.wait(timeout=timeout_s)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.wait(timeout_s)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def coordinator(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("coordinator")), *args]


def poll(
    condition: Callable[[], object],
    *,
    timeout_s: float,
    what: str | Callable[[], str],
    period_s: float = 0.1,
):
    """Call `condition` until it returns a truthy value (returned), within a deadline.

    `what` names the wait in the failure message; a callable is asked only on failure,
    so it can describe the state it timed out in.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout_s} s waiting for {described}")
        time.sleep(period_s)  # polling period, not synchronisation


def free_port() -> int:
    """A loopback port that is free now (for a server that must be restarted on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_server(*args: str) -> tuple[Child, str]:
    """The fake V2 server (tests/support/fake_server.py) started with `args`, once it says
    READY: the child and its loopback address."""
    child = Child(python("-m", "tests.support.fake_server", *args))
    port = int(child.wait_for_line(r"READY port=(\d+)", timeout_s=60).group(1))
    return child, f"127.0.0.1:{port}"
