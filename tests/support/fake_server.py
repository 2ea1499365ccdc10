"""A fake Open Inference Protocol server with a controlled latency, for tests of accounting.

It answers ModelInfer after `delay_s` (asyncio.sleep, so it serves many calls at once) with
probabilities that put all the weight on `answer` (or on nothing when None), and can be
told to fail with a status code. Not TensorFlow: where the model is not the point.

With `slots` (`--slots K --service-ms S`) it is a server of known capacity K/S requests/s:
at most K calls are served at once, each for S, first come first served; the others
queue. The queue runs on a virtual schedule (each call is given the earliest free slot
and finishes S after it starts, computed from the monotonic clock) rather than on a
semaphore held across `asyncio.sleep`, because a timer that fires late would stretch
every service time and lower the capacity by an amount nobody knows; here lateness only
delays a response, never the slot. That is the M/D/K queue of `coordinator.capacity_model`.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.api import grpc_predict_v2_pb2_grpc as pb_grpc


@dataclass
class Behaviour:
    delay_s: float = 0.0
    fail_with: grpc.StatusCode | None = None
    # Stall once: from call number `stall_at_call` on, every call arriving within
    # `stall_s` seconds of that one is held until the stall ends.
    stall_at_call: int | None = None
    stall_s: float = 0.0
    calls: int = 0
    stall_until: float | None = None
    announce_first: bool = False  # print FIRST_CALL unix=<time> on the first ModelInfer
    slots: Slots | None = None  # a server of capacity K/S (see Slots)
    # The model it claims to serve, so agents can be shown any V2 model's tensors.
    input_name: str = "input"
    input_datatype: str = "FP32"
    input_shape: tuple[int, ...] = (784,)
    output_name: str = "probabilities"
    token: str | None = None  # require "authorization: Bearer <token>"
    last_request: pb.ModelInferRequest | None = None


@dataclass
class Slots:
    """K slots, each serving one call at a time for `service_s`, first come first served."""

    k: int
    service_s: float
    free_at: list[float] = field(default_factory=list)  # a heap: when each slot frees up

    def __post_init__(self) -> None:
        if self.k < 1 or not self.service_s > 0:
            raise ValueError(f"slots need k >= 1 and a positive service time, got {self}")
        self.free_at = [0.0] * self.k

    def admit(self, now: float) -> float:
        """When a call arriving at `now` is done: it starts on the earliest free slot."""
        done = max(now, heapq.heappop(self.free_at)) + self.service_s
        heapq.heappush(self.free_at, done)
        return done


async def hold(seconds: float, spin_s: float = 0.002) -> None:
    """Wait `seconds` precisely: asyncio timers fire up to a millisecond late, so the
    last `spin_s` are spent yielding in a loop on the monotonic clock."""
    end = time.perf_counter() + seconds
    if seconds > spin_s:
        await asyncio.sleep(seconds - spin_s)
    while time.perf_counter() < end:
        await asyncio.sleep(0)


class FakeInference(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=request.name == "mnist")

    async def ModelMetadata(self, request, context):
        if request.name != "mnist":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.name!r}")
        return pb.ModelMetadataResponse(
            name="mnist",
            versions=["1"],
            platform="fake",
            inputs=[
                pb.ModelMetadataResponse.TensorMetadata(
                    name=self.behaviour.input_name,
                    datatype=self.behaviour.input_datatype,
                    shape=[-1, *self.behaviour.input_shape],
                )
            ],
            outputs=[
                pb.ModelMetadataResponse.TensorMetadata(
                    name=self.behaviour.output_name, datatype="FP32", shape=[-1, 10]
                )
            ],
        )

    async def ModelInfer(self, request, context):
        b = self.behaviour
        b.calls += 1
        if b.calls == 1 and b.announce_first:
            print(f"FIRST_CALL unix={time.time():.6f}", flush=True)
        now = time.perf_counter()
        if b.stall_at_call is not None and b.calls == b.stall_at_call:
            b.stall_until = now + b.stall_s
        if b.stall_until is not None and now < b.stall_until:
            await hold(b.stall_until - now)
        if b.delay_s:
            await hold(b.delay_s)
        if b.slots is not None:
            await asyncio.sleep(max(0.0, b.slots.admit(time.perf_counter()) - time.perf_counter()))
        if b.fail_with is not None:
            await context.abort(b.fail_with, "told to fail")
        if b.token is not None:
            sent = dict(context.invocation_metadata()).get("authorization")
            if sent != f"Bearer {b.token}":
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token"
                )
        b.last_request = request
        n = request.inputs[0].shape[0]
        probs = np.full((n, 10), 0.1, dtype="<f4")
        response = pb.ModelInferResponse(model_name="mnist", model_version="1")
        out = response.outputs.add()
        out.name, out.datatype = b.output_name, "FP32"
        out.shape.extend([n, 10])
        if request.raw_input_contents:
            response.raw_output_contents.append(probs.tobytes())
        else:
            out.contents.fp32_contents.extend(probs.ravel().tolist())
        return response


async def start_fake_server(
    behaviour: Behaviour, port: int = 0, *, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, int]:
    """Serve on 127.0.0.1 (TLS when `credentials` are given); returns (server, port)."""
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(FakeInference(behaviour), server)
    address = f"127.0.0.1:{port}"
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    return server, port


def main() -> None:
    """`python -m tests.support.fake_server [--delay-ms D] [--slots K --service-ms S]`: serve
    until killed, print READY."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--stall-at-call", type=int, default=None)
    parser.add_argument("--stall-ms", type=float, default=0.0)
    parser.add_argument("--announce-first", action="store_true")
    parser.add_argument("--slots", type=int, default=None, help="calls served at once")
    parser.add_argument("--service-ms", type=float, default=10.0, help="with --slots")
    args = parser.parse_args()
    behaviour = Behaviour(
        delay_s=args.delay_ms / 1000,
        stall_at_call=args.stall_at_call,
        stall_s=args.stall_ms / 1000,
        announce_first=args.announce_first,
        slots=None if args.slots is None else Slots(args.slots, args.service_ms / 1000),
    )

    async def serve() -> None:
        server, port = await start_fake_server(behaviour, args.port)
        print(f"READY port={port}", flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
