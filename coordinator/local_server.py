"""The bundled model server, started as a child process when no --target is given.

It is started on a free loopback port and waited for through its READY line (no sleeps,
with a deadline); its log goes to a file in the results folder. It is stopped with
SIGTERM (graceful drain) at the end of the run, and killed if it does not exit in time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from coordinator.errors import TargetUnavailable

READY = re.compile(r"^READY port=(\d+)(?: accuracy=([0-9.]+))?")


@dataclass
class LocalServer:
    process: subprocess.Popen[str]
    port: int
    holdout_accuracy: float | None
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, wait for a graceful exit, SIGKILL after the timeout; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_local_server(
    log_path: Path, *, timeout_s: float = 180.0, extra_args: list[str] | None = None
) -> LocalServer:
    """Start `model-server serve --port 0` and wait for READY; TargetUnavailable otherwise."""
    cmd = [sys.executable, "-m", "model_server", "serve", "--host", "127.0.0.1", "--port", "0"]
    cmd += extra_args or []
    log = open(log_path, "ab")
    process = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=os.environ.copy()
    )
    log.close()
    found: list[re.Match[str]] = []

    def wait_ready() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = READY.match(line.strip())
            if match:
                found.append(match)
                return

    reader = threading.Thread(target=wait_ready, daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not found:
        code = process.poll()
        if code is None:
            process.kill()
            process.wait()
        reason = (
            f"exited with code {code}" if code is not None else f"not ready after {timeout_s:.0f} s"
        )
        raise TargetUnavailable(f"the bundled model server {reason}; see its log {log_path}")
    match = found[0]
    accuracy = float(match.group(2)) if match.group(2) else None
    return LocalServer(
        process=process, port=int(match.group(1)), holdout_accuracy=accuracy, log_path=log_path
    )
