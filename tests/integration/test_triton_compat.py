"""Wire compatibility with NVIDIA Triton's published gRPC client (tritonclient).

tritonclient's `service_pb2` registers the same message names (`inference.ModelInferRequest`,
...) in protobuf's default pool as our `model_server.api`, so one process cannot import
both. Everything tritonclient does here runs in a subprocess that imports only it (and
`model_server.data`, which is numpy only); this process compares descriptors as plain
FileDescriptorProto messages, which registers nothing.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2

from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.api import grpc_predict_v2_pb2_grpc as pb_grpc
from model_server.data import load_sample, split_sample
from tests.support.processes import Child, python

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TIMEOUT = 30
DIGITS = 10

DUMP_TRITON_DESCRIPTOR = """
import base64, sys
from tritonclient.grpc import service_pb2
assert not any(name.startswith("model_server.api") for name in sys.modules)
print(base64.b64encode(service_pb2.DESCRIPTOR.serialized_pb).decode())
"""

TRITON_CLIENT_SESSION = """
import json, sys
import tritonclient.grpc as triton
from model_server.data import load_sample, split_sample

port, count = sys.argv[1], int(sys.argv[2])
client = triton.InferenceServerClient(f"127.0.0.1:{port}")
digits = split_sample(load_sample()).test
pixels = digits.flat_fp32()
answers = []
for i in range(count):
    tensor = triton.InferInput("input", [1, 784], "FP32")
    tensor.set_data_from_numpy(pixels[i : i + 1])
    result = client.infer(
        "mnist", [tensor], outputs=[triton.InferRequestedOutput("probabilities")],
        client_timeout=30,
    )
    answers.append(result.as_numpy("probabilities").tolist())
print(json.dumps({
    "live": client.is_server_live(client_timeout=30),
    "ready": client.is_server_ready(client_timeout=30),
    "model_ready": client.is_model_ready("mnist", client_timeout=30),
    "metadata": client.get_model_metadata("mnist", as_json=True, client_timeout=30),
    "server": client.get_server_metadata(as_json=True, client_timeout=30),
    "probabilities": answers,
    "labels": digits.labels[:count].tolist(),
    "ours_imported": sorted(m for m in sys.modules if m.startswith("model_server.api")),
}))
"""


def run_isolated(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


# --- descriptors -------------------------------------------------------------------


def triton_file() -> descriptor_pb2.FileDescriptorProto:
    serialized = base64.b64decode(run_isolated(DUMP_TRITON_DESCRIPTOR).strip())
    return descriptor_pb2.FileDescriptorProto.FromString(serialized)


def our_file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(proto)
    return proto


def messages(file: descriptor_pb2.FileDescriptorProto) -> dict[str, tuple]:
    """Full message name -> (is a map entry, sorted field descriptions), nested included."""
    found: dict[str, tuple] = {}

    def walk(types, prefix: str) -> None:
        for message in types:
            name = f"{prefix}.{message.name}"
            fields = sorted(
                (
                    field.number,
                    field.name,
                    descriptor_pb2.FieldDescriptorProto.Type.Name(field.type),
                    field.type_name,
                    descriptor_pb2.FieldDescriptorProto.Label.Name(field.label),
                    message.oneof_decl[field.oneof_index].name
                    if field.HasField("oneof_index")
                    else None,
                )
                for field in message.field
            )
            found[name] = (message.options.map_entry, fields)
            walk(message.nested_type, name)

    walk(file.message_type, f".{file.package}")
    return found


def methods(file: descriptor_pb2.FileDescriptorProto) -> dict[str, tuple]:
    (service,) = [s for s in file.service if s.name == "GRPCInferenceService"]
    return {
        m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
        for m in service.method
    }


@pytest.fixture(scope="module")
def triton_descriptor() -> descriptor_pb2.FileDescriptorProto:
    return triton_file()


def test_same_package_and_every_message_matches_triton(
    triton_descriptor: descriptor_pb2.FileDescriptorProto,
) -> None:
    ours, theirs = messages(our_file()), messages(triton_descriptor)
    assert our_file().package == triton_descriptor.package == "inference"
    assert len(ours) >= 20  # the walk found the nested messages and map entries too
    assert sorted(set(ours) - set(theirs)) == []
    mismatched = {name: (ours[name], theirs[name]) for name in ours if ours[name] != theirs[name]}
    assert mismatched == {}


def test_every_method_matches_triton(
    triton_descriptor: descriptor_pb2.FileDescriptorProto,
) -> None:
    ours, theirs = methods(our_file()), methods(triton_descriptor)
    assert sorted(ours) == sorted(
        ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"]
    )
    assert {name: theirs.get(name) for name in ours} == ours


# --- Triton's client against our server ----------------------------------------------


@pytest.fixture(scope="module")
def server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    # The session's model cache when there is one, so the model is trained at most once.
    cache = os.environ.get("RAYSIEGE_CACHE_DIR") or str(tmp_path_factory.mktemp("cache"))
    child = Child(python("-m", "model_server", "serve", "--port", "0", "--cache-dir", cache))
    try:
        match = child.wait_for_line(r"^READY port=(\d+) ", timeout_s=120)
        yield int(match.group(1))
    finally:
        code = child.stop(signal.SIGTERM)
    assert code == 0


def test_triton_client_talks_to_our_server(server_port: int) -> None:
    session = json.loads(run_isolated(TRITON_CLIENT_SESSION, str(server_port), str(DIGITS)))

    assert session["ours_imported"] == []
    assert (session["live"], session["ready"], session["model_ready"]) == (True, True, True)
    assert session["server"]["name"] == "raysiege-model-server"
    # The settings travel where the published message has room: its extensions.
    assert "dynamic_batching=on" in session["server"]["extensions"]
    metadata = session["metadata"]
    assert (metadata["name"], metadata["versions"]) == ("mnist", ["1"])
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("input", "FP32", ["-1", "784"])  # int64 is a string in protobuf's JSON form
    ]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [
        ("probabilities", "FP32", ["-1", "10"])
    ]
    theirs = np.array(session["probabilities"], dtype=np.float32)
    assert theirs.shape == (DIGITS, 1, 10)
    labels = np.array(session["labels"])
    assert theirs[0, 0].argmax() == labels[0]
    assert (theirs[:, 0].argmax(axis=1) == labels).sum() >= DIGITS - 1

    # The same digits through our own client give the same numbers.
    pixels = split_sample(load_sample()).test.flat_fp32()[:DIGITS]
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="input", datatype="FP32", shape=[DIGITS, 784])
    request.raw_input_contents.append(pixels.tobytes())
    with grpc.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=TIMEOUT)
    ours = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(DIGITS, 10)
    np.testing.assert_allclose(theirs[:, 0], ours, atol=1e-6)
