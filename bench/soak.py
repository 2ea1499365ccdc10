"""`make soak`: a long run at a constant feasible rate, watching memory for leaks.

Runs the bundled MNIST server with agents on an embedded Ray for `--duration` (10 minutes
by default) at `--rate`, samples the resident memory (RSS) of the coordinator (this
process), every agent and the model server once per second, and prints each one's growth
over the run after the warm-up (goal: <= 5%). The samples go to `<out>/rss.csv`.

Growth compares the *peak* RSS of the last third of the measured time with the peak of
the first third: a leak raises both the peaks and the floor, while Python's allocator
makes RSS a sawtooth (the coordinator's swings by about 15% every few minutes), which
moves a median of a short window by more than any trend. The least-squares slope over
the whole measured time is printed beside it. The load's warm-up and 15 s more are
excluded. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coordinator.plan import FleetPlan, LoadPlan, OutputPlan, Plan  # noqa: E402
from coordinator.run import Run, RunOptions  # noqa: E402


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def soak(args: argparse.Namespace) -> int:
    out = Path(args.out)
    plan = Plan(
        name="soak",
        load=LoadPlan(rate=args.rate, warmup_s=args.warmup, duration_s=args.duration),
        fleet=FleetPlan(agents=args.agents),
        outputs=OutputPlan(dir=str(out), metrics_port=0),
    )
    run = Run(plan, RunOptions())
    task = asyncio.ensure_future(run.execute())
    samples: list[dict[str, float]] = []
    start = time.monotonic()
    while not task.done():
        await asyncio.sleep(1.0)  # the sampling period
        if run.fleet is None:
            continue
        pids = {"coordinator": os.getpid()}
        pids.update({f"agent{w['index']}": w["pid"] for w in run.fleet.where})
        if run.local_server is not None:
            pids["model_server"] = run.local_server.process.pid
        row = {"t": time.monotonic() - start}
        row.update({name: rss for name, pid in pids.items() if (rss := rss_mib(pid)) is not None})
        samples.append(row)
    summary = (await task).summary
    names = sorted({k for row in samples for k in row} - {"t"})
    with open(out / "rss.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["t", *names])
        writer.writeheader()
        writer.writerows(samples)
    measured = [r for r in samples if r["t"] > args.warmup + 15]
    print(
        f"soak: {summary['requests']} requests at {summary['throughput_rps']:.1f}/s over "
        f"{summary['duration_s']:.0f} s, errors {summary['errors']}, p99 "
        f"{summary['latency_s']['p99'] * 1e3:.2f} ms, generator kept up: "
        f"{summary['generator']['kept_up']}"
    )
    worst = 0.0
    for name in names:
        series = [(r["t"], r[name]) for r in measured if name in r]
        growth, first, last, slope = memory_growth(series)
        worst = max(worst, growth)
        print(
            f"  {name:14} peak RSS {first:8.1f} MiB -> {last:8.1f} MiB  growth {growth:+.1%}"
            f"  slope {slope:+.3f} MiB/min"
        )
    print(f"  worst growth {worst:+.1%} (goal <= +5%)")
    return 0 if worst <= 0.05 else 1


def memory_growth(series: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    """(growth, first-third peak, last-third peak, least-squares slope per minute) of
    (seconds, MiB) samples."""
    third = len(series) // 3
    first = max(v for _, v in series[:third])
    last = max(v for _, v in series[-third:])
    ts = [t for t, _ in series]
    vs = [v for _, v in series]
    mean_t, mean_v = statistics.fmean(ts), statistics.fmean(vs)
    var = sum((t - mean_t) ** 2 for t in ts)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in series) / var if var else 0.0
    return (last - first) / first, first, last, slope * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--out", default="results/soak")
    return asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
