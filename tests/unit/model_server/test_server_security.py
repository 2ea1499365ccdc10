"""model_server/security.py through real gRPC servers on loopback: TLS, mutual TLS and the
bearer token, with certificates made in the test. The model is a numpy stand-in, so no
TensorFlow is imported; the same flags on the real server are exercised in
tests/integration/test_secure_target.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.api import grpc_predict_v2_pb2_grpc as pb_grpc
from model_server.security import (
    BearerTokenInterceptor,
    SecurityConfigError,
    ServerTls,
    bearer_matches,
    load_tls,
    read_token,
)
from model_server.server import RunningServer, ServeOptions, start_server
from tests.support.certs import Pair, issue, make_ca
from tests.support.loop_thread import OnLoop, loop_in_thread

pytestmark = pytest.mark.timeout(120)
TIMEOUT = 10
TOKEN = "s3cr3t-t0ken-of-the-test"


class OneHot:
    accuracy = 0.99

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return np.eye(10, dtype=np.float32)[np.zeros(len(pixels), int)]


@dataclass(frozen=True)
class Pki:
    ca: Pair
    server: Pair
    client: Pair
    stranger_ca: Pair  # a CA nobody here trusts
    stranger_client: Pair  # a client certificate signed by it


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca, ca_key = make_ca()
    stranger_ca, stranger_key = make_ca("some other CA")
    return Pki(
        ca=ca,
        server=issue(ca, ca_key, "localhost", server=True),
        client=issue(ca, ca_key, "agent", server=False),
        stranger_ca=stranger_ca,
        stranger_client=issue(stranger_ca, stranger_key, "intruder", server=False),
    )


@pytest.fixture(scope="module")
def on_loop() -> Iterator[OnLoop]:
    with loop_in_thread(TIMEOUT) as on_loop:
        yield on_loop


def started(on_loop: OnLoop, options: ServeOptions) -> Iterator[RunningServer]:
    running = on_loop(start_server(options))
    on_loop(running.mark_ready(OneHot()))
    try:
        yield running
    finally:
        on_loop(running.shutdown(0))


@pytest.fixture(scope="module")
def tls_server(pki: Pki, on_loop: OnLoop) -> Iterator[RunningServer]:
    yield from started(
        on_loop, ServeOptions(tls=ServerTls(pki.server.cert_pem, pki.server.key_pem))
    )


@pytest.fixture(scope="module")
def locked_server(pki: Pki, on_loop: OnLoop) -> Iterator[RunningServer]:
    """Mutual TLS and a bearer token."""
    tls = ServerTls(pki.server.cert_pem, pki.server.key_pem, client_ca_pem=pki.ca.cert_pem)
    yield from started(on_loop, ServeOptions(tls=tls, auth_token=TOKEN))


@pytest.fixture(scope="module")
def token_server(on_loop: OnLoop) -> Iterator[RunningServer]:
    """Plaintext with a bearer token (behind a TLS-terminating proxy, say)."""
    yield from started(on_loop, ServeOptions(auth_token=TOKEN))


def infer_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 784])
    request.raw_input_contents.append(bytes(784 * 4))
    return request


def secure(port: int, root: bytes | None, client: Pair | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=None if client is None else client.key_pem,
        certificate_chain=None if client is None else client.cert_pem,
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def infer_code(
    channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[grpc.StatusCode, str]:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        reply = stub.ModelInfer(infer_request(), timeout=TIMEOUT, metadata=metadata)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    finally:
        channel.close()
    assert list(reply.outputs[0].shape) == [1, 10]
    return grpc.StatusCode.OK, ""


BEARER = (("authorization", f"Bearer {TOKEN}"),)


# --- TLS ------------------------------------------------------------------------------


def test_a_tls_client_trusting_the_ca_is_served(pki: Pki, tls_server: RunningServer) -> None:
    assert infer_code(secure(tls_server.port, pki.ca.cert_pem))[0] == grpc.StatusCode.OK


def test_a_plaintext_client_is_refused_by_a_tls_server(tls_server: RunningServer) -> None:
    code, _ = infer_code(grpc.insecure_channel(f"127.0.0.1:{tls_server.port}"))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_does_not_trust_the_servers_ca_does_not_connect(
    pki: Pki, tls_server: RunningServer
) -> None:
    code, _ = infer_code(secure(tls_server.port, pki.stranger_ca.cert_pem))
    assert code == grpc.StatusCode.UNAVAILABLE


# --- mutual TLS and the token --------------------------------------------------------


def test_a_client_with_a_certificate_and_the_token_is_served(
    pki: Pki, locked_server: RunningServer
) -> None:
    channel = secure(locked_server.port, pki.ca.cert_pem, pki.client)
    assert infer_code(channel, BEARER)[0] == grpc.StatusCode.OK


@pytest.mark.parametrize("who", ["no certificate", "a stranger's certificate"])
def test_mutual_tls_refuses_clients_without_a_certificate_from_the_ca(
    pki: Pki, locked_server: RunningServer, who: str
) -> None:
    client = None if who == "no certificate" else pki.stranger_client
    code, _ = infer_code(secure(locked_server.port, pki.ca.cert_pem, client), BEARER)
    assert code == grpc.StatusCode.UNAVAILABLE


WRONG_CREDENTIALS = {
    "none": (),
    "wrong token": (("authorization", "Bearer not-the-token"),),
    "token without its scheme": (("authorization", TOKEN),),
    "another scheme": (("authorization", f"Basic {TOKEN}"),),
    "a prefix of the token": (("authorization", f"Bearer {TOKEN[:-1]}"),),
    "the token in another header": (("x-api-key", TOKEN),),
}


@pytest.mark.parametrize("case", WRONG_CREDENTIALS)
def test_calls_without_the_token_are_unauthenticated_and_the_reason_echoes_nothing(
    token_server: RunningServer, case: str
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{token_server.port}")
    code, details = infer_code(channel, WRONG_CREDENTIALS[case])
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "bearer token" in details
    assert TOKEN not in details and "not-the-token" not in details


def test_the_token_is_checked_under_mutual_tls_too(pki: Pki, locked_server: RunningServer) -> None:
    channel = secure(locked_server.port, pki.ca.cert_pem, pki.client)
    assert infer_code(channel)[0] == grpc.StatusCode.UNAUTHENTICATED


def test_every_method_but_health_needs_the_token(token_server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{token_server.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        calls = {
            "ServerLive": lambda md: stub.ServerLive(pb.ServerLiveRequest(), metadata=md),
            "ServerMetadata": lambda md: stub.ServerMetadata(
                pb.ServerMetadataRequest(), metadata=md
            ),
            "ModelMetadata": lambda md: stub.ModelMetadata(
                pb.ModelMetadataRequest(name="mnist"), metadata=md
            ),
            "ServerReflectionInfo": lambda md: list(
                reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                    metadata=md,
                )
            ),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as refused:
                call(())
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            call(BEARER)  # the same call with the token is answered
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_refusals_are_counted_by_method_and_never_carry_the_token(
    token_server: RunningServer,
) -> None:
    def refused() -> float:
        labels = {"method": "ModelInfer", "code": "UNAUTHENTICATED"}
        return token_server.registry.get_sample_value("model_server_requests_total", labels) or 0

    before = refused()
    channel = grpc.insecure_channel(f"127.0.0.1:{token_server.port}")
    assert infer_code(channel)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert refused() == before + 1
    from prometheus_client import generate_latest

    assert TOKEN.encode() not in generate_latest(token_server.registry)


def test_settings_say_how_the_server_is_secured(pki: Pki) -> None:
    tls = ServerTls(pki.server.cert_pem, pki.server.key_pem)
    mutual = ServerTls(pki.server.cert_pem, pki.server.key_pem, pki.ca.cert_pem)
    assert (ServeOptions().settings()["tls"], ServeOptions().settings()["auth"]) == ("off", "none")
    assert ServeOptions(tls=tls).settings()["tls"] == "on"
    assert ServeOptions(tls=mutual, auth_token=TOKEN).settings()["tls"] == "mutual"
    assert ServeOptions(auth_token=TOKEN).settings()["auth"] == "bearer"
    for shown in (repr(ServeOptions(tls=mutual, auth_token=TOKEN)), str(mutual.__repr__())):
        assert TOKEN not in shown and "PRIVATE KEY" not in shown


def test_bearer_matching() -> None:
    expected = TOKEN.encode()
    assert bearer_matches((("authorization", f"Bearer {TOKEN}"),), expected)
    assert bearer_matches((("authorization", f"bearer {TOKEN}"),), expected)  # scheme: any case
    assert bearer_matches((("x", "y"), ("authorization", f"Bearer {TOKEN}".encode())), expected)
    assert not bearer_matches(None, expected)
    assert not bearer_matches((("authorization", f"Bearer {TOKEN}x"),), expected)
    assert not bearer_matches((("authorization", "Bearer "),), expected)
    assert isinstance(BearerTokenInterceptor(TOKEN), grpc.aio.ServerInterceptor)


# --- the files behind the flags --------------------------------------------------------


@pytest.fixture
def files(pki: Pki, tmp_path: Path) -> dict[str, Path]:
    paths = {
        "cert": pki.server.cert_pem,
        "key": pki.server.key_pem,
        "ca": pki.ca.cert_pem,
        "other_key": pki.client.key_pem,
        "junk": b"this is not PEM\n",
    }
    for name, data in paths.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in paths}


def test_load_tls_reads_and_checks_the_files(pki: Pki, files: dict[str, Path]) -> None:
    assert load_tls(None, None, None) is None
    tls = load_tls(files["cert"], files["key"], None)
    assert tls == ServerTls(pki.server.cert_pem, pki.server.key_pem)
    assert load_tls(files["cert"], files["key"], files["ca"]).client_ca_pem == pki.ca.cert_pem


@pytest.mark.parametrize(
    ("cert", "key", "ca", "message"),
    [
        ("cert", None, None, "--tls-cert and --tls-key go together"),
        (None, "key", None, "--tls-cert and --tls-key go together"),
        (None, None, "ca", "--tls-client-ca needs --tls-cert and --tls-key"),
        ("missing", "key", None, "--tls-cert"),
        ("cert", "missing", None, "--tls-key"),
        ("cert", "other_key", None, "not a PEM certificate and its private key"),
        ("junk", "key", None, "not a PEM certificate and its private key"),
        ("cert", "key", "junk", "--tls-client-ca"),
        ("cert", "key", "missing", "--tls-client-ca"),
    ],
)
def test_unusable_tls_files_are_named(
    files: dict[str, Path], cert: str | None, key: str | None, ca: str | None, message: str
) -> None:
    def path(name: str | None) -> Path | None:
        return None if name is None else files.get(name, files["cert"].parent / "nonexistent")

    with pytest.raises(SecurityConfigError, match=message):
        load_tls(path(cert), path(key), path(ca))


def test_read_token_strips_the_newline_and_refuses_unusable_files(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n")
    assert read_token(good) == TOKEN
    cases = {
        "empty": (b"  \n", "the file is empty"),
        "spaced": (b"two words\n", "spaces or control characters"),
        "control": (b"tok\x07en", "spaces or control characters"),
        "latin1": ("tökén".encode("latin-1"), "not ASCII text"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SecurityConfigError, match=message) as caught:
            read_token(tmp_path / name)
        assert "--auth-token-file" in str(caught.value)
    with pytest.raises(SecurityConfigError, match="cannot read"):
        read_token(tmp_path / "nonexistent")
