"""model_server/service.py through a real gRPC server: bad bytes, bad shapes, full queues,
settings in the metadata, and the metrics each call leaves behind.

One server for the module, on an ephemeral loopback port, its event loop in a thread; the
model is a numpy stand-in that can be held mid-call, so no TensorFlow is imported.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.api import grpc_predict_v2_pb2_grpc as pb_grpc
from model_server.batching import BatchingOptions
from model_server.server import RunningServer, ServeOptions, start_server
from tests.support.loop_thread import loop_in_thread

pytestmark = pytest.mark.timeout(120)
TIMEOUT = 10
MAX_REQUEST_BATCH = 4
OPTIONS = ServeOptions(
    port=0,
    max_request_batch=MAX_REQUEST_BATCH,
    batching=BatchingOptions(max_batch_size=2, max_enqueued_batches=1),
)
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class HoldableModel:
    """Predicts class k for an image whose first pixel is k/10; `hold` can stop it mid-call."""

    accuracy: float = 0.99
    hold: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.hold.set()

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.hold.wait(TIMEOUT)
        classes = np.rint(pixels[:, 0] * 10).astype(int) % 10
        return np.eye(10, dtype=np.float32)[classes]


@dataclass
class Served:
    running: RunningServer
    model: HoldableModel
    channel: grpc.Channel
    stub: pb_grpc.GRPCInferenceServiceStub

    def sample(self, name: str, **labels: str) -> float:
        return self.running.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with loop_in_thread(TIMEOUT) as on_loop:
        model = HoldableModel()
        running = on_loop(start_server(OPTIONS))
        on_loop(running.mark_ready(model))
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
                yield Served(running, model, channel, pb_grpc.GRPCInferenceServiceStub(channel))
        finally:
            model.hold.set()
            on_loop(running.shutdown(0))


def request_for(first_pixels: list[float], *, raw: bool = True) -> pb.ModelInferRequest:
    pixels = np.zeros((len(first_pixels), 784), np.float32)
    pixels[:, 0] = first_pixels
    request = pb.ModelInferRequest(model_name="mnist")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(pixels.shape))
    if raw:
        request.raw_input_contents.append(pixels.tobytes())
    else:
        tensor.contents.fp32_contents.extend(pixels.ravel().tolist())
    return request


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def wait_until(condition: Callable[[], bool]) -> None:
    event = threading.Event()
    for _ in range(TIMEOUT * 1000):
        if condition():
            return
        event.wait(0.001)  # a poll interval, not a synchronisation
    raise AssertionError("condition not reached")


def classes_of(reply: pb.ModelInferResponse) -> list[int]:
    values = np.frombuffer(reply.raw_output_contents[0], dtype="<f4")
    return values.reshape(-1, 10).argmax(axis=1).tolist()


# --- bytes that are not a request ---------------------------------------------------


NOT_A_MESSAGE = {
    "truncated field": b"\x0a\x05mn",
    "bad wire type": b"\x0f",
    "invalid tag 0": b"\x00\x01",
    "truncated varint": b"\x08\xff\xff",
}


@pytest.mark.parametrize("case", NOT_A_MESSAGE)
def test_bytes_that_are_not_a_model_infer_request_are_invalid_argument(
    served: Served, case: str
) -> None:
    call = served.channel.unary_unary(MODEL_INFER)
    code, details = code_of(lambda: call(NOT_A_MESSAGE[case], timeout=TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid inference.ModelInferRequest" in details
    assert classes_of(served.stub.ModelInfer(request_for([0.3]), timeout=TIMEOUT)) == [3]


def test_every_method_parses_its_own_bytes(served: Served) -> None:
    call = served.channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")
    code, details = code_of(lambda: call(b"\x0a\x05mn", timeout=TIMEOUT))
    assert (code, "inference.ModelMetadataRequest" in details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        True,
    )


@given(st.binary(max_size=200))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_bytes_get_a_named_client_error_never_unknown_or_internal(
    served: Served, data: bytes
) -> None:
    call = served.channel.unary_unary(MODEL_INFER)
    code, details = code_of(lambda: call(data, timeout=TIMEOUT))
    # Parsed garbage names no model ("" is not 'mnist'): NOT_FOUND; unparsable: INVALID_ARGUMENT.
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (code, details)
    assert details


def test_a_message_over_the_size_limit_is_resource_exhausted(served: Served) -> None:
    request = request_for([0.1])
    request.raw_input_contents[0] = bytes(OPTIONS.max_message_bytes + 1)
    code, details = code_of(lambda: served.stub.ModelInfer(request, timeout=TIMEOUT))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert classes_of(served.stub.ModelInfer(request_for([0.4]), timeout=TIMEOUT)) == [4]


# --- request shapes: valid ones answer, the rest are INVALID_ARGUMENT ----------------


@given(
    shape=st.lists(st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 27, 28, 783, 784, 785]), max_size=4),
    datatype=st.sampled_from(["FP32", "UINT8", "FP64", "INT32"]),
    raw=st.booleans(),
    elements_delta=st.sampled_from([0, 0, 0, -1, 1]),
)
@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_request_shape_is_answered_or_invalid_argument(
    served: Served, shape: list[int], datatype: str, raw: bool, elements_delta: int
) -> None:
    valid_shape = (len(shape) == 2 and shape[1] == 784) or (
        len(shape) == 3 and shape[1:] == [28, 28]
    )
    count = max(0, int(np.prod(shape)) if shape else 0) + elements_delta
    count = min(max(count, 0), 10 * 784)
    request = pb.ModelInferRequest(model_name="mnist")
    tensor = request.inputs.add(name="input", datatype=datatype, shape=shape)
    values = np.zeros(count, np.float32)
    if raw:
        itemsize = {"FP32": 4, "UINT8": 1, "FP64": 8, "INT32": 4}[datatype]
        request.raw_input_contents.append(bytes(count * itemsize))
    elif datatype == "UINT8":
        tensor.contents.uint_contents.extend(values.astype(int).tolist())
    else:
        tensor.contents.fp32_contents.extend(values.tolist())

    code, details = code_of(lambda: served.stub.ModelInfer(request, timeout=TIMEOUT))

    good = (
        valid_shape
        and 1 <= shape[0] <= MAX_REQUEST_BATCH
        and datatype in ("FP32", "UINT8")
        and elements_delta == 0
    )
    if good:
        assert code == grpc.StatusCode.OK, details
        reply = served.stub.ModelInfer(request, timeout=TIMEOUT)
        assert list(reply.outputs[0].shape) == [shape[0], 10]
        assert bool(reply.raw_output_contents) is raw
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (shape, datatype, raw, elements_delta)
        assert details


# --- the queue limit ------------------------------------------------------------------


def test_a_full_queue_is_resource_exhausted_at_once_and_the_server_recovers(
    served: Served,
) -> None:
    model = served.model
    before = served.sample("model_server_requests_total", method="ModelInfer", code="OK")
    model.entered.clear()
    model.hold.clear()
    try:
        first: Future = served.stub.ModelInfer.future(request_for([0.1]), timeout=TIMEOUT)
        assert model.entered.wait(TIMEOUT)
        # Two rows may wait (max_enqueued_batches 1 x max_batch_size 2).
        queued = served.stub.ModelInfer.future(request_for([0.2, 0.3]), timeout=TIMEOUT)
        batcher = served.running.batcher
        assert batcher is not None
        wait_until(lambda: batcher.queued_rows == 2)
        assert served.sample("model_server_queue_depth") == 1
        code, details = code_of(lambda: served.stub.ModelInfer(request_for([0.4]), timeout=TIMEOUT))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full" in details
    finally:
        model.hold.set()
    assert classes_of(first.result(TIMEOUT)) == [1]
    assert classes_of(queued.result(TIMEOUT)) == [2, 3]
    assert classes_of(served.stub.ModelInfer(request_for([0.5]), timeout=TIMEOUT)) == [5]
    after = served.sample("model_server_requests_total", method="ModelInfer", code="OK")
    assert after - before == 3
    assert served.sample("model_server_queue_depth") == 0


# --- settings and metrics -----------------------------------------------------------


def test_settings_appear_in_server_metadata_and_as_headers(served: Served) -> None:
    reply = served.stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=TIMEOUT)
    assert {
        "dynamic_batching=on",
        "max_batch_size=2",
        "batch_timeout_us=0",
        "batch_threads=1",
        "max_enqueued_batches=1",
        f"max_request_batch={MAX_REQUEST_BATCH}",
        "workers=1",
    } <= set(reply.extensions)
    _, call = served.stub.ModelMetadata.with_call(
        pb.ModelMetadataRequest(name="mnist"), timeout=TIMEOUT
    )
    headers = dict(call.initial_metadata())
    assert headers["raysiege-max-batch-size"] == "2"
    assert headers["raysiege-dynamic-batching"] == "on"


def test_each_call_is_counted_by_method_and_code(served: Served) -> None:
    def count(method: str, code: str) -> float:
        return served.sample("model_server_requests_total", method=method, code=code)

    def durations(method: str) -> float:
        return served.sample("model_server_request_duration_seconds_count", method=method)

    before = {
        key: count(*key)
        for key in [
            ("ModelInfer", "OK"),
            ("ModelInfer", "INVALID_ARGUMENT"),
            ("ModelInfer", "NOT_FOUND"),
            ("ServerLive", "OK"),
        ]
    }
    infer_durations = durations("ModelInfer")
    served.stub.ModelInfer(request_for([0.1, 0.2, 0.3]), timeout=TIMEOUT)
    bad = request_for([0.1])
    bad.inputs[0].datatype = "FP64"
    code_of(lambda: served.stub.ModelInfer(bad, timeout=TIMEOUT))
    unknown = request_for([0.1])
    unknown.model_name = "resnet"
    code_of(lambda: served.stub.ModelInfer(unknown, timeout=TIMEOUT))
    served.stub.ServerLive(pb.ServerLiveRequest(), timeout=TIMEOUT)

    assert {key: count(*key) - value for key, value in before.items()} == {
        ("ModelInfer", "OK"): 1,
        ("ModelInfer", "INVALID_ARGUMENT"): 1,
        ("ModelInfer", "NOT_FOUND"): 1,
        ("ServerLive", "OK"): 1,
    }
    assert durations("ModelInfer") - infer_durations == 3
    assert served.sample("model_server_in_flight_requests") == 0


def test_typed_and_raw_requests_are_answered_in_kind(served: Served) -> None:
    typed = served.stub.ModelInfer(request_for([0.6], raw=False), timeout=TIMEOUT)
    assert not typed.raw_output_contents
    assert np.argmax(typed.outputs[0].contents.fp32_contents) == 6
    request = request_for([0.7])
    request.outputs.add(name="probabilities")
    assert classes_of(served.stub.ModelInfer(request, timeout=TIMEOUT)) == [7]
