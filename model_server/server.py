"""The gRPC inference server: Open Inference Protocol (KServe V2), health and reflection.

`serve()` wires one server process: it starts listening at once (ServerLive answers,
health says NOT_SERVING) and serves /metrics if asked, loads the model in a background
thread, then starts the batcher over it, marks itself ready and calls `on_ready`; on
SIGTERM/SIGINT it reports NOT_SERVING, stops accepting, drains in-flight calls for a
grace period and returns 0. The model is injected (`load`), so this module never imports
TensorFlow and tests can serve a fake. Several such processes on one port are the
business of `model_server.workers`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from model_server.batching import Batcher, BatchingOptions
from model_server.metrics import MetricsEndpoint, MetricsPortError, ServerMetrics, serve_metrics
from model_server.security import BearerTokenInterceptor, ServerTls
from model_server.service import MODEL_NAME, SERVICE_NAME, InferenceService, Model
from model_server.tensors import PIXELS

log = logging.getLogger(__name__)

LOADER_THREAD = "model-loader"

__all__ = [
    "LOADER_THREAD",
    "MODEL_NAME",
    "SERVICE_NAME",
    "Model",
    "RunningServer",
    "ServeError",
    "ServeOptions",
    "serve",
    "start_server",
]


class ServeError(RuntimeError):
    """The server could not start (for example, the port is taken)."""


@dataclass(frozen=True)
class ServeOptions:
    """Everything `serve` needs; `settings()` is what the metadata calls report."""

    host: str = "127.0.0.1"
    port: int = 0
    grace_s: float = 5.0
    max_request_batch: int = 1024
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    # Share the port with the other workers (SO_REUSEPORT); off, a taken port is an error.
    reuse_port: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: no /metrics endpoint in this process
    # Reported only: they are applied by the CLI (processes) and the model (TF threads).
    workers: int = 1
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    tls: ServerTls | None = None  # None: plaintext
    # Calls other than health checks must carry "authorization: Bearer <token>".
    auth_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be 0..65535, got {self.metrics_port}")
        if self.max_request_batch < 1:
            raise ValueError(f"max_request_batch must be >= 1, got {self.max_request_batch}")
        if self.grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {self.grace_s}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError("TensorFlow thread counts must be >= 0 (0: TensorFlow decides)")

    @property
    def max_message_bytes(self) -> int:
        # Room for twice the largest valid FP32 request, so an oversized batch still
        # reaches the decoder and gets INVALID_ARGUMENT; larger messages are refused by
        # gRPC itself with RESOURCE_EXHAUSTED.
        return max(4 << 20, 2 * self.max_request_batch * PIXELS * 4 + (64 << 10))

    def settings(self) -> dict[str, str]:
        batching = self.batching
        return {
            "dynamic_batching": "on" if batching.enabled else "off",
            "max_batch_size": str(batching.max_batch_size),
            "batch_timeout_us": str(round(batching.batch_timeout_s * 1e6)),
            "batch_threads": str(batching.batch_threads),
            "max_enqueued_batches": str(batching.max_enqueued_batches),
            "max_request_batch": str(self.max_request_batch),
            "workers": str(self.workers),
            "intra_op_threads": str(self.intra_op_threads),
            "inter_op_threads": str(self.inter_op_threads),
            "tls": _tls_mode(self.tls),
            "auth": "bearer" if self.auth_token else "none",
        }


def _tls_mode(tls: ServerTls | None) -> str:
    if tls is None:
        return "off"
    return "mutual" if tls.client_ca_pem is not None else "on"


@dataclass
class RunningServer:
    """A started gRPC server with its service; not ready until `mark_ready`."""

    server: grpc.aio.Server
    port: int
    options: ServeOptions
    service: InferenceService
    health: health_aio.HealthServicer
    metrics: ServerMetrics
    registry: CollectorRegistry
    executor: ThreadPoolExecutor
    metrics_endpoint: MetricsEndpoint | None = None
    batcher: Batcher | None = None

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics_endpoint is None else self.metrics_endpoint.port

    async def mark_ready(self, model: Model) -> None:
        """Start batching into `model`, then answer ready and report SERVING."""
        batcher = Batcher(
            model.predict, self.options.batching, self.executor, observer=self.metrics
        )
        batcher.start()
        self.batcher = batcher
        self.service.set_batcher(batcher)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def shutdown(self, grace_s: float) -> None:
        """NOT_SERVING, stop accepting, let in-flight calls finish for up to `grace_s`."""
        self.service.begin_shutdown()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self.batcher is not None:
            await self.batcher.close()
        self.executor.shutdown(wait=True)
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()


async def start_server(
    options: ServeOptions, *, registry: CollectorRegistry | None = None
) -> RunningServer:
    """Listen on options.host:options.port (0 picks one) with health NOT_SERVING, and
    serve /metrics when options.metrics_port is set."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = ServerMetrics(registry, max_batch_size=options.batching.max_batch_size)
    interceptors = []
    if options.auth_token:

        def refused(method: str) -> None:
            metrics.count_request(method.rpartition("/")[2], "UNAUTHENTICATED")

        interceptors.append(BearerTokenInterceptor(options.auth_token, on_refused=refused))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", options.max_message_bytes),
            # Alone, fail on a port in use instead of silently sharing it with another
            # server; as one of several workers, share it on purpose.
            ("grpc.so_reuseport", 1 if options.reuse_port else 0),
        ],
    )
    address = f"{options.host}:{options.port}"
    try:
        if options.tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, options.tls.credentials())
    except RuntimeError as error:
        raise ServeError(f"cannot listen on {address} (is the port taken?): {error}") from error
    endpoint = None
    if options.metrics_port is not None:
        try:
            endpoint = serve_metrics(registry, options.metrics_host, options.metrics_port)
        except MetricsPortError as error:
            await server.stop(None)
            raise ServeError(str(error)) from error
    service = InferenceService(
        max_request_batch=options.max_request_batch, metrics=metrics, settings=options.settings()
    )
    health = health_aio.HealthServicer()
    server.add_generic_rpc_handlers((service.generic_handler(),))
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    health_service = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_service, reflection.SERVICE_NAME], server
    )
    for service_name in ("", SERVICE_NAME):
        await health.set(service_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    executor = ThreadPoolExecutor(
        max_workers=options.batching.batch_threads, thread_name_prefix="batch"
    )
    return RunningServer(
        server, port, options, service, health, metrics, registry, executor, endpoint
    )


async def serve(
    options: ServeOptions,
    load: Callable[[], Model],
    on_ready: Callable[[int, Model], None],
    *,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> int:
    """Serve until `stop` is set or SIGTERM/SIGINT arrives; return the exit code.

    `load` runs in a background thread while the server already answers ServerLive;
    `on_ready(port, model)` is called once the model is in place and health is SERVING.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    running = await start_server(options)
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    # Logged once the signals are handled: from here a SIGTERM is a graceful stop.
    settings = options.settings()
    log.info(
        "listening on %s:%d (tls %s, auth %s); loading the model",
        options.host,
        running.port,
        settings["tls"],
        settings["auth"],
    )
    if running.metrics_port is not None:
        log.info("metrics on http://%s:%d/metrics", options.metrics_host, running.metrics_port)
    code = 0
    try:
        loading = _in_daemon_thread(load, name=LOADER_THREAD)
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not loading.done():
            log.info("stop requested while the model was loading")
        elif loading.exception() is not None:
            log.error("could not load the model: %s", loading.exception())
            code = 1
        else:
            model = loading.result()
            await running.mark_ready(model)
            log.info("serving model %r on %s:%d", MODEL_NAME, options.host, running.port)
            on_ready(running.port, model)
            await stopping
        stopping.cancel()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        log.info("shutting down: draining in-flight calls for up to %.1f s", options.grace_s)
        await running.shutdown(options.grace_s)
        log.info("stopped")
    return code


def _in_daemon_thread(fn: Callable[[], Model], *, name: str) -> asyncio.Future[Model]:
    """Run `fn` in a daemon thread, so a stop during a long training is not held up by it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Model] = loop.create_future()

    def settle(result: Model | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result, error = fn(), None
        except Exception as exc:  # handed to the event loop, which logs it
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop has closed: the server already stopped
            pass

    threading.Thread(target=target, name=name, daemon=True).start()
    return future
