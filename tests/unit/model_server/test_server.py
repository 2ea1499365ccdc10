"""model_server/server.py over a fake model: status codes, readiness, health, lifecycle.

A real gRPC server on an ephemeral port in this process; the model is a numpy stand-in, so
these run in milliseconds and never import TensorFlow (the integration tests serve the
real one).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from model_server import __version__
from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.api import grpc_predict_v2_pb2_grpc as pb_grpc
from model_server.server import (
    MODEL_NAME,
    SERVICE_NAME,
    RunningServer,
    ServeOptions,
    serve,
    start_server,
)

pytestmark = pytest.mark.timeout(60)
TIMEOUT = 10
OPTIONS = ServeOptions(port=0, max_request_batch=4, grace_s=10)


@dataclass
class FakeModel:
    """Predicts class k for an image whose first pixel is k/10; can hold a call in flight."""

    accuracy: float = 0.99
    hold: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(TIMEOUT)
        classes = np.rint(pixels[:, 0] * 10).astype(int) % 10
        return np.eye(10, dtype=np.float32)[classes]


def infer_request(
    first_pixels: list[float], *, raw: bool = False, **fields
) -> pb.ModelInferRequest:
    pixels = np.zeros((len(first_pixels), 784), np.float32)
    pixels[:, 0] = first_pixels
    request = pb.ModelInferRequest(model_name=MODEL_NAME, **fields)
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(pixels.shape))
    if raw:
        request.raw_input_contents.append(pixels.tobytes())
    else:
        tensor.contents.fp32_contents.extend(pixels.ravel().tolist())
    return request


def with_server(
    scenario: Callable[
        [RunningServer, pb_grpc.GRPCInferenceServiceStub, grpc.aio.Channel], Awaitable[None]
    ],
) -> None:
    async def main() -> None:
        running = await start_server(OPTIONS)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                await asyncio.wait_for(channel.channel_ready(), TIMEOUT)
                await scenario(running, pb_grpc.GRPCInferenceServiceStub(channel), channel)
        finally:
            await running.shutdown(0)

    asyncio.run(main())


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
    return reply.status


async def status_of(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def test_live_but_not_ready_until_a_model_is_in_place() -> None:
    async def scenario(running, stub, channel) -> None:
        assert (await stub.ServerLive(pb.ServerLiveRequest(), timeout=TIMEOUT)).live
        assert not (await stub.ServerReady(pb.ServerReadyRequest(), timeout=TIMEOUT)).ready
        ready = await stub.ModelReady(pb.ModelReadyRequest(name=MODEL_NAME), timeout=TIMEOUT)
        assert not ready.ready
        for service in ("", SERVICE_NAME):
            assert (
                await health_status(channel, service) == health_pb2.HealthCheckResponse.NOT_SERVING
            )
        code, details = await status_of(stub.ModelInfer(infer_request([0.1]), timeout=TIMEOUT))
        assert code == grpc.StatusCode.UNAVAILABLE and "not ready" in details

        await running.mark_ready(FakeModel())

        assert (await stub.ServerReady(pb.ServerReadyRequest(), timeout=TIMEOUT)).ready
        ready = await stub.ModelReady(
            pb.ModelReadyRequest(name=MODEL_NAME, version="1"), timeout=TIMEOUT
        )
        assert ready.ready
        for service in ("", SERVICE_NAME):
            assert await health_status(channel, service) == health_pb2.HealthCheckResponse.SERVING

    with_server(scenario)


def test_metadata() -> None:
    async def scenario(running, stub, channel) -> None:
        server = await stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=TIMEOUT)
        assert (server.name, server.version) == ("raysiege-model-server", __version__)
        model = await stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL_NAME), timeout=TIMEOUT)
        assert (model.name, list(model.versions)) == ("mnist", ["1"])
        assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
            ("input", "FP32", [-1, 784])
        ]
        assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
            ("probabilities", "FP32", [-1, 10])
        ]

    with_server(scenario)


@pytest.mark.parametrize("raw", [False, True])
def test_infer_answers_in_the_encoding_it_was_asked_in(raw: bool) -> None:
    async def scenario(running, stub, channel) -> None:
        await running.mark_ready(FakeModel())
        reply = await stub.ModelInfer(
            infer_request([0.3, 0.7], raw=raw, id="req-7"), timeout=TIMEOUT
        )
        (output,) = reply.outputs
        assert (reply.model_name, reply.model_version, reply.id) == ("mnist", "1", "req-7")
        assert (output.name, output.datatype, list(output.shape)) == (
            "probabilities",
            "FP32",
            [2, 10],
        )
        if raw:
            probabilities = np.frombuffer(reply.raw_output_contents[0], dtype="<f4")
        else:
            assert not reply.raw_output_contents
            probabilities = np.array(output.contents.fp32_contents, dtype=np.float32)
        assert list(probabilities.reshape(2, 10).argmax(axis=1)) == [3, 7]

    with_server(scenario)


def test_status_codes_for_bad_requests_and_the_server_keeps_serving() -> None:
    async def scenario(running, stub, channel) -> None:
        await running.mark_ready(FakeModel())
        wrong_shape = infer_request([0.1])
        wrong_shape.inputs[0].shape[1] = 783
        cases = [
            (pb.ModelInferRequest(model_name="resnet"), grpc.StatusCode.NOT_FOUND, "'resnet'"),
            (infer_request([0.1], model_version="2"), grpc.StatusCode.NOT_FOUND, "'2'"),
            (wrong_shape, grpc.StatusCode.INVALID_ARGUMENT, "[1, 783]"),
            (infer_request([0.1] * 5), grpc.StatusCode.INVALID_ARGUMENT, "maximum 4"),
            (infer_request([float("nan")]), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
        ]
        for request, expected_code, fragment in cases:
            code, details = await status_of(stub.ModelInfer(request, timeout=TIMEOUT))
            assert (code, fragment in details) == (expected_code, True), details
        code, details = await status_of(
            stub.ModelMetadata(pb.ModelMetadataRequest(name="resnet"), timeout=TIMEOUT)
        )
        assert code == grpc.StatusCode.NOT_FOUND and "'resnet'" in details
        unknown = await stub.ModelReady(pb.ModelReadyRequest(name="resnet"), timeout=TIMEOUT)
        assert not unknown.ready
        reply = await stub.ModelInfer(infer_request([0.5]), timeout=TIMEOUT)
        assert reply.outputs[0].shape == [1, 10]

    with_server(scenario)


def test_shutdown_reports_not_serving_and_lets_the_in_flight_call_finish() -> None:
    async def main() -> None:
        model = FakeModel(hold=threading.Event())
        running = await start_server(OPTIONS)
        await running.mark_ready(model)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=TIMEOUT
            )
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            in_flight = asyncio.ensure_future(
                stub.ModelInfer(infer_request([0.2]), timeout=TIMEOUT)
            )
            assert await asyncio.to_thread(model.entered.wait, TIMEOUT)

            stopping = asyncio.ensure_future(running.shutdown(OPTIONS.grace_s))

            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert not running.service.ready
            watch.cancel()  # a watch would otherwise hold the server for the whole grace
            model.hold.set()
            reply = await in_flight
            await asyncio.wait_for(stopping, TIMEOUT)
        assert list(reply.outputs[0].shape) == [1, 10]
        assert np.argmax(reply.outputs[0].contents.fp32_contents) == 2

    asyncio.run(main())


def test_serve_calls_on_ready_then_serves_until_stopped_and_returns_0() -> None:
    async def main() -> None:
        stop = asyncio.Event()
        ready: asyncio.Future[tuple[int, float]] = asyncio.get_running_loop().create_future()
        serving = asyncio.ensure_future(
            serve(
                OPTIONS,
                FakeModel,
                lambda port, model: ready.set_result((port, model.accuracy)),
                stop=stop,
                handle_signals=False,
            )
        )
        port, accuracy = await asyncio.wait_for(ready, TIMEOUT)
        assert port > 0 and accuracy == 0.99
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            reply = await stub.ModelInfer(infer_request([0.4]), timeout=TIMEOUT)
        assert list(reply.outputs[0].shape) == [1, 10]
        assert not serving.done()

        stop.set()

        assert await asyncio.wait_for(serving, TIMEOUT) == 0

    asyncio.run(main())


def test_serve_returns_1_without_ready_when_the_model_fails_to_load() -> None:
    def broken_load() -> FakeModel:
        raise FileNotFoundError("no such mnist.npz")

    readies: list[int] = []
    code = asyncio.run(
        asyncio.wait_for(
            serve(OPTIONS, broken_load, lambda port, _: readies.append(port), handle_signals=False),
            TIMEOUT,
        )
    )
    assert (code, readies) == (1, [])
