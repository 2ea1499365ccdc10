"""What one agent costs per request, side by side with a bare grpc.aio loop and h2load.

A fast fake V2 server (no model, no delay) runs in its own process so the client's CPU is
measured alone. Each client sends the same pre-serialized ModelInfer requests with the
same number in flight; the figure is client CPU microseconds per completed request
(process time for Python clients, rusage of the child for h2load):

  bare grpc.aio      N tasks awaiting one raw-bytes multicallable; no bookkeeping at all
  engine, closed     LoadEngine closed loop: histograms, status counts, checks, reports
  engine, open       LoadEngine open loop at a fixed rate below saturation
  h2load             nghttp2's HTTP/2 load generator with gRPC framing (the native floor)

Run with `make bench` or `python bench/agents.py [--requests N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from agents.engine import LoadEngine  # noqa: E402
from agents.payload import build_payloads  # noqa: E402
from agents.spec import AgentSpec  # noqa: E402
from agents.target import MODEL_INFER, Target  # noqa: E402
from model_server.data import load_sample  # noqa: E402
from tests.support.processes import Child, python  # noqa: E402

IN_FLIGHT = 32


async def bare_loop(target: str, requests: list[bytes], n: int) -> tuple[float, float]:
    """(cpu seconds, wall seconds) for n calls, IN_FLIGHT at a time, nothing recorded."""
    async with grpc.aio.insecure_channel(target) as channel:
        infer = channel.unary_unary(MODEL_INFER)
        for r in requests[:50]:
            await infer(r, timeout=10)
        remaining = n

        async def worker(k: int) -> None:
            nonlocal remaining
            i = k
            while remaining > 0:
                remaining -= 1
                await infer(requests[i % len(requests)], timeout=10)
                i += IN_FLIGHT

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(IN_FLIGHT)))
        return time.process_time() - cpu, time.perf_counter() - wall


async def engine_run(target: str, spec: AgentSpec) -> tuple[float, float, int]:
    """(cpu seconds, wall seconds, requests) for one LoadEngine run."""
    probe = Target(target)
    tensors = await probe.describe("mnist", "", 10)
    payloads = build_payloads(load_sample(), tensors)
    for p in payloads[:50]:
        await probe.infer(p.request, 10)
    requests = 0
    cpu, wall = time.process_time(), time.perf_counter()
    async for report in LoadEngine(spec, probe.infer, payloads, tensors).run():
        requests += sum(report.status_counts.values())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await probe.close()
    return cpu, wall, requests


def h2load_run(target: str, request: bytes, n: int) -> tuple[float, float] | None:
    """(cpu seconds, wall seconds) of h2load sending n gRPC-framed requests, or None."""
    exe = shutil.which("h2load")
    if exe is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as body:
        body.write(b"\x00" + struct.pack(">I", len(request)) + request)  # gRPC message frame
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    out = subprocess.run(
        [
            exe,
            "-n",
            str(n),
            "-c",
            "1",
            "-m",
            str(IN_FLIGHT),
            "-t",
            "1",
            "-d",
            body.name,
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            f"http://{target}{MODEL_INFER}",
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.unlink(body.name)
    if out.returncode != 0 or f"{n} succeeded" not in out.stdout:
        print(f"  h2load failed: {out.stdout[-400:]} {out.stderr[-400:]}")
        return None
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    n = args.requests
    server = Child(python("-m", "tests.support.fake_server"))
    port = server.wait_for_line(r"READY port=(\d+)").group(1)
    target = f"127.0.0.1:{port}"
    try:

        async def python_clients():
            probe = Target(target)
            tensors = await probe.describe("mnist", "", 10)
            requests = [p.request for p in build_payloads(load_sample(), tensors)]
            await probe.close()
            bare = await bare_loop(target, requests, n)
            closed = await engine_run(
                target,
                AgentSpec(
                    run_id="b",
                    agent_index=0,
                    target=target,
                    load_model="closed",
                    concurrency=IN_FLIGHT,
                    max_requests=n,
                    duration_s=600,
                ),
            )
            rate = 0.6 * n / bare[1]  # 60% of what the bare loop reached
            opened = await engine_run(
                target,
                AgentSpec(
                    run_id="b",
                    agent_index=0,
                    target=target,
                    rate=rate,
                    max_requests=n,
                    duration_s=600,
                ),
            )
            return requests[0], bare, closed, opened, rate

        request, bare, closed, opened, rate = asyncio.run(python_clients())
        h2 = h2load_run(target, request, n)
    finally:
        server.stop()

    def us(cpu: float, count: int) -> float:
        return cpu / count * 1e6

    bare_us = us(bare[0], n)
    print(
        f"client CPU per request, {n} requests, {IN_FLIGHT} in flight, "
        "fake server in its own process"
    )
    print(f"  bare grpc.aio loop         {bare_us:7.1f} µs   ({n / bare[1]:7.0f} req/s)")
    c_us = us(closed[0], closed[2])
    print(
        f"  engine, closed loop        {c_us:7.1f} µs   ({closed[2] / closed[1]:7.0f} req/s)  "
        f"{c_us / bare_us:.2f}x bare"
    )
    o_us = us(opened[0], opened[2])
    print(
        f"  engine, open loop {rate:5.0f}/s {o_us:7.1f} µs   ({opened[2] / opened[1]:7.0f} req/s)  "
        f"{o_us / bare_us:.2f}x bare"
    )
    if h2 is None:
        print("  h2load                     not installed (Debian: nghttp2-client)")
    else:
        h_us = us(h2[0], n)
        print(
            f"  h2load (native floor)      {h_us:7.1f} µs   ({n / h2[1]:7.0f} req/s)  "
            f"bare is {bare_us / h_us:.1f}x h2load"
        )


if __name__ == "__main__":
    main()
