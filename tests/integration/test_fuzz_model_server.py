"""Fuzzing the real MNIST server: more than 10,000 ModelInfer calls made of nonsense, and
garbage bytes on raw TCP connections to its port.

Three kinds of calls, drawn by Hypothesis: bytes that are no message at all (to every
unary method), requests that parse but say anything (names, versions, datatypes, shapes,
typed and raw contents of any size, parameters, requested outputs), and valid requests
with bytes flipped, cut or inserted. The server must answer each with a client error
(INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED) or a correct answer, never UNKNOWN or
INTERNAL, never die, and keep classifying real digits correctly throughout.
The counts tried are printed (`pytest -s`) and checked.
"""

from __future__ import annotations

import json
import random
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.api import grpc_predict_v2_pb2_grpc as pb_grpc
from model_server.data import load_sample
from tests.support.processes import Child, python

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

FUZZED_CALLS = 10_500  # at least 10,000 reach the server whatever Hypothesis replays
READY = r"READY port=(\d+) accuracy=([0-9.]+)"
SERVICE = "/inference.GRPCInferenceService/"
UNARY_METHODS = [
    "ModelInfer", "ModelInfer", "ModelInfer", "ModelInfer",  # mostly the one that matters
    "ModelMetadata", "ModelReady", "ServerMetadata", "ServerLive", "ServerReady",
]  # fmt: skip
CLIENT_ERRORS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
DATATYPES = [
    "FP32", "UINT8", "FP64", "FP16", "BF16", "INT8", "INT16", "INT32", "INT64", "UINT16",
    "UINT32", "UINT64", "BOOL", "BYTES", "fp32", "", "FP32 ", "\x00",
]  # fmt: skip
CONTENT_FIELDS = [
    "bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
    "fp32_contents", "fp64_contents", "bytes_contents",
]  # fmt: skip
# Raw contents in bytes: mostly small; some a digit or a batch in FP32 or UINT8; a few
# past the server's message limit (6.49 MB with the default --max-request-batch 1024),
# which gRPC itself refuses with RESOURCE_EXHAUSTED.
SIZES = st.one_of(
    st.integers(0, 64),
    st.sampled_from([783, 784, 785, 784 * 4, 784 * 8, 784 * 1024 * 4, 784 * 1025 * 4, 7 << 20]),
    st.integers(0, 784 * 64),
)
# Typed contents in elements: lists of Python values are slow to build, so fewer.
COUNTS = st.one_of(st.integers(0, 64), st.sampled_from([783, 784, 785, 784 * 2, 784 * 64]))
DIMS = st.one_of(
    st.sampled_from([-(2**63), -2, -1, 0, 1, 2, 27, 28, 783, 784, 1024, 1025, 2**31, 2**63 - 1]),
    st.integers(-5, 5000),
)


@dataclass
class Served:
    child: Child
    channel: grpc.Channel
    stub: pb_grpc.GRPCInferenceServiceStub
    port: int


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    child = Child(python("-m", "model_server", "serve", "--port", "0", "--no-metrics"))
    port = int(child.wait_for_line(READY, timeout_s=180).group(1))
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    try:
        yield Served(child, channel, pb_grpc.GRPCInferenceServiceStub(channel), port)
    finally:
        channel.close()
        assert child.stop() == 0, child.text("stderr")[-3000:]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    sample = load_sample()
    return sample.images[:32], sample.labels[:32]


def check_real_digits(served: Served, digits: tuple[np.ndarray, np.ndarray]) -> None:
    """The server is alive and still right: 32 real digits, most classified correctly."""
    assert served.child.process.poll() is None, served.child.text("stderr")[-3000:]
    images, labels = digits
    pixels = images.reshape(len(images), 784).astype(np.float32) / 255.0
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="input", datatype="FP32", shape=list(pixels.shape))
    request.raw_input_contents.append(pixels.tobytes())
    reply = served.stub.ModelInfer(request, timeout=30)
    probabilities = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(-1, 10)
    assert (probabilities.argmax(axis=1) == labels).mean() >= 0.8


