"""What the coordinator costs per agent-interval report, and how soon a run starts.

1. Merge cost: 64 simulated agents reporting at 1 Hz for 30 intervals, each report a
   realistic encoded HdrHistogram (2,000 lognormal latencies) plus counts. Per report we
   time what the coordinator does with it: parse the bytes, append to the results log
   (flushed), merge into the fleet state; and once per interval a /metrics scrape
   (the exporter's collect over the merged state). Goal: <= 1 ms per report.
2. Start-up: wall time from `coordinator start` (embedded Ray, a fake server as target so
   no model loads) to the first request the fake server answers. Goal: <= 15 s here.

Run with `make bench` or `python bench/coordinator.py`.
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client import generate_latest  # noqa: E402

from agents.histogram import Recorder  # noqa: E402
from coordinator.exporter import RunInfo, fleet_registry  # noqa: E402
from coordinator.merge import FleetState  # noqa: E402
from coordinator.results import ResultsWriter  # noqa: E402
from model_server.api.report_pb2 import IntervalReport  # noqa: E402
from tests.support.processes import Child, coordinator, python  # noqa: E402

AGENTS, INTERVALS, PER_INTERVAL = 64, 30, 2_000


def simulated_reports() -> list[list[bytes]]:
    rng = random.Random(1)
    out = []
    for seq in range(INTERVALS):
        row = []
        for agent in range(AGENTS):
            latency, lag = Recorder(), Recorder()
            for _ in range(PER_INTERVAL):
                latency.record_s(rng.lognormvariate(-6.0, 0.6))
                lag.record_s(rng.expovariate(5_000))
            report = IntervalReport(
                run_id="bench",
                agent_index=agent,
                agent_id=f"actor-{agent}",
                node_id=f"node-{agent % 8}",
                seq=seq,
                start_unix_s=1000.0 + seq,
                end_unix_s=1001.0 + seq,
                status_counts={"OK": PER_INTERVAL - 3, "UNAVAILABLE": 3},
                latency_hdr=latency.take(),
                send_lag_hdr=lag.take(),
                sent=PER_INTERVAL,
                checked=200,
                correct=187,
                cpu_s=0.2,
                load_model="open",
                target_rate=2000.0,
                target=2000.0,
                arrival="constant",
            )
            row.append(report.SerializeToString())
        out.append(row)
    return out


def merge_cost() -> tuple[float, float, float, int]:
    """(ms per report for parse+log+merge, ms per scrape, ms per report overall, bytes)."""
    intervals = simulated_reports()
    state, lock = FleetState(), threading.Lock()
    registry = fleet_registry(
        state,
        RunInfo(run_id="bench", plan="bench", target="t", load_model="open", agents=AGENTS),
        lock,
    )
    with tempfile.TemporaryDirectory() as out:
        writer = ResultsWriter(Path(out))
        writer.open()
        merge_s = scrape_s = 0.0
        for row in intervals:
            start = time.perf_counter()
            for data in row:
                report = IntervalReport.FromString(data)
                writer.append(report)
                with lock:
                    state.add(report)
            merge_s += time.perf_counter() - start
            start = time.perf_counter()
            generate_latest(registry)
            scrape_s += time.perf_counter() - start
        writer.close()
    reports = AGENTS * INTERVALS
    size = sum(len(d) for d in intervals[0]) // AGENTS
    return (
        merge_s / reports * 1e3,
        scrape_s / INTERVALS * 1e3,
        (merge_s + scrape_s) / reports * 1e3,
        size,
    )


def start_to_first_request() -> float:
    """Seconds from launching `coordinator start` to the fake server's first ModelInfer."""
    server = Child(python("-m", "tests.support.fake_server", "--announce-first"))
    port = server.wait_for_line(r"READY port=(\d+)").group(1)
    try:
        with tempfile.TemporaryDirectory() as out:
            start = time.time()
            run = Child(
                coordinator(
                    "start",
                    "--target",
                    f"127.0.0.1:{port}",
                    "--rate",
                    "100",
                    "--duration",
                    "2s",
                    "--out",
                    out,
                    "--metrics-port",
                    "0",
                )
            )
            first = float(
                server.wait_for_line(r"FIRST_CALL unix=([0-9.]+)", timeout_s=120).group(1)
            )
            run.wait(timeout_s=120)
            return first - start
    finally:
        server.stop()


def main() -> None:
    per_report, per_scrape, overall, size = merge_cost()
    print(
        f"coordinator cost, {AGENTS} simulated agents x {INTERVALS} intervals "
        f"of {PER_INTERVAL} requests"
    )
    print(f"  report size (encoded)             {size} bytes")
    print(f"  parse + log (flushed) + merge     {per_report:.3f} ms per report")
    print(f"  /metrics scrape of merged state   {per_scrape:.2f} ms per scrape")
    print(
        f"  total per report (1 scrape/s)     {overall:.3f} ms  "
        f"(goal <= 1 ms: {overall / 1.0:.2f}x of it)"
    )
    first = start_to_first_request()
    print(
        f"start-up: coordinator start -> first request (embedded Ray)  {first:.1f} s  "
        "(goal <= 15 s)"
    )


if __name__ == "__main__":
    main()
