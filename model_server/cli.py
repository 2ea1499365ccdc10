"""The `model-server` command: `model-server serve --port P [...]`.

When the model is loaded, warmed and the port is serving, `serve` prints exactly one line
to stdout, `READY port=<port> accuracy=<holdout accuracy, 4 decimals>`, and flushes;
callers start it as a subprocess and wait for that line. Everything else, logs included,
goes to stderr. TensorFlow is imported only once serving starts, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import asyncio
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
        "--max-batch", type=int, default=1024, help="largest N accepted (default %(default)s)"
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds to drain in-flight calls on SIGTERM/SIGINT (default %(default)s)",
    )
    serve.add_argument(
        "--workers", type=int, default=2, help="inference threads (default %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mnist_npz is not None and not args.mnist_npz.is_file():
        parser.error(f"--mnist-npz {args.mnist_npz}: no such file")
    from model_server.server import ServeOptions

    try:
        options = ServeOptions(
            host=args.host,
            port=args.port,
            max_batch=args.max_batch,
            grace_s=args.grace,
            workers=args.workers,
        )
    except ValueError as error:
        parser.error(str(error))
    return _serve(options, cache_dir=args.cache_dir, mnist_npz=args.mnist_npz)


def _serve(options: ServeOptions, *, cache_dir: Path | None, mnist_npz: Path | None) -> int:
    from model_server.recipe import default_cache_dir, plan_training
    from model_server.server import LOADER_THREAD, ServeError, serve

    ready_out = _reserve_stdout()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cache_dir = cache_dir or default_cache_dir()

    def load() -> Model:
        started = time.perf_counter()
        from model_server import model  # the TensorFlow import

        log.info("imported TensorFlow in %.2f s", time.perf_counter() - started)
        plan = plan_training(mnist_npz)
        return model.load_or_train(plan, cache_dir, warmup_batches=(1, options.max_batch))

    def on_ready(port: int, model: Model) -> None:
        print(READY_FORMAT.format(port=port, accuracy=model.accuracy), file=ready_out, flush=True)

    try:
        code = asyncio.run(serve(options, load, on_ready))
    except ServeError as error:
        log.error("%s", error)
        return 1
    if any(t.name == LOADER_THREAD and t.is_alive() for t in threading.enumerate()):
        # Stopped while TensorFlow was still training or loading in its daemon thread;
        # finalising the interpreter under it can crash, so leave without finalising.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)
    return code


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
