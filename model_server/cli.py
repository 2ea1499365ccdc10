"""The `model-server` command: `model-server serve --port P [...]`.

When the model is loaded, warmed and the port is serving, `serve` prints exactly one line
to stdout, `READY port=<port> accuracy=<holdout accuracy, 4 decimals>`, and flushes;
callers start it as a subprocess and wait for that line. Everything else, logs included,
goes to stderr. TensorFlow is imported only once serving starts, so `--help` is fast.
With `--workers N` (N > 1) this process only supervises N worker processes (each this
same command with `--reuse-port --worker-index I`) and prints READY once all are ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from model_server.server import Model, ServeOptions

log = logging.getLogger("model_server")

READY_FORMAT = "READY port={port} accuracy={accuracy:.4f}"
DEFAULT_PORT = 8001  # the usual Open Inference Protocol gRPC port
DEFAULT_METRICS_PORT = 8002  # Triton's metrics port, beside its gRPC port 8001


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="model-server",
        description="raysiege's MNIST inference server (Open Inference Protocol over gRPC).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="train or load the model, then serve it",
        description="Train (first start) or load (later starts) the MNIST model, serve it "
        "over gRPC, and print 'READY port=<port> accuracy=<a>' on stdout when ready.",
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (default %(default)s)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where trained models are kept (default $RAYSIEGE_CACHE_DIR or ~/.cache/raysiege)",
    )
    serve.add_argument(
        "--mnist-npz",
        type=Path,
        default=None,
        help="train on a full Keras mnist.npz instead of the shipped 5,000-digit sample",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds to drain in-flight calls on SIGTERM/SIGINT (default %(default)s)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port through SO_REUSEPORT (default %(default)s)",
    )
    _add_batching_flags(serve)
    _add_metrics_flags(serve)
    _add_security_flags(serve)
    # Set by the parent of --workers N on each worker it starts; not for people.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def _add_batching_flags(serve: argparse.ArgumentParser) -> None:
    from model_server.batching import BatchingOptions

    defaults = BatchingOptions()
    group = serve.add_argument_group("batching and inference")
    group.add_argument(
        "--max-batch-size",
        type=int,
        default=defaults.max_batch_size,
        help="most rows in one model call; larger requests are split (default %(default)s)",
    )
    group.add_argument(
        "--batch-timeout-us",
        type=int,
        default=round(defaults.batch_timeout_s * 1e6),
        help="microseconds a batch waits to fill after its first request; 0 takes what is "
        "queued (default %(default)s)",
    )
    group.add_argument(
        "--batch-threads",
        type=int,
        default=defaults.batch_threads,
        help="batches run at once, each on its own thread (default %(default)s)",
    )
    group.add_argument(
        "--max-enqueued-batches",
        type=int,
        default=defaults.max_enqueued_batches,
        help="queue limit, in batches of --max-batch-size rows; beyond it requests get "
        "RESOURCE_EXHAUSTED at once (default %(default)s)",
    )
    group.add_argument(
        "--no-batching",
        action="store_true",
        help="run every request on its own (still queued, still limited)",
    )
    group.add_argument(
        "--max-request-batch",
        type=int,
        default=1024,
        help="largest N accepted in one request (default %(default)s)",
    )
    group.add_argument(
        "--intra-op-threads",
        type=int,
        default=None,
        help="TensorFlow intra-op threads; 0 lets TensorFlow decide "
        "(default: the cores available less one, divided by --workers, at least 1)",
    )
    group.add_argument(
        "--inter-op-threads",
        type=int,
        default=1,
        help="TensorFlow inter-op threads; 0 lets TensorFlow decide (default %(default)s)",
    )


def _add_metrics_flags(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("metrics")
    group.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=f"Prometheus /metrics port; 0 picks a free one, named in the log (default "
        f"{DEFAULT_METRICS_PORT}, or a free one when --port is 0)",
    )
    group.add_argument(
        "--metrics-host", default="127.0.0.1", help="/metrics bind address (default %(default)s)"
    )
    group.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")


def _add_security_flags(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group(
        "security",
        "TLS, mutual TLS and a bearer token; without them the server is plaintext "
        "and open, so keep it on loopback (the default --host)",
    )
    group.add_argument("--tls-cert", type=Path, default=None, help="PEM server certificate")
    group.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    group.add_argument(
        "--tls-client-ca",
        type=Path,
        default=None,
        help="PEM CA: clients must present a certificate it signed (mutual TLS)",
    )
    group.add_argument(
        "--auth-token-file",
        type=Path,
        default=None,
        help="file holding a token every call except health checks must send as "
        "'authorization: Bearer <token>'; others get UNAUTHENTICATED",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mnist_npz is not None and not args.mnist_npz.is_file():
        parser.error(f"--mnist-npz {args.mnist_npz}: no such file")
    try:
        options = _options(args)
    except ValueError as error:
        parser.error(str(error))
    if options.workers > 1 and args.worker_index is None:
        from model_server.workers import run_workers

        _setup(None)
        return run_workers(options, _worker_argv(args), ready_out=_reserve_stdout())
    return _serve(
        options, cache_dir=args.cache_dir, mnist_npz=args.mnist_npz, worker=args.worker_index
    )


def _options(args: argparse.Namespace) -> ServeOptions:
    from model_server.batching import BatchingOptions
    from model_server.security import load_tls, read_token
    from model_server.server import ServeOptions

    if args.workers < 1:
        raise ValueError(f"workers must be >= 1, got {args.workers}")
    if args.no_metrics:
        metrics_port = None
    elif args.metrics_port is not None:
        metrics_port = args.metrics_port
    else:
        metrics_port = 0 if args.port == 0 else DEFAULT_METRICS_PORT
    intra = args.intra_op_threads
    if intra is None:
        intra = default_intra_op_threads(args.workers)
    batching = BatchingOptions(
        max_batch_size=args.max_batch_size,
        batch_timeout_s=args.batch_timeout_us / 1e6,
        batch_threads=args.batch_threads,
        max_enqueued_batches=args.max_enqueued_batches,
        enabled=not args.no_batching,
    )
    return ServeOptions(
        host=args.host,
        port=args.port,
        grace_s=args.grace,
        max_request_batch=args.max_request_batch,
        batching=batching,
        reuse_port=args.reuse_port,
        metrics_host=args.metrics_host,
        metrics_port=metrics_port,
        workers=args.workers,
        intra_op_threads=intra,
        inter_op_threads=args.inter_op_threads,
        tls=load_tls(args.tls_cert, args.tls_key, args.tls_client_ca),
        auth_token=None if args.auth_token_file is None else read_token(args.auth_token_file),
    )


def default_intra_op_threads(workers: int) -> int:
    """One core is left to gRPC (the event loop and its poller), the rest shared out over
    the workers, at least one thread each. Measured on 2 cores (bench/model_server.py):
    one thread beats two at low load and is no worse at saturation, since the batches
    that form under batch-1 load are small and the event loop needs the other core."""
    return max(1, (len(os.sched_getaffinity(0)) - 1) // workers)


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The flags each worker of --workers N gets: the same settings, resolved, no metrics
    endpoint of its own (the parent serves theirs)."""
    options = _options(args)
    batching = options.batching
    argv = [
        "--host", options.host,
        "--grace", str(options.grace_s),
        "--workers", str(options.workers),
        "--max-batch-size", str(batching.max_batch_size),
        "--batch-timeout-us", str(round(batching.batch_timeout_s * 1e6)),
        "--batch-threads", str(batching.batch_threads),
        "--max-enqueued-batches", str(batching.max_enqueued_batches),
        "--max-request-batch", str(options.max_request_batch),
        "--intra-op-threads", str(options.intra_op_threads),
        "--inter-op-threads", str(options.inter_op_threads),
        "--no-metrics",
        "--reuse-port",
    ]  # fmt: skip
    if not batching.enabled:
        argv.append("--no-batching")
    if args.cache_dir is not None:
        argv += ["--cache-dir", str(args.cache_dir)]
    if args.mnist_npz is not None:
        argv += ["--mnist-npz", str(args.mnist_npz)]
    # Paths, not contents: a token on a command line would be visible to every user (ps).
    for flag in ("tls_cert", "tls_key", "tls_client_ca", "auth_token_file"):
        path = getattr(args, flag)
        if path is not None:
            argv += ["--" + flag.replace("_", "-"), str(path.resolve())]
    return argv


