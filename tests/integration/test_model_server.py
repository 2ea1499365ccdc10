"""The real model server as a subprocess: trained model, gRPC API, health, reflection,
metrics, bad input, shutdown, and the clear failures (port taken, model that cannot load).

One server per module (`python -m model_server serve --port 0 --cache-dir <tmp>`), waited
for by its READY line; a second one on the same cache shows the cached load and SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from model_server import __version__
from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.api import grpc_predict_v2_pb2_grpc as pb_grpc
from model_server.batching import BatchingOptions
from model_server.data import Digits, load_sample, split_sample
from tests.support.processes import Child, python

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

READY = r"^READY port=(\d+) accuracy=(\d\.\d{4})$"
TIMEOUT = 30
MAX_BATCH = 1024


METRICS = r"metrics on http://127\.0\.0\.1:(\d+)/metrics"


@dataclass
class Server:
    child: Child
    port: int
    accuracy: float
    cache_dir: Path
    metrics_port: int


def serve_argv(cache_dir: Path, *flags: str) -> list[str]:
    return python("-m", "model_server", "serve", "--cache-dir", str(cache_dir), *flags)


def start(cache_dir: Path) -> Server:
    child = Child(serve_argv(cache_dir, "--port", "0"))  # --port 0: ephemeral metrics too
    match = child.wait_for_line(READY, timeout_s=120)
    metrics = child.wait_for_line(METRICS, stream="stderr", timeout_s=10)
    return Server(
        child, int(match.group(1)), float(match.group(2)), cache_dir, int(metrics.group(1))
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start(tmp_path_factory.mktemp("model-server-cache"))
    try:
        yield running
    finally:
        code = running.child.stop(signal.SIGINT)
    assert code == 0, running.child.text("stderr")[-4000:]
    # stdout carries the READY line and nothing else, whatever TensorFlow printed.
    assert len(running.child.stdout) == 1, running.child.stdout


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=TIMEOUT)
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def holdout() -> Digits:
    return split_sample(load_sample()).test


def request_for(
    images: np.ndarray, *, datatype: str = "FP32", layout: str = "flat", raw: bool = False
) -> pb.ModelInferRequest:
    """A ModelInfer request for uint8 [N, 28, 28] `images` in the given form."""
    batch = len(images)
    shape = [batch, 784] if layout == "flat" else [batch, 28, 28]
    values = images.reshape(shape)
    values = values.astype("<f4") / np.float32(255) if datatype == "FP32" else values
    request = pb.ModelInferRequest(model_name="mnist", id="t")
    tensor = request.inputs.add(name="input", datatype=datatype, shape=shape)
    if raw:
        request.raw_input_contents.append(np.ascontiguousarray(values).tobytes())
    elif datatype == "FP32":
        tensor.contents.fp32_contents.extend(values.ravel().tolist())
    else:
        tensor.contents.uint_contents.extend(values.ravel().tolist())
    return request


def probabilities_of(reply: pb.ModelInferResponse) -> np.ndarray:
    (output,) = reply.outputs
    assert (output.name, output.datatype) == ("probabilities", "FP32")
    if reply.raw_output_contents:
        values = np.frombuffer(reply.raw_output_contents[0], dtype="<f4")
    else:
        values = np.array(output.contents.fp32_contents, dtype=np.float32)
    return values.reshape(list(output.shape))


def test_first_start_trains_and_reports_its_accuracy(server: Server) -> None:
    log = server.child.text("stderr")
    assert "trained model on 4000 digits" in log
    assert "saved model to" in log
    assert "loaded cached model" not in log
    assert server.accuracy >= 0.90


def test_live_and_ready(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=TIMEOUT).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=TIMEOUT).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="mnist"), timeout=TIMEOUT).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="mnist", version="1"), timeout=TIMEOUT).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="resnet"), timeout=TIMEOUT).ready


def test_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    server = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=TIMEOUT)
    assert (server.name, server.version) == ("raysiege-model-server", __version__)
    model = stub.ModelMetadata(pb.ModelMetadataRequest(name="mnist"), timeout=TIMEOUT)
    assert (model.name, list(model.versions), model.platform) == (
        "mnist",
        ["1"],
        "tensorflow_savedmodel",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("input", "FP32", [-1, 784])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("probabilities", "FP32", [-1, 10])
    ]


FORMS = [
    ("FP32", "flat", False),
    ("FP32", "image", False),
    ("FP32", "flat", True),
    ("FP32", "image", True),
    ("UINT8", "flat", False),
    ("UINT8", "image", False),
    ("UINT8", "flat", True),
    ("UINT8", "image", True),
]


@pytest.mark.parametrize(("datatype", "layout", "raw"), FORMS)
def test_every_input_form_gives_the_same_probabilities(
    stub: pb_grpc.GRPCInferenceServiceStub, holdout: Digits, datatype: str, layout: str, raw: bool
) -> None:
    images, labels = holdout.images[:32], holdout.labels[:32]
    reference = probabilities_of(stub.ModelInfer(request_for(images, raw=True), timeout=TIMEOUT))

    reply = stub.ModelInfer(
        request_for(images, datatype=datatype, layout=layout, raw=raw), timeout=TIMEOUT
    )

    assert (reply.model_name, reply.model_version, reply.id) == ("mnist", "1", "t")
    assert bool(reply.raw_output_contents) is raw  # replies in the encoding it was asked in
    probabilities = probabilities_of(reply)
    assert probabilities.shape == (32, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probabilities, reference, atol=1e-6)
    assert (probabilities.argmax(axis=1) == labels).mean() >= 0.8


def test_holdout_accuracy_through_grpc(
    stub: pb_grpc.GRPCInferenceServiceStub, holdout: Digits, server: Server
) -> None:
    reply = stub.ModelInfer(request_for(holdout.images, raw=True), timeout=TIMEOUT)
    accuracy = float((probabilities_of(reply).argmax(axis=1) == holdout.labels).mean())
    assert accuracy >= 0.90
    assert abs(accuracy - server.accuracy) <= 0.001  # what the READY line said


def test_concurrent_calls_each_get_their_own_answer(
    stub: pb_grpc.GRPCInferenceServiceStub, holdout: Digits
) -> None:
    batch = 100
    single = [request_for(holdout.images[i : i + 1], raw=True) for i in range(batch)]
    together = probabilities_of(
        stub.ModelInfer(request_for(holdout.images[:batch], raw=True), timeout=TIMEOUT)
    )

    calls = [stub.ModelInfer.future(request, timeout=TIMEOUT) for request in single]
    answers = np.concatenate([probabilities_of(call.result()) for call in calls])

    np.testing.assert_allclose(answers, together, atol=1e-6)


def _good() -> pb.ModelInferRequest:
    return request_for(load_sample().images[:1])


def _edit(change) -> pb.ModelInferRequest:
    request = _good()
    change(request, request.inputs[0])
    return request


def _raw(data: bytes, shape: list[int], datatype: str = "FP32") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="input", datatype=datatype, shape=shape)
    request.raw_input_contents.append(data)
    return request


def _set_shape(shape: list[int]):
    def change(request, tensor) -> None:
        del tensor.shape[:]
        tensor.shape.extend(shape)

    return change


BAD_REQUESTS = {
    "missing input": (_edit(lambda r, t: r.ClearField("inputs")), "exactly 1 input"),
    "wrong input name": (_edit(lambda r, t: setattr(t, "name", "x")), "named 'input', got 'x'"),
    "wrong datatype": (_edit(lambda r, t: setattr(t, "datatype", "FP64")), "FP32 or UINT8"),
    "wrong shape": (_edit(_set_shape([1, 28, 27])), "got [1, 28, 27]"),
    "N=0": (_edit(_set_shape([0, 784])), "N >= 1"),
    "N above max batch": (
        _raw(bytes(4 * 784 * (MAX_BATCH + 1)), [MAX_BATCH + 1, 784]),
        f"N={MAX_BATCH + 1} exceeds the maximum {MAX_BATCH}",
    ),
    "element count": (_edit(_set_shape([2, 784])), "expected 1568 elements"),
    "byte length": (_raw(bytes(100), [1, 784]), "expected 3136 bytes"),
    "uint8 byte length": (_raw(bytes(4 * 784), [1, 784], "UINT8"), "expected 784 bytes"),
    "NaN": (
        _edit(lambda r, t: t.contents.fp32_contents.__setitem__(0, float("nan"))),
        "NaN/inf",
    ),
    "inf": (
        _edit(lambda r, t: t.contents.fp32_contents.__setitem__(0, float("inf"))),
        "NaN/inf",
    ),
    "0..255 sent as FP32": (
        _edit(lambda r, t: t.contents.fp32_contents.__setitem__(0, 255.0)),
        "must be in 0..1",
    ),
    "typed and raw": (
        _edit(lambda r, t: r.raw_input_contents.append(bytes(4 * 784))),
        "both typed contents",
    ),
    "no data": (_edit(lambda r, t: t.ClearField("contents")), "no data"),
    "unknown output": (_edit(lambda r, t: r.outputs.add(name="logits")), "unknown output"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_is_invalid_argument_and_the_server_stays_up(
    stub: pb_grpc.GRPCInferenceServiceStub, case: str
) -> None:
    request, fragment = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert fragment in caught.value.details()
    assert probabilities_of(stub.ModelInfer(_good(), timeout=TIMEOUT)).shape == (1, 10)


@pytest.mark.parametrize(("name", "version"), [("resnet", ""), ("mnist", "7")])
def test_unknown_model_or_version_is_not_found(
    stub: pb_grpc.GRPCInferenceServiceStub, name: str, version: str
) -> None:
    request = _good()
    request.model_name, request.model_version = name, version
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert repr(name if version == "" else version) in caught.value.details()


def test_health_is_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    (reply,) = list(reflection.ServerReflectionInfo(requests, timeout=TIMEOUT))
    names = {service.name for service in reply.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


def scrape(server: Server) -> bytes:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
        return reply.read()


def sample(exposition: bytes, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(exposition.decode()):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


def test_metrics_count_the_calls_and_pass_promtool(
    server: Server, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    before = scrape(server)
    for _ in range(3):
        stub.ModelInfer(_good(), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(_raw(bytes(100), [1, 784]), timeout=TIMEOUT)
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("model_server_requests_total", method="ModelInfer", code="OK") == 3
    assert delta("model_server_requests_total", method="ModelInfer", code="INVALID_ARGUMENT") == 1
    assert delta("model_server_request_duration_seconds_count", method="ModelInfer") == 4
    assert delta("model_server_batch_size_sum") == 3  # the bad one never reached the model
    assert delta("model_server_inference_duration_seconds_count") == 3
    assert sample(after, "model_server_in_flight_requests") == 0
    assert sample(after, "model_server_queue_depth") == 0
    result = subprocess.run(
        [promtool(), "check", "metrics"], input=after, capture_output=True, timeout=60
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_bytes_that_do_not_parse_are_invalid_argument(
    channel: grpc.Channel, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as caught:
        infer(b"\x0a\x05mn", timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid inference.ModelInferRequest" in caught.value.details()
    assert probabilities_of(stub.ModelInfer(_good(), timeout=TIMEOUT)).shape == (1, 10)


def test_an_oversized_message_is_resource_exhausted(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    too_big = 2 * MAX_BATCH * 784 * 4 + (1 << 20)  # past the server's receive limit
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(_raw(bytes(too_big), [1, 784]), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert probabilities_of(stub.ModelInfer(_good(), timeout=TIMEOUT)).shape == (1, 10)


def test_a_request_larger_than_a_batch_is_split_and_answered_whole(
    stub: pb_grpc.GRPCInferenceServiceStub, holdout: Digits
) -> None:
    images = holdout.images[: BatchingOptions().max_batch_size * 2 + 3]
    reply = stub.ModelInfer(request_for(images, raw=True), timeout=TIMEOUT)
    whole = probabilities_of(reply)
    pieces = np.concatenate(
        [
            probabilities_of(
                stub.ModelInfer(request_for(images[i : i + 50], raw=True), timeout=TIMEOUT)
            )
            for i in range(0, len(images), 50)
        ]
    )
    np.testing.assert_allclose(whole, pieces, atol=1e-6)


def test_the_settings_are_in_the_server_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    defaults = BatchingOptions()
    extensions = set(stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=TIMEOUT).extensions)
    assert {
        "dynamic_batching=on",
        f"max_batch_size={defaults.max_batch_size}",
        f"batch_timeout_us={round(defaults.batch_timeout_s * 1e6)}",
        f"batch_threads={defaults.batch_threads}",
        f"max_enqueued_batches={defaults.max_enqueued_batches}",
        f"max_request_batch={MAX_BATCH}",
        "workers=1",
        f"intra_op_threads={max(1, len(os.sched_getaffinity(0)) - 1)}",
        "inter_op_threads=1",
        "tls=off",
        "auth=none",
    } == extensions


def test_a_taken_port_is_a_clear_error_and_exit_1(server: Server) -> None:
    child = Child(serve_argv(server.cache_dir, "--port", str(server.port), "--no-metrics"))
    assert child.wait(timeout_s=60) == 1
    assert f"cannot listen on 127.0.0.1:{server.port}" in child.text("stderr")
    assert child.stdout == []


def test_a_taken_metrics_port_is_a_clear_error_and_exit_1(server: Server) -> None:
    child = Child(
        serve_argv(server.cache_dir, "--port", "0", "--metrics-port", str(server.metrics_port))
    )
    assert child.wait(timeout_s=60) == 1
    assert f"cannot serve metrics on 127.0.0.1:{server.metrics_port}" in child.text("stderr")
    assert child.stdout == []


def test_a_model_that_cannot_load_is_a_clear_error_and_exit_1(tmp_path: Path) -> None:
    broken = tmp_path / "mnist.npz"
    broken.write_bytes(b"this is not an npz file")
    child = Child(serve_argv(tmp_path, "--port", "0", "--mnist-npz", str(broken)))
    assert child.wait(timeout_s=120) == 1
    assert "could not load the model" in child.text("stderr")
    assert child.stdout == []


def test_second_start_loads_the_cached_model_and_exits_0_on_sigterm(server: Server) -> None:
    second = start(server.cache_dir)
    try:
        log = second.child.text("stderr")
        assert "loaded cached model" in log
        assert "trained model" not in log
        assert second.accuracy == server.accuracy
    finally:
        code = second.child.stop(signal.SIGTERM)
    assert code == 0, second.child.text("stderr")[-4000:]
    assert "stopped" in second.child.text("stderr")


def test_sigterm_while_training_exits_0_and_caches_nothing(tmp_path: Path) -> None:
    child = Child(
        python("-m", "model_server", "serve", "--port", "0", "--cache-dir", str(tmp_path))
    )
    try:
        child.wait_for_line("no cached model at .*: training one", stream="stderr", timeout_s=60)
    finally:
        code = child.stop(signal.SIGTERM)
    assert code == 0, child.text("stderr")[-4000:]
    assert child.stdout == []  # never said READY
    assert not list(tmp_path.glob("*/saved_model.pb"))  # no half-trained model left behind