# --- what a fuzzed call is ------------------------------------------------------------


@st.composite
def garbage_calls(draw) -> tuple[str, str, bytes]:
    method = draw(st.sampled_from(UNARY_METHODS))
    size = draw(st.integers(0, 64) | st.integers(0, 4096))
    data = draw(st.binary(min_size=min(size, 256), max_size=min(size, 256)))
    filler = draw(st.integers(0, 255))
    return "garbage bytes", method, data + bytes([filler]) * max(0, size - 256)


def _values(draw, field: str, size: int) -> list:
    if field == "bool_contents":
        return [draw(st.booleans())] * size
    if field == "bytes_contents":
        return [draw(st.binary(max_size=16))] * size
    if field == "fp32_contents":
        return [draw(st.floats(width=32))] * size
    if field == "fp64_contents":
        return [draw(st.floats())] * size
    bits = 64 if "64" in field else 32
    low = 0 if field.startswith("uint") else -(2 ** (bits - 1))
    high = 2**bits - 1 if field.startswith("uint") else 2 ** (bits - 1) - 1
    return [draw(st.integers(low, high))] * size


def _parameter(draw) -> pb.InferParameter:
    kind = draw(st.sampled_from(["bool_param", "int64_param", "string_param", None]))
    if kind == "bool_param":
        return pb.InferParameter(bool_param=draw(st.booleans()))
    if kind == "int64_param":
        return pb.InferParameter(int64_param=draw(st.integers(-(2**63), 2**63 - 1)))
    if kind == "string_param":
        return pb.InferParameter(string_param=draw(st.text(max_size=20)))
    return pb.InferParameter()


@st.composite
def nonsense_requests(draw) -> tuple[str, str, bytes]:
    """A ModelInferRequest that parses and may say anything."""
    # Mostly the right model, so that most calls reach the decoding of the tensors.
    request = pb.ModelInferRequest(
        model_name="mnist" if draw(st.integers(0, 9)) else draw(st.text()),
        model_version=draw(st.sampled_from(["", "", "", "1", "2", "-1"])),
        id=draw(st.text(max_size=40)),
    )
    for key in draw(st.lists(st.text(max_size=12), max_size=3)):
        request.parameters[key].CopyFrom(_parameter(draw))
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(
            name=draw(st.sampled_from(["input", "input", "x", ""]) | st.text(max_size=10)),
            datatype=draw(st.sampled_from(DATATYPES)),
            shape=draw(st.lists(DIMS, max_size=5)),
        )
        for field in draw(st.lists(st.sampled_from(CONTENT_FIELDS), max_size=2, unique=True)):
            getattr(tensor.contents, field).extend(_values(draw, field, draw(COUNTS)))
        for key in draw(st.lists(st.text(max_size=8), max_size=2)):
            tensor.parameters[key].CopyFrom(_parameter(draw))
    for _ in range(draw(st.integers(0, 3))):
        size = draw(SIZES)
        fill = draw(st.sampled_from([0, 1, 127, 128, 255]))
        head = draw(st.binary(max_size=min(size, 64)))
        request.raw_input_contents.append(head + bytes([fill]) * (size - len(head)))
    for _ in range(draw(st.integers(0, 2))):
        output = request.outputs.add(
            name=draw(st.sampled_from(["output", "probabilities", "other", ""]))
        )
        if draw(st.booleans()):
            output.parameters["binary_data"].CopyFrom(_parameter(draw))
    return "nonsense request", "ModelInfer", request.SerializeToString()


