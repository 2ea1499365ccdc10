"""The model server's figures, measured side by side in one run on this machine.

Prints:
- the in-process throughput of the served model function by batch size (what the
  default max batch size was chosen from);
- saturation: images/s served to many concurrent batch-1 ModelInfer calls (a load
  generator process on the same machine, pre-serialised requests of a real digit),
  divided by the in-process throughput at the batcher's max batch size (the issue's
  goal: >= 0.5); for scale, the same load against a server that runs no model at all
  (tests/support/fake_server.py), and with batching off;
- low load (one call in flight): p50/p99 with batching on, off, and with a 1 ms timeout;
- `--workers 2` against `--workers 1` at saturation.

All the servers run at once (loopback only, cached model) and the measurements take
turns in rounds, so the machine's background load falls on all of them alike; each
figure is the median of its rounds. Run with `make bench` (or
`python bench/model_server.py`); on a shared 2-core machine single figures move by
10-30% from run to run, the ratios less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model_server.batching import BatchingOptions  # noqa: E402
from model_server.cli import default_intra_op_threads  # noqa: E402
from tests.support.processes import Child, python  # noqa: E402

METHOD = "/inference.GRPCInferenceService/ModelInfer"
READY = r"^READY port=(\d+)"
SATURATION = {"connections": 8, "concurrency": 128, "warmup_s": 2.0, "duration_s": 5.0}
LOW_LOAD = {"connections": 1, "concurrency": 1, "warmup_s": 1.0, "duration_s": 4.0}


# --- in the load generator process ---------------------------------------------------


def one_digit_request() -> bytes:
    """A ModelInfer request for one real digit, raw FP32 [1, 784], serialised once."""
    from model_server.api import grpc_predict_v2_pb2 as pb
    from model_server.data import load_sample

    pixels = load_sample().images[:1].reshape(1, 784).astype("<f4") / 255.0
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 784])
    request.raw_input_contents.append(pixels.tobytes())
    return request.SerializeToString()


async def generate_load(
    port: int, connections: int, concurrency: int, warmup_s: float, duration_s: float
) -> dict[str, float]:
    """Closed loop: `concurrency` calls in flight over `connections` connections; the
    calls that end inside the measurement window count."""
    import grpc
    from hdrh.histogram import HdrHistogram

    payload = one_digit_request()
    channels = [
        # A local subchannel pool: each channel its own connection, so SO_REUSEPORT can
        # spread them over workers.
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(connections)
    ]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 30)
    calls = [channel.unary_unary(METHOD) for channel in channels]
    latency_us = HdrHistogram(1, 60_000_000, 3)
    counts = {"ok": 0, "errors": 0}
    clock = time.perf_counter
    begin = clock() + warmup_s
    end = begin + duration_s

    async def caller(index: int) -> None:
        call = calls[index % connections]
        while (started := clock()) < end:
            try:
                await call(payload, timeout=30)
                ok = True
            except grpc.aio.AioRpcError:
                ok = False
            finished = clock()
            if begin <= started and finished <= end:
                counts["ok" if ok else "errors"] += 1
                if ok:  # the latency of answers; refusals are counted, not timed
                    latency_us.record_value(max(1, round((finished - started) * 1e6)))

    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    for channel in channels:
        await channel.close()
    return {
        "rps": counts["ok"] / duration_s,
        "errors": counts["errors"],
        "p50_ms": latency_us.get_value_at_percentile(50) / 1e3,
        "p99_ms": latency_us.get_value_at_percentile(99) / 1e3,
    }


def in_process_throughput(
    intra_op: int, sizes: list[int], rounds: int = 6, slice_s: float = 0.3
) -> dict[str, float]:
    """Images/s of the served model function called in a loop, by batch size: the
    model's own capacity, with the server's thread settings and nothing else. The sizes
    take turns in short slices and each keeps its best slice: other work on the machine
    can only slow a slice down, never speed it up."""
    from model_server import model
    from model_server.recipe import default_cache_dir, plan_training

    model.configure_threads(intra_op, 1)
    loaded = model.load_or_train(plan_training(), default_cache_dir(), warmup_batches=(1,))
    digits = plan_training().split.test.flat_fp32()
    batches = {size: np.resize(digits, (size, digits.shape[1])) for size in sizes}
    for pixels in batches.values():
        for _ in range(3):  # warm every shape
            loaded.predict(pixels)
    best = dict.fromkeys(sizes, 0.0)
    for _ in range(rounds):
        for size, pixels in batches.items():
            calls, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < slice_s:
                loaded.predict(pixels)
                calls += 1
            best[size] = max(best[size], calls * size / elapsed)
    return {str(size): images for size, images in best.items()}


# --- in the benchmark process ------------------------------------------------------------

CURVE = (1, 8, 32, 64, 128, 256, 512, 1024)
ROUNDS = 3
NO_MODEL = "a server that runs no model"
CORES = len(os.sched_getaffinity(0))


@dataclass
class Server:
    child: Child
    port: int


def start_server(*flags: str, fake: bool = False) -> Server:
    if fake:
        argv = python("-m", "tests.support.fake_server")
    else:
        argv = python("-m", "model_server", "serve", "--port", "0", "--no-metrics", *flags)
    child = Child(argv)
    match = child.wait_for_line(READY, timeout_s=300)
    return Server(child, int(match.group(1)))


def load(server: Server, shape: dict) -> dict[str, float]:
    out = subprocess.run(
        python(__file__, "loadgen", str(server.port), json.dumps(shape)),
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"the load generator failed against port {server.port}:\n{out.stderr[-3000:]}\n"
            f"--- the server's log\n{server.child.text('stderr')[-3000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


# label -> (flags, or None for the no-model server; the loads it is measured under)
CONFIGS: dict[str, tuple[list[str] | None, tuple[str, ...]]] = {
    "defaults": ([], ("low", "saturation")),
    "--no-batching": (["--no-batching"], ("low", "saturation")),
    "--batch-timeout-us 1000": (["--batch-timeout-us", "1000"], ("low", "saturation")),
    f"--intra-op-threads {CORES}": (["--intra-op-threads", str(CORES)], ("low", "saturation")),
    "--batch-threads 2 --intra-op-threads 1": (
        ["--batch-threads", "2", "--intra-op-threads", "1"],
        ("saturation",),
    ),
    "--workers 2": (["--workers", "2"], ("saturation",)),
    NO_MODEL: (None, ("saturation",)),
}


def main() -> None:
    shapes = {"low": LOW_LOAD, "saturation": SATURATION}
    # Every server runs at once, idle but for the one under load, and the measurements
    # take turns in rounds, so a change in the machine's background load touches them
    # all alike; each figure is the median of its rounds.
    with tempfile.TemporaryDirectory() as cache:
        os.environ["RAYSIEGE_CACHE_DIR"] = cache
        # The first start trains the model into the cache; the figures use later starts.
        start_server().child.stop()
        servers: dict[str, Server] = {}
        try:
            for name, (flags, _) in CONFIGS.items():
                servers[name] = start_server(*(flags or []), fake=flags is None)
            inproc = json.loads(
                subprocess.run(
                    python(
                        __file__, "inprocess", str(default_intra_op_threads(1)), *map(str, CURVE)
                    ),
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.splitlines()[-1]
            )
            rounds: dict[tuple[str, str], list[dict[str, float]]] = {}
            for _ in range(ROUNDS):
                for name, (_, kinds) in CONFIGS.items():
                    for kind in kinds:
                        result = load(servers[name], shapes[kind])
                        rounds.setdefault((name, kind), []).append(result)
        finally:
            for server in servers.values():
                server.child.stop()
    figures = {key: median_of(results) for key, results in rounds.items()}
    report(BatchingOptions(), CORES, inproc, figures)


def report(
    defaults: BatchingOptions, cores: int, inproc: dict[str, float], figures: dict[tuple, dict]
) -> None:
    print(
        f"model server on {cores} cores; defaults: max batch {defaults.max_batch_size}, "
        f"batch timeout {defaults.batch_timeout_s * 1e6:.0f} µs, "
        f"{defaults.batch_threads} batch thread, {defaults.max_enqueued_batches} enqueued "
        f"batches, {default_intra_op_threads(1)} TensorFlow intra-op thread(s); "
        f"medians of {ROUNDS} rounds"
    )
    peak = max(inproc.values())
    print("in-process: the served model function in a loop, images/s by batch size (best slice)")
    for size in CURVE:
        images = inproc[str(size)]
        print(f"  batch {size:<5d} {images:10.0f}   {images / peak:6.1%} of the best")
    print(
        f"served: saturation = batch-1 calls, {SATURATION['concurrency']} in flight over "
        f"{SATURATION['connections']} connections; low load = 1 call in flight"
    )
    print(f"  {'server':40s} {'saturation/s':>12s} {'low p50 ms':>11s} {'low p99 ms':>11s}")
    for name in CONFIGS:
        saturation = figures.get((name, "saturation"))
        low = figures.get((name, "low"))
        rate = f"{saturation['rps']:12.0f}" if saturation else f"{'':12s}"
        latency = f"{low['p50_ms']:11.3f} {low['p99_ms']:11.3f}" if low else ""
        print(f"  {name:40s} {rate} {latency}")
    served = figures["defaults", "saturation"]["rps"]
    at_max = inproc[str(defaults.max_batch_size)]
    on_low, off_low = figures["defaults", "low"], figures["--no-batching", "low"]

    def ratio(label: str, value: float, note: str = "") -> None:
        print(f"  {label:44s} {value:7.3f}  {note}")

    print("ratios")
    ratio(
        f"served / in-process at max batch {defaults.max_batch_size}",
        served / at_max,
        "(goal >= 0.5)",
    )
    ratio("served / a server that runs no model", served / figures[NO_MODEL, "saturation"]["rps"])
    ratio("batching on / off, saturation", served / figures["--no-batching", "saturation"]["rps"])
    ratio("batching on / off, low-load p50", on_low["p50_ms"] / off_low["p50_ms"])
    ratio("batching on / off, low-load p99", on_low["p99_ms"] / off_low["p99_ms"])
    ratio(
        "--workers 2 / --workers 1, saturation",
        figures["--workers 2", "saturation"]["rps"] / served,
    )
    errors = sum(result["errors"] for result in figures.values())
    print(f"errors during the measurements: {errors:.0f}")


def _command_line() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    loadgen = commands.add_parser("loadgen")
    loadgen.add_argument("port", type=int)
    loadgen.add_argument("shape", type=json.loads)
    inprocess = commands.add_parser("inprocess")
    inprocess.add_argument("intra_op", type=int)
    inprocess.add_argument("sizes", type=int, nargs="+")
    args = parser.parse_args()
    if args.command == "loadgen":
        print(json.dumps(asyncio.run(generate_load(args.port, **args.shape))))
    elif args.command == "inprocess":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        print(json.dumps(in_process_throughput(args.intra_op, args.sizes)))
    else:
        main()


if __name__ == "__main__":
    _command_line()
