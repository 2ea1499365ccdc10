"""The gRPC side of an agent: a channel to any Open Inference Protocol server.

ModelInfer goes through a multicallable with no serializer or deserializer of its own:
requests are pre-serialized bytes and responses stay bytes until (and unless) they are
checked. Metadata calls use the generated stub.
"""

from __future__ import annotations

import grpc

from agents.payload import TensorSpec, spec_from_metadata
from agents.spec import TlsConfig
from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.api import grpc_predict_v2_pb2_grpc as pb_grpc

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
# Large enough for a batch of 1,024 FP32 digits and its response.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


class TargetError(RuntimeError):
    """The target could not be reached or does not serve the model asked for."""


def open_channel(address: str, tls: TlsConfig | None = None) -> grpc.aio.Channel:
    """A plaintext channel, or a TLS one (mutual TLS when a client certificate is given)."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem
    )
    options = list(CHANNEL_OPTIONS)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(address, credentials, options=options)


class Target:
    """One channel to the target, shared by every request of the agent.

    `metadata` (e.g. an authorization header) is sent with every call; it is never
    logged or reported.
    """

    def __init__(
        self,
        address: str,
        *,
        tls: TlsConfig | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.address = address
        self.channel = open_channel(address, tls)
        self._metadata = tuple(metadata) or None
        self._infer = self.channel.unary_unary(MODEL_INFER)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    async def infer(self, request: bytes, timeout_s: float) -> bytes:
        return await self._infer(request, timeout=timeout_s, metadata=self._metadata)

    async def describe(
        self,
        model: str,
        version: str,
        timeout_s: float,
        *,
        input_name: str = "",
        output_name: str = "",
        datatype: str = "",
    ) -> TensorSpec:
        """Wait for the channel, check the model is ready, read its tensors from metadata."""
        try:
            ready = await self._stub.ModelReady(
                pb.ModelReadyRequest(name=model, version=version),
                timeout=timeout_s,
                wait_for_ready=True,
                metadata=self._metadata,
            )
            if not ready.ready:
                raise TargetError(f"{self.address}: model {model!r} is not ready")
            meta = await self._stub.ModelMetadata(
                pb.ModelMetadataRequest(name=model, version=version),
                timeout=timeout_s,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as error:
            raise TargetError(
                f"{self.address}: {error.code().name} asking for model {model!r}: {error.details()}"
            ) from error
        try:
            return spec_from_metadata(
                meta, version, input_name=input_name, output_name=output_name, datatype=datatype
            )
        except ValueError as error:
            raise TargetError(f"{self.address}: {error}") from error

    async def close(self) -> None:
        await self.channel.close()
