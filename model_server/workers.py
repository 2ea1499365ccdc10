"""`--workers N`: N server processes on one port, started and watched by a parent.

The parent imports no TensorFlow. It reserves the port first (a plain bind that fails if
anything holds it, then a socket bound with SO_REUSEPORT that it keeps, so port 0 is
resolved once and nobody else can take it), then starts N workers, each a single-process
`model-server serve --reuse-port` on that port; the kernel spreads incoming connections
over them. (Connections, not calls: one client channel talks to one worker.)

The parent prints the READY line once, after every worker printed its own, and serves
the one /metrics endpoint: the workers write their metrics to files in a directory it
made (prometheus_client's multiprocess mode), and it adds them up at scrape time.
SIGTERM/SIGINT is passed on to the workers, which drain and exit; the parent exits 0 when
all of them did. A worker that fails to start, or dies while serving, stops the rest and
the parent exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from prometheus_client import multiprocess

from model_server.cli import READY_FORMAT
from model_server.metrics import MetricsPortError, multiprocess_registry, serve_metrics
from model_server.server import ServeOptions

log = logging.getLogger(__name__)

READY = re.compile(r"^READY port=(\d+) accuracy=([0-9.]+)$")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PARENT_ENV = "MODEL_SERVER_PARENT_PID"
# Past the workers' own grace, how long they get to exit before they are killed.
EXIT_MARGIN_S = 30.0


class PortTaken(RuntimeError):
    """The port is in use by something that is not ours."""


@contextlib.contextmanager
def reserve_port(host: str, port: int) -> Iterator[int]:
    """Hold `port` on `host` (0: a free one) for SO_REUSEPORT servers; yield the port."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    if port != 0:
        # SO_REUSEPORT alone would let us share the port with someone else's server.
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                raise PortTaken(f"cannot listen on {host}:{port}: {error}") from error
    holder = socket.socket(family, kind, proto)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            holder.bind(address)
        except OSError as error:
            raise PortTaken(f"cannot listen on {host}:{port}: {error}") from error
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    ready: asyncio.Future[float] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    reader: asyncio.Task[None] | None = None  # held: the loop keeps only weak references


def run_workers(options: ServeOptions, worker_argv: list[str], *, ready_out: TextIO) -> int:
    """Run `options.workers` workers until SIGTERM/SIGINT; the exit code."""
    try:
        with reserve_port(options.host, options.port) as port:
            return asyncio.run(_supervise(options, worker_argv, port, ready_out))
    except (PortTaken, MetricsPortError) as error:
        log.error("%s", error)
        return 1


async def _supervise(
    options: ServeOptions, worker_argv: list[str], port: int, ready_out: TextIO
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    directory = tempfile.mkdtemp(prefix="model-server-metrics-")
    endpoint = None
    workers: list[_Worker] = []
    code = 1
    try:
        if options.metrics_port is not None:
            endpoint = serve_metrics(
                multiprocess_registry(directory), options.metrics_host, options.metrics_port
            )
            log.info("metrics on http://%s:%d/metrics", options.metrics_host, endpoint.port)
        env = {**os.environ, MULTIPROC_ENV: directory}
        for index in range(options.workers):
            workers.append(await _start(index, worker_argv, port, env))
        log.info("started %d workers on %s:%d", options.workers, options.host, port)
        code = await _run(options, workers, port, stop, ready_out)
    finally:
        if not await _stop_all(workers, options.grace_s + EXIT_MARGIN_S):
            code = 1
        for worker in workers:
            multiprocess.mark_process_dead(worker.process.pid, directory)
        if endpoint is not None:
            endpoint.close()
        shutil.rmtree(directory, ignore_errors=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped (exit code %d)", code)
    return code


async def _start(index: int, argv: list[str], port: int, env: dict[str, str]) -> _Worker:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "model_server",
        "serve",
        *argv,
        "--port",
        str(port),
        "--worker-index",
        str(index),
        stdout=asyncio.subprocess.PIPE,
        env={**env, PARENT_ENV: str(os.getpid())},
    )
    worker = _Worker(index, process)
    worker.reader = asyncio.get_running_loop().create_task(_read_stdout(worker))
    return worker


async def _read_stdout(worker: _Worker) -> None:
    assert worker.process.stdout is not None
    async for raw in worker.process.stdout:
        match = READY.match(raw.decode(errors="replace").strip())
        if match and not worker.ready.done():
            worker.ready.set_result(float(match.group(2)))


async def _run(
    options: ServeOptions,
    workers: list[_Worker],
    port: int,
    stop: asyncio.Event,
    ready_out: TextIO,
) -> int:
    exits = {asyncio.ensure_future(w.process.wait()): w for w in workers}
    stopping = asyncio.ensure_future(stop.wait())
    try:
        all_ready = asyncio.ensure_future(asyncio.gather(*(w.ready for w in workers)))
        done, _ = await asyncio.wait(
            {all_ready, stopping, *exits}, return_when=asyncio.FIRST_COMPLETED
        )
        if all_ready not in done:
            all_ready.cancel()
            if stopping in done:
                log.info("stop requested while the workers were starting")
                return 0
            worker = next(exits[d] for d in done if d in exits)
            log.error(
                "worker %d exited with code %s before it was ready",
                worker.index,
                worker.process.returncode,
            )
            return 1
        accuracies = all_ready.result()
        if len(set(accuracies)) > 1:
            log.warning("the workers report different accuracies: %s", accuracies)
        print(READY_FORMAT.format(port=port, accuracy=accuracies[0]), file=ready_out, flush=True)
        log.info("all %d workers ready on %s:%d", len(workers), options.host, port)
        done, _ = await asyncio.wait({stopping, *exits}, return_when=asyncio.FIRST_COMPLETED)
        if stopping in done:
            return 0
        worker = next(exits[d] for d in done if d in exits)
        log.error(
            "worker %d exited with code %s while serving; stopping the others",
            worker.index,
            worker.process.returncode,
        )
        return 1
    finally:
        stopping.cancel()
        for waiting in exits:
            waiting.cancel()


async def _stop_all(workers: list[_Worker], timeout_s: float) -> bool:
    """SIGTERM each live worker, wait for them to drain, kill what is left; True when
    every one of them exited 0."""
    alive = [w for w in workers if w.process.returncode is None]
    for worker in alive:
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGTERM)
    if not alive:
        return True
    waits = [asyncio.ensure_future(w.process.wait()) for w in alive]
    _, pending = await asyncio.wait(waits, timeout=timeout_s)
    for worker, waiting in zip(alive, waits, strict=True):
        if waiting in pending:
            log.error("worker %d did not exit in %.0f s: killing it", worker.index, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()
    clean = True
    for worker in alive:
        if worker.process.returncode != 0:
            clean = False
            log.error("worker %d exited with code %s", worker.index, worker.process.returncode)
    return clean


def follow_parent() -> None:
    """In a worker: get SIGTERM when the parent dies (Linux), so a killed parent never
    leaves workers holding the port; exit at once if it is already gone."""
    expected = os.environ.get(PARENT_ENV)
    if expected is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(expected):
        log.error("the parent process %s is gone; exiting", expected)
        sys.exit(1)
