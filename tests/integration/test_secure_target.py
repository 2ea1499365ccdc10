"""The real MNIST server locked down (mutual TLS and a bearer token), and `coordinator start`
load-testing it through the session's Ray: agents present the client certificate and send
the token from a file, which appears in no output, result file or metric.

Certificates are made in the test (`cryptography`); everything is on 127.0.0.1.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.api import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.support.certs import issue, make_ca
from tests.support.processes import Child, coordinator, python

pytestmark = pytest.mark.integration

TOKEN = "tok-9c41e7-real-server"
READY = r"READY port=(\d+) accuracy=([0-9.]+)"
METRICS = r"metrics on http://127\.0\.0\.1:(\d+)/metrics"


@dataclass
class Locked:
    child: Child
    port: int
    metrics_port: int
    files: dict[str, Path]  # ca, server/client cert and key, token

    def read(self, name: str) -> bytes:
        return self.files[name].read_bytes()

    def channel(self, *, client_cert: bool = True) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.read("ca"),
            private_key=self.read("client_key") if client_cert else None,
            certificate_chain=self.read("client_cert") if client_cert else None,
        )
        return grpc.secure_channel(f"127.0.0.1:{self.port}", credentials)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locked]:
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key = make_ca()
    server, client = (
        issue(ca, ca_key, "localhost", server=True),
        issue(ca, ca_key, "agent", server=False),
    )
    contents = {
        "ca": ca.cert_pem,
        "server_cert": server.cert_pem,
        "server_key": server.key_pem,
        "client_cert": client.cert_pem,
        "client_key": client.key_pem,
        "token": f"{TOKEN}\n".encode(),
    }
    files = {}
    for name, data in contents.items():
        files[name] = folder / name
        files[name].write_bytes(data)
    child = Child(
        python(
            "-m", "model_server", "serve", "--port", "0",
            "--tls-cert", str(files["server_cert"]), "--tls-key", str(files["server_key"]),
            "--tls-client-ca", str(files["ca"]), "--auth-token-file", str(files["token"]),
        )
    )  # fmt: skip
    port = int(child.wait_for_line(READY, timeout_s=180).group(1))
    metrics_port = int(child.wait_for_line(METRICS, stream="stderr", timeout_s=10).group(1))
    try:
        yield Locked(child, port, metrics_port, files)
    finally:
        assert child.stop() == 0
    assert TOKEN not in child.text("stderr") + child.text("stdout")


def infer(channel: grpc.Channel, metadata=()) -> grpc.StatusCode:
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 784])
    request.raw_input_contents.append(bytes(784 * 4))
    try:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30, metadata=metadata)
    except grpc.RpcError as error:
        return error.code()
    finally:
        channel.close()
    return grpc.StatusCode.OK


def test_only_a_client_with_the_certificate_and_the_token_is_served(locked: Locked) -> None:
    bearer = (("authorization", f"Bearer {TOKEN}"),)
    assert infer(locked.channel(), bearer) == grpc.StatusCode.OK
    assert infer(locked.channel()) == grpc.StatusCode.UNAUTHENTICATED
    assert infer(locked.channel(client_cert=False), bearer) == grpc.StatusCode.UNAVAILABLE
    plaintext = grpc.insecure_channel(f"127.0.0.1:{locked.port}")
    assert infer(plaintext, bearer) == grpc.StatusCode.UNAVAILABLE
    with locked.channel() as channel:  # probes need the certificate, not the token
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    with urllib.request.urlopen(f"http://127.0.0.1:{locked.metrics_port}/metrics") as reply:
        metrics = reply.read().decode()
    assert 'model_server_requests_total{code="UNAUTHENTICATED",method="ModelInfer"}' in metrics
    assert TOKEN not in metrics


def tls_flags(locked: Locked) -> list[str]:
    return [
        "--target", f"127.0.0.1:{locked.port}",
        "--tls-ca", str(locked.files["ca"]),
        "--tls-cert", str(locked.files["client_cert"]),
        "--tls-key", str(locked.files["client_key"]),
    ]  # fmt: skip


def test_a_run_against_the_locked_server_sends_the_token_and_writes_it_nowhere(
    locked: Locked, ray_address: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    run = Child(
        coordinator(
            "start", *tls_flags(locked), "--bearer-token-file", str(locked.files["token"]),
            "--address", ray_address, "--agents", "1", "--rate", "40", "--duration", "3s",
            "--max-send-lag", "5s", "--metrics-port", "0", "--out", str(out),
        )
    )  # fmt: skip
    assert run.wait(timeout_s=180) == 0, run.text("stderr")[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] > 0 and summary["ok"] == summary["requests"]
    assert summary["accuracy"]["checked"] > 0
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert TOKEN.encode() not in written
    assert TOKEN not in run.text("stdout") + run.text("stderr")
    assert str(locked.files["token"]) in (out / "plan.json").read_text()  # the file, named


def test_a_run_without_the_token_is_refused_before_any_agent_starts(
    locked: Locked, ray_address: str, tmp_path: Path
) -> None:
    run = Child(
        coordinator(
            "start", *tls_flags(locked), "--address", ray_address, "--agents", "1",
            "--rate", "40", "--duration", "3s", "--out", str(tmp_path / "run"),
        )
    )  # fmt: skip
    code = run.wait(timeout_s=120)
    stderr = run.text("stderr")
    assert code == 3, stderr[-3000:]
    assert "UNAUTHENTICATED" in stderr