@st.composite
def mutated_requests(draw) -> tuple[str, str, bytes]:
    """A valid request (1-4 images, FP32/UINT8, raw or typed), then its bytes damaged."""
    batch = draw(st.integers(1, 4))
    datatype = draw(st.sampled_from(["FP32", "UINT8"]))
    request = pb.ModelInferRequest(model_name="mnist")
    tensor = request.inputs.add(name="input", datatype=datatype, shape=[batch, 784])
    if draw(st.booleans()):
        itemsize = 4 if datatype == "FP32" else 1
        request.raw_input_contents.append(
            bytes([draw(st.integers(0, 255))]) * batch * 784 * itemsize
        )
    elif datatype == "FP32":
        tensor.contents.fp32_contents.extend([0.5] * batch * 784)
    else:
        tensor.contents.uint_contents.extend([200] * batch * 784)
    data = bytearray(request.SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if how == "flip" and where < len(data):
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            del data[where : where + draw(st.integers(1, 16))]
        elif how == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[where:]
    return "damaged request", "ModelInfer", bytes(data)


FUZZED = st.one_of(garbage_calls(), nonsense_requests(), mutated_requests())


def test_ten_thousand_fuzzed_calls_get_client_errors_or_answers_and_the_server_stays_up(
    served: Served, digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    counts: Counter[tuple[str, str]] = Counter()
    calls = {name: served.channel.unary_unary(SERVICE + name) for name in set(UNARY_METHODS)}

    @given(FUZZED)
    @settings(
        max_examples=FUZZED_CALLS,
        deadline=None,
        database=None,  # the same campaign every run: replayed examples would skew counts
        suppress_health_check=list(HealthCheck),
    )
    def campaign(call: tuple[str, str, bytes]) -> None:
        kind, method, data = call
        try:
            reply = calls[method](data, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            assert error.details(), (kind, method, code)
        counts[kind, code.name] += 1
        assert code in CLIENT_ERRORS, (kind, method, code, data[:200])
        if code == grpc.StatusCode.OK and method == "ModelInfer":
            answer = pb.ModelInferResponse.FromString(reply)
            assert answer.outputs and answer.outputs[0].shape[-1] == 10
        if sum(counts.values()) % 1000 == 0:
            check_real_digits(served, digits)

    campaign()
    check_real_digits(served, digits)
    total = sum(counts.values())
    report = {f"{kind}: {code}": n for (kind, code), n in sorted(counts.items())}
    print(f"\nfuzzed ModelInfer/unary calls: {total}", json.dumps(report, indent=1))
    (tmp_path / "fuzz_counts.json").write_text(json.dumps(report))
    assert total >= 10_000
    for kind in ("garbage bytes", "nonsense request", "damaged request"):
        assert sum(n for (k, _), n in counts.items() if k == kind) >= 1000, kind
    assert sum(n for (_, code), n in counts.items() if code == "OK") > 0  # answers too
    assert counts["nonsense request", "RESOURCE_EXHAUSTED"] > 0  # the size limit was met


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def test_garbage_on_raw_connections_does_not_hurt_the_server(
    served: Served, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """500 TCP connections that speak nonsense: random bytes, a valid HTTP/2 preface then
    random frames, a header block that never ends, or half a preface and a hang-up."""
    rng = random.Random(20261204)
    kinds: Counter[str] = Counter()
    for i in range(500):
        kind = ("random bytes", "preface then junk", "endless header", "half preface")[i % 4]
        if kind == "random bytes":
            data = rng.randbytes(rng.randint(1, 4096))
        elif kind == "preface then junk":
            data = HTTP2_PREFACE + rng.randbytes(rng.randint(1, 4096))
        elif kind == "endless header":  # a HEADERS frame header claiming 16 MB, then 1 KB
            data = HTTP2_PREFACE + b"\xff\xff\xff\x01\x04\x00\x00\x00\x01" + rng.randbytes(1024)
        else:
            data = HTTP2_PREFACE[: rng.randint(1, len(HTTP2_PREFACE) - 1)]
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                sock.recv(65536)  # whatever the server says (a GOAWAY) or the close
            except (ConnectionResetError, BrokenPipeError, TimeoutError):
                pass  # the server hung up on us: fine
        kinds[kind] += 1
    print(f"\nraw garbage connections: {sum(kinds.values())}", dict(kinds))
    check_real_digits(served, digits)
