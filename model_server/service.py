"""inference.GRPCInferenceService (Open Inference Protocol) over one model, `mnist` v1.

The handlers are registered by hand rather than through the generated servicer so that
each one receives the raw request bytes and parses them itself: bytes that are not a
valid message get INVALID_ARGUMENT naming the problem (grpc's own deserialisation would
answer UNKNOWN). Each call is counted in the server's metrics by method and status code.

The published protocol's ServerMetadata and ModelMetadata messages have no parameters
field, so the server's settings travel as `key=value` strings in ServerMetadata's
`extensions` and as `raysiege-<key>` response headers on both metadata calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import grpc
import numpy as np
from google.protobuf.message import DecodeError, Message

from model_server import __version__
from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.batching import Batcher, BatcherClosed, QueueFull
from model_server.metrics import ServerMetrics
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
SETTINGS_HEADER_PREFIX = "raysiege-"


class Model(Protocol):
    """What the server needs from a model; `model.LoadedModel` is one."""

    @property
    def accuracy(self) -> float: ...

    @property
    def predict(self) -> Callable[[np.ndarray], np.ndarray]: ...


class RpcFailure(Exception):
    """Ends a call with `code` and `details`; raised by handlers, answered by the wrapper."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]


class InferenceService:
    """The six protocol methods; not ready until `set_batcher` hands it a running model."""

    def __init__(
        self,
        *,
        max_request_batch: int,
        metrics: ServerMetrics,
        settings: Mapping[str, str],
    ) -> None:
        self._max_request_batch = max_request_batch
        self._metrics = metrics
        self._settings = dict(settings)
        self._batcher: Batcher | None = None
        self._stopping = False

    def set_batcher(self, batcher: Batcher) -> None:
        self._batcher = batcher

    def begin_shutdown(self) -> None:
        self._stopping = True

    @property
    def ready(self) -> bool:
        return self._batcher is not None and not self._stopping

    def generic_handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[type[Message], Handler]] = {
            "ServerLive": (pb.ServerLiveRequest, self.server_live),
            "ServerReady": (pb.ServerReadyRequest, self.server_ready),
            "ModelReady": (pb.ModelReadyRequest, self.model_ready),
            "ServerMetadata": (pb.ServerMetadataRequest, self.server_metadata),
            "ModelMetadata": (pb.ModelMetadataRequest, self.model_metadata),
            "ModelInfer": (pb.ModelInferRequest, self.model_infer),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    self._wrap(name, message, handler),
                    request_deserializer=None,  # raw bytes: parsed in _wrap
                    response_serializer=_serialize,
                )
                for name, (message, handler) in methods.items()
            },
        )

    def _wrap(
        self, method: str, message: type[Message], handler: Handler
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Message]]:
        metrics = self._metrics

        async def call(data: bytes, context: grpc.aio.ServicerContext) -> Message:
            started = time.perf_counter()
            metrics.in_flight.inc()
            code = grpc.StatusCode.OK
            try:
                return await handler(_parse(message, data), context)
            except RpcFailure as failure:
                code = failure.code
                await context.abort(failure.code, failure.details)
                raise  # unreachable: abort raises
            except grpc.aio.AbortError:  # a handler aborted by itself
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:
                code = grpc.StatusCode.INTERNAL
                log.exception("%s failed", method)
                await context.abort(grpc.StatusCode.INTERNAL, f"{method} failed: {error}")
                raise
            finally:
                metrics.in_flight.dec()
                metrics.record_request(method, code.name, time.perf_counter() - started)

        return call

    async def server_live(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    async def model_ready(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        # A readiness probe for a model we do not have answers "not ready", as Triton does.
        known = request.name == MODEL_NAME and request.version in ("", MODEL_VERSION)
        return pb.ModelReadyResponse(ready=known and self.ready)

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        await self._send_settings(context)
        return pb.ServerMetadataResponse(
            name=SERVER_NAME,
            version=__version__,
            extensions=[f"{key}={value}" for key, value in self._settings.items()],
        )

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        _check_model(request.name, request.version)
        await self._send_settings(context)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=MODEL_NAME,
            versions=[MODEL_VERSION],
            platform=MODEL_PLATFORM,
            inputs=[tensor(name=INPUT_NAME, datatype="FP32", shape=[-1, PIXELS])],
            outputs=[tensor(name=OUTPUT_NAME, datatype="FP32", shape=[-1, CLASSES])],
        )

    async def model_infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        _check_model(request.model_name, request.model_version)
        batcher = self._batcher
        if batcher is None or self._stopping:
            raise RpcFailure(grpc.StatusCode.UNAVAILABLE, f"model {MODEL_NAME!r} is not ready")
        try:
            decoded = decode_infer_request(request, max_batch=self._max_request_batch)
        except TensorError as error:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        try:
            probabilities = await batcher.infer(decoded.pixels)
        except QueueFull as error:
            raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)) from None
        except BatcherClosed as error:
            raise RpcFailure(grpc.StatusCode.UNAVAILABLE, str(error)) from None
        return encode_infer_response(
            probabilities,
            raw=decoded.raw,
            model_name=MODEL_NAME,
            model_version=MODEL_VERSION,
            request_id=request.id,
        )

    async def _send_settings(self, context: grpc.aio.ServicerContext) -> None:
        await context.send_initial_metadata(
            tuple(
                (SETTINGS_HEADER_PREFIX + key.replace("_", "-"), value)
                for key, value in self._settings.items()
            )
        )


def _parse(message: type[Message], data: bytes) -> Any:
    try:
        return message.FromString(data)
    except DecodeError as error:
        raise RpcFailure(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid {message.DESCRIPTOR.full_name} ({len(data)} bytes): "
            f"{error}",
        ) from None


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _check_model(name: str, version: str) -> None:
    if name != MODEL_NAME:
        raise RpcFailure(
            grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}: this server has {MODEL_NAME!r}"
        )
    if version not in ("", MODEL_VERSION):
        raise RpcFailure(
            grpc.StatusCode.NOT_FOUND,
            f"unknown version {version!r} of model {MODEL_NAME!r}: it has {MODEL_VERSION!r}",
        )
