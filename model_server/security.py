"""Who may talk to the model server: TLS (optionally mutual) and an optional bearer token.

`load_tls` reads the PEM files named by `--tls-cert/--tls-key/--tls-client-ca` and checks
them with the standard library's `ssl` before gRPC sees them (gRPC refuses a bad pair only
at bind time, as "Failed to bind"). `read_token` reads `--auth-token-file`. The token is
compared in constant time by `BearerTokenInterceptor`; it is never logged and never put in
an error message. The gRPC health service stays open so orchestrators' probes need no
secret; everything else (inference, metadata, reflection) needs the token.
"""

from __future__ import annotations

import hmac
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

# Probes (Kubernetes, load balancers) call these without credentials; they reveal only
# SERVING / NOT_SERVING.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


class SecurityConfigError(ValueError):
    """A TLS file or token file that cannot be used; the message names the flag."""


@dataclass(frozen=True)
class ServerTls:
    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None = None  # set: clients must present a certificate it signed

    def __repr__(self) -> str:  # the key must not reach a log through a dataclass repr
        return f"ServerTls(mutual={self.client_ca_pem is not None})"

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.client_ca_pem,
            require_client_auth=self.client_ca_pem is not None,
        )


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise SecurityConfigError(f"{flag} {path}: cannot read ({error.strerror})") from error


def load_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> ServerTls | None:
    """The server's TLS material, checked; None when no TLS flag is given."""
    if cert is None and key is None:
        if client_ca is not None:
            raise SecurityConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise SecurityConfigError("--tls-cert and --tls-key go together (give both)")
    cert_pem, key_pem = _read(cert, "--tls-cert"), _read(key, "--tls-key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        raise SecurityConfigError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its private key "
            f"({error.reason or error})"
        ) from error
    ca_pem = None
    if client_ca is not None:
        ca_pem = _read(client_ca, "--tls-client-ca")
        try:
            context.load_verify_locations(cadata=ca_pem.decode("ascii", "replace"))
        except ssl.SSLError as error:
            raise SecurityConfigError(
                f"--tls-client-ca {client_ca}: no PEM certificate in it ({error.reason or error})"
            ) from error
    return ServerTls(cert_pem, key_pem, ca_pem)


def read_token(path: Path) -> str:
    """The bearer token in `path` (surrounding whitespace ignored), checked to be usable as
    an HTTP/2 header value."""
    data = _read(path, "--auth-token-file")
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SecurityConfigError(f"--auth-token-file {path}: not ASCII text") from None
    if not token:
        raise SecurityConfigError(f"--auth-token-file {path}: the file is empty")
    if any(not ch.isprintable() or ch.isspace() for ch in token):
        raise SecurityConfigError(
            f"--auth-token-file {path}: the token has spaces or control characters"
        )
    return token


def bearer_matches(metadata: tuple[tuple[str, str | bytes], ...] | None, expected: bytes) -> bool:
    """Whether `authorization: Bearer <token>` in the call's metadata carries the token."""
    for key, value in metadata or ():
        if key != "authorization":
            continue
        given = value if isinstance(value, bytes) else value.encode("utf-8", "replace")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), expected):
            return True
    return False


Refused = Callable[[str], None]


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Answers UNAUTHENTICATED, before any handler runs, to calls without the token.

    `on_refused(method)` is told of each refusal (for metrics); the reason given to the
    client never includes what was sent or expected."""

    def __init__(self, token: str, *, on_refused: Refused | None = None) -> None:
        self._expected = token.encode("ascii")
        self._on_refused = on_refused

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method in OPEN_METHODS:
            return handler
        if bearer_matches(details.invocation_metadata, self._expected):
            return handler
        if self._on_refused is not None:
            self._on_refused(details.method)
        return _refusing(handler)


_REASON = "missing or wrong bearer token (metadata 'authorization: Bearer <token>')"


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that aborts with UNAUTHENTICATED."""

    async def unary(_request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REASON)

    async def streaming(_request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REASON)
        yield  # unreachable; makes this an async generator as streaming responses need

    make = {
        (False, False): (grpc.unary_unary_rpc_method_handler, unary),
        (False, True): (grpc.unary_stream_rpc_method_handler, streaming),
        (True, False): (grpc.stream_unary_rpc_method_handler, unary),
        (True, True): (grpc.stream_stream_rpc_method_handler, streaming),
    }
    factory, behaviour = make[(handler.request_streaming, handler.response_streaming)]
    return factory(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
