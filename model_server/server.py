"""The gRPC inference server: Open Inference Protocol (KServe V2), health and reflection.

`serve()` wires a run: it starts listening at once (ServerLive answers, health says
NOT_SERVING), loads the model in a background thread, then marks itself ready and calls
`on_ready`; on SIGTERM/SIGINT it reports NOT_SERVING, stops accepting, drains in-flight
calls for a grace period and returns 0. The model is injected (`load`), so this module
never imports TensorFlow and tests can serve a fake.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from model_server import __version__
from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.api import grpc_predict_v2_pb2_grpc as pb_grpc
from model_server.tensors import (
    CLASSES,
    INPUT_NAME,
    OUTPUT_NAME,
    PIXELS,
    TensorError,
    decode_infer_request,
    encode_infer_response,
)

log = logging.getLogger(__name__)

SERVER_NAME = "raysiege-model-server"
MODEL_NAME = "mnist"
MODEL_VERSION = "1"
MODEL_PLATFORM = "tensorflow_savedmodel"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
LOADER_THREAD = "model-loader"


class ServeError(RuntimeError):
    """The server could not start (for example, the port is taken)."""


class Model(Protocol):
    """What the server needs from a model; `model.LoadedModel` is one."""

    @property
    def accuracy(self) -> float: ...

    @property
    def predict(self) -> Callable[[np.ndarray], np.ndarray]: ...


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 0
    max_batch: int = 1024
    grace_s: float = 5.0
    workers: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {self.grace_s}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    @property
    def max_message_bytes(self) -> int:
        # Room for twice the largest valid FP32 request, so an oversized batch still
        # reaches the decoder and gets INVALID_ARGUMENT rather than RESOURCE_EXHAUSTED.
        return max(4 << 20, 2 * self.max_batch * PIXELS * 4 + (64 << 10))


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over one model, `mnist` version 1."""

    def __init__(self, *, max_batch: int, executor: ThreadPoolExecutor) -> None:
        self._max_batch = max_batch
        self._executor = executor
        self._model: Model | None = None
        self._stopping = False

    def set_model(self, model: Model) -> None:
        self._model = model

    def begin_shutdown(self) -> None:
        self._stopping = True

    @property
    def ready(self) -> bool:
        return self._model is not None and not self._stopping

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        # A readiness probe for a model we do not have answers "not ready", as Triton does.
        known = request.name == MODEL_NAME and request.version in ("", MODEL_VERSION)
        return pb.ModelReadyResponse(ready=known and self.ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        await _check_model(request.name, request.version, context)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=MODEL_NAME,
            versions=[MODEL_VERSION],
            platform=MODEL_PLATFORM,
            inputs=[tensor(name=INPUT_NAME, datatype="FP32", shape=[-1, PIXELS])],
            outputs=[tensor(name=OUTPUT_NAME, datatype="FP32", shape=[-1, CLASSES])],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        await _check_model(request.model_name, request.model_version, context)
        model = self._model
        if model is None or self._stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"model {MODEL_NAME!r} is not ready")
        try:
            decoded = decode_infer_request(request, max_batch=self._max_batch)
        except TensorError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))  # raises
        loop = asyncio.get_running_loop()
        probabilities = await loop.run_in_executor(self._executor, model.predict, decoded.pixels)
        return encode_infer_response(
            probabilities,
            raw=decoded.raw,
            model_name=MODEL_NAME,
            model_version=MODEL_VERSION,
            request_id=request.id,
        )


async def _check_model(name: str, version: str, context: grpc.aio.ServicerContext) -> None:
    if name != MODEL_NAME:
        await context.abort(
            grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}: this server has {MODEL_NAME!r}"
        )
    if version not in ("", MODEL_VERSION):
        await context.abort(
            grpc.StatusCode.NOT_FOUND,
            f"unknown version {version!r} of model {MODEL_NAME!r}: it has {MODEL_VERSION!r}",
        )


@dataclass
class RunningServer:
    """A started gRPC server with its servicers; not ready until `mark_ready`."""

    server: grpc.aio.Server
    port: int
    servicer: InferenceServicer
    health: health_aio.HealthServicer
    executor: ThreadPoolExecutor

    async def mark_ready(self, model: Model) -> None:
        self.servicer.set_model(model)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def shutdown(self, grace_s: float) -> None:
        """NOT_SERVING, stop accepting, let in-flight calls finish for up to `grace_s`."""
        self.servicer.begin_shutdown()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        self.executor.shutdown(wait=True)


async def start_server(options: ServeOptions) -> RunningServer:
    """Listen on options.host:options.port (0 picks one) with health NOT_SERVING."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", options.max_message_bytes),
            # Fail on a port in use instead of silently sharing it with another server.
            ("grpc.so_reuseport", 0),
        ]
    )
    try:
        port = server.add_insecure_port(f"{options.host}:{options.port}")
    except RuntimeError as error:
        raise ServeError(f"cannot listen on {options.host}:{options.port}: {error}") from error
    executor = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="infer")
    servicer = InferenceServicer(max_batch=options.max_batch, executor=executor)
    health = health_aio.HealthServicer()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    health_service = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_service, reflection.SERVICE_NAME], server
    )
    for service in ("", SERVICE_NAME):
        await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    return RunningServer(server, port, servicer, health, executor)


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
    log.info("listening on %s:%d; loading the model", options.host, running.port)
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
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