def _setup(worker: int | None) -> None:
    who = "" if worker is None else f"worker-{worker} "
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s",
    )


def _serve(
    options: ServeOptions, *, cache_dir: Path | None, mnist_npz: Path | None, worker: int | None
) -> int:
    from model_server.recipe import default_cache_dir, plan_training
    from model_server.server import LOADER_THREAD, ServeError, serve

    ready_out = _reserve_stdout()
    _setup(worker)
    if worker is not None:
        from model_server.workers import follow_parent

        follow_parent()
    cache_dir = cache_dir or default_cache_dir()

    def load() -> Model:
        started = time.perf_counter()
        from model_server import model  # the TensorFlow import

        log.info("imported TensorFlow in %.2f s", time.perf_counter() - started)
        model.configure_threads(options.intra_op_threads, options.inter_op_threads)
        plan = plan_training(mnist_npz)
        return model.load_or_train(
            plan, cache_dir, warmup_batches=warmup_batches(options.batching.max_batch_size)
        )

    def on_ready(port: int, model: Model) -> None:
        print(READY_FORMAT.format(port=port, accuracy=model.accuracy), file=ready_out, flush=True)

    try:
        code = asyncio.run(serve(options, load, on_ready))
    except ServeError as error:
        log.error("%s", error)
        return 1
    loading = any(t.name == LOADER_THREAD and t.is_alive() for t in threading.enumerate())
    if loading or "tensorflow" in sys.modules:
        # Everything is drained, flushed and saved by now. Finalising the interpreter
        # under TensorFlow does nothing we need, takes seconds (a minute on a loaded
        # machine, past a supervisor's kill timeout) and can crash when a daemon thread
        # is still training or loading: leave without it.
        logging.shutdown()
        for stream in (ready_out, sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    return code


def warmup_batches(max_batch_size: int) -> tuple[int, ...]:
    """Every batch size up to 64, then powers of two, then the maximum: the first call at
    a new size costs extra (oneDNN prepares its kernels per shape), so pay it before READY."""
    sizes = set(range(1, min(max_batch_size, 64) + 1))
    size = 128
    while size < max_batch_size:
        sizes.add(size)
        size *= 2
    sizes.add(max_batch_size)
    return tuple(sorted(sizes))


def _reserve_stdout() -> TextIO:
    """Keep stdout for the READY line alone: anything else printed there (TensorFlow,
    Keras) is sent to stderr by pointing file descriptor 1 at it."""
    try:
        fd = sys.stdout.fileno()
        ready = os.fdopen(os.dup(fd), "w", buffering=1)
        sys.stdout.flush()
        os.dup2(sys.stderr.fileno(), fd)
    except (AttributeError, OSError, ValueError):  # not a real file (e.g. captured)
        return sys.stdout
    return ready
