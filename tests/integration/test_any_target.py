"""Agents against any Open Inference Protocol server: tensors discovered or named, typed
or raw contents, UINT8 or FP32, TLS and mutual TLS, per-request metadata.

Real gRPC on loopback with the fake server, in process; the engine is driven through the
same `Target` an agent actor uses.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from agents.engine import LoadEngine
from agents.payload import build_payloads
from agents.spec import AgentSpec, TlsConfig
from agents.target import Target, TargetError
from coordinator.merge import FleetState
from model_server.data import load_sample
from tests.support.certs import issue, make_ca
from tests.support.fake_server import Behaviour, start_fake_server

pytestmark = pytest.mark.integration


async def drive(behaviour: Behaviour, *, credentials=None, tls=None, metadata=(), **spec_fields):
    """Serve `behaviour`, run 20 closed-loop requests at it as an agent would."""
    server, port = await start_fake_server(behaviour, credentials=credentials)
    target = Target(f"127.0.0.1:{port}", tls=tls, metadata=metadata)
    try:
        describe = {
            k: spec_fields.pop(k)
            for k in ("input_name", "output_name", "datatype")
            if k in spec_fields
        }
        tensors = await target.describe("mnist", "", 10, **describe)
        contents = spec_fields.pop("contents", "raw")
        payloads = build_payloads(load_sample(), tensors, count=8, contents=contents)
        spec = AgentSpec(
            run_id="t",
            agent_index=0,
            target=f"127.0.0.1:{port}",
            load_model="closed",
            concurrency=2,
            max_requests=20,
            duration_s=60,
            check_fraction=1.0,
            **spec_fields,
        )
        state = FleetState()
        async for report in LoadEngine(spec, target.infer, payloads, tensors).run():
            state.add(report)
        return state, tensors
    finally:
        await target.close()
        await server.stop(0)


def test_tensors_are_discovered_from_the_models_metadata():
    behaviour = Behaviour(
        input_name="pixels", input_datatype="UINT8", input_shape=(28, 28), output_name="scores"
    )
    state, tensors = asyncio.run(drive(behaviour))
    assert (
        tensors.input_name,
        tensors.input_datatype,
        tensors.image_shape,
        tensors.output_name,
    ) == (
        "pixels",
        "UINT8",
        (28, 28),
        "scores",
    )
    assert state.ok == 20 and state.checked == 20  # every response parsed and checked
    sent = behaviour.last_request.inputs[0]
    assert (sent.name, sent.datatype, list(sent.shape)) == ("pixels", "UINT8", [1, 28, 28])
    pixels = np.frombuffer(behaviour.last_request.raw_input_contents[0], dtype=np.uint8)
    assert pixels.max() > 1  # raw pixels, not scaled


def test_typed_contents_are_sent_and_read_back():
    behaviour = Behaviour()
    state, _ = asyncio.run(drive(behaviour, contents="typed"))
    request = behaviour.last_request
    assert not request.raw_input_contents and len(request.inputs[0].contents.fp32_contents) == 784
    assert state.ok == 20 and state.checked == 20


def test_a_named_input_that_does_not_exist_is_a_clear_error():
    with pytest.raises(TargetError, match=r"no input 'image'.*it offers: input FP32 \[-1, 784\]"):
        asyncio.run(drive(Behaviour(), input_name="image"))


def test_metadata_is_sent_with_every_request():
    behaviour = Behaviour(token="s3cret")
    state, _ = asyncio.run(drive(behaviour, metadata=(("authorization", "Bearer s3cret"),)))
    assert state.ok == 20


def test_requests_without_the_token_are_counted_unauthenticated():
    behaviour = Behaviour(token="s3cret")

    async def scenario():
        server, port = await start_fake_server(behaviour)
        target = Target(f"127.0.0.1:{port}")
        tensors = await target.describe("mnist", "", 10)  # metadata calls are not guarded
        spec = AgentSpec(
            run_id="t",
            agent_index=0,
            target="x",
            load_model="closed",
            concurrency=1,
            max_requests=5,
            duration_s=60,
        )
        state = FleetState()
        async for report in LoadEngine(
            spec, target.infer, build_payloads(load_sample(), tensors, count=2), tensors
        ).run():
            state.add(report)
        await target.close()
        await server.stop(0)
        return state

    state = asyncio.run(scenario())
    assert dict(state.status_counts) == {"UNAUTHENTICATED": 5}


@pytest.fixture(scope="module")
def pki():
    ca, ca_key = make_ca()
    return {
        "ca": ca,
        "server": issue(ca, ca_key, "localhost", server=True),
        "client": issue(ca, ca_key, "agent", server=False),
        "other_ca": make_ca("someone else")[0],
    }


def test_tls_with_the_servers_ca(pki):
    creds = grpc.ssl_server_credentials([(pki["server"].key_pem, pki["server"].cert_pem)])
    state, _ = asyncio.run(
        drive(Behaviour(), credentials=creds, tls=TlsConfig(ca_pem=pki["ca"].cert_pem))
    )
    assert state.ok == 20


def test_mutual_tls_with_a_client_certificate(pki):
    creds = grpc.ssl_server_credentials(
        [(pki["server"].key_pem, pki["server"].cert_pem)],
        root_certificates=pki["ca"].cert_pem,
        require_client_auth=True,
    )
    tls = TlsConfig(
        ca_pem=pki["ca"].cert_pem, cert_pem=pki["client"].cert_pem, key_pem=pki["client"].key_pem
    )
    state, _ = asyncio.run(drive(Behaviour(), credentials=creds, tls=tls))
    assert state.ok == 20


@pytest.mark.parametrize(
    "client",
    [
        pytest.param(lambda p: None, id="plaintext"),
        pytest.param(lambda p: TlsConfig(ca_pem=p["other_ca"].cert_pem), id="untrusted-server"),
        pytest.param(lambda p: TlsConfig(ca_pem=p["ca"].cert_pem), id="no-client-cert"),
    ],
)
def test_clients_that_do_not_meet_mutual_tls_are_refused(pki, client):
    creds = grpc.ssl_server_credentials(
        [(pki["server"].key_pem, pki["server"].cert_pem)],
        root_certificates=pki["ca"].cert_pem,
        require_client_auth=True,
    )

    async def scenario():
        server, port = await start_fake_server(Behaviour(), credentials=creds)
        target = Target(f"127.0.0.1:{port}", tls=client(pki))
        try:
            await target.describe("mnist", "", 2)
        finally:
            await target.close()
            await server.stop(0)

    with pytest.raises(TargetError, match=r"UNAVAILABLE|DEADLINE_EXCEEDED"):
        asyncio.run(scenario())
