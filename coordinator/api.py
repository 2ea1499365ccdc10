"""The Python API: run a plan from a script or a notebook, with the CLI's validation and
results.

    from coordinator.api import run
    result = run({"target": {"address": "127.0.0.1:8001"},
                  "load": {"rate": 200, "duration": "30s"}, "fleet": {"agents": 2}})
    print(result.summary["latency_s"]["p99"], result.out_dir)

`run` blocks until the run is over; inside a running event loop (Jupyter) it runs the
load test on a thread of its own. `run_async` is the coroutine.

`find_capacity` runs a capacity search (coordinator/capacity.py) the same way:

    from coordinator.api import find_capacity
    result = find_capacity({"fleet": {"agents": 2}}, slo="p99<50ms", out="results/cap")
    print(result.max_rate_rps, result.status, result.to_dict()["answer"]["confidence"])
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import IO, Any

from coordinator.capacity import CapacityResult
from coordinator.plan import Plan, load_plan_file, plan_from_mapping
from coordinator.progress import PlainProgress, Progress
from coordinator.run import Run, RunOptions, RunResult

__all__ = [
    "CapacityResult",
    "Plan",
    "RunResult",
    "as_plan",
    "find_capacity",
    "find_capacity_async",
    "run",
    "run_async",
]


def as_plan(plan: Plan | dict[str, Any] | str | Path) -> Plan:
    """A validated Plan from a Plan, a mapping shaped like a YAML plan, or a plan file."""
    if isinstance(plan, Plan):
        return plan.validate()
    if isinstance(plan, dict):
        return plan_from_mapping(plan).validate()
    return load_plan_file(plan).validate()


async def run_async(
    plan: Plan | dict[str, Any] | str | Path,
    *,
    address: str | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    target_timeout_s: float = 30.0,
) -> RunResult:
    options = RunOptions(address=address, run_id=run_id, target_timeout_s=target_timeout_s)
    return await Run(as_plan(plan), options, progress=progress or PlainProgress()).execute()


def run(
    plan: Plan | dict[str, Any] | str | Path,
    *,
    address: str | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    target_timeout_s: float = 30.0,
) -> RunResult:
    """Run a load test and return its result (summary, results folder, metrics port).

    Raises PlanError (before anything starts), TargetUnavailable or ClusterError.
    """
    coroutine = run_async(
        plan, address=address, run_id=run_id, progress=progress, target_timeout_s=target_timeout_s
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def find_capacity_async(
    plan: Plan | dict[str, Any] | str | Path,
    slo: str | None = None,
    *,
    max_error_rate: float | str | None = None,
    min_accuracy: float | str | None = None,
    confidence: float | str | None = None,
    precision: float | str | None = None,
    start_rate: float | None = None,
    max_rate: float | None = None,
    trial_duration: float | str | None = None,
    confirm_duration: float | str | None = None,
    min_requests: int | None = None,
    max_trials: int | None = None,
    out: str | Path | None = None,
    address: str | None = None,
    server_args: list[str] | None = None,
    target_timeout_s: float = 30.0,
    stream: IO[str] | None = None,
) -> CapacityResult:
    from coordinator.capacity import settings_for
    from coordinator.capacity_run import CapacitySearch, SearchOptions
    from coordinator.plan import override, parse_duration, parse_percent

    if isinstance(plan, dict):
        plan = plan_from_mapping(plan)
    elif not isinstance(plan, Plan):
        plan = load_plan_file(plan)
    if plan.load.rate is None and plan.load.concurrency is None and not plan.load.stages:
        plan = override(plan, "load", rate=1.0)  # every trial sets its own rate
    the_plan = plan.validate()
    if out is not None:
        the_plan = override(the_plan, "outputs", dir=str(out))

    def percent(value: float | str | None, name: str) -> float | None:
        return None if value is None else parse_percent(value, f"capacity.{name}")

    def seconds(value: float | str | None, name: str) -> float | None:
        return None if value is None else parse_duration(value, f"capacity.{name}")

    settings = settings_for(
        the_plan.capacity,
        slo=slo,
        max_error_rate=percent(max_error_rate, "max_error_rate"),
        min_accuracy=percent(min_accuracy, "min_accuracy"),
        confidence=percent(confidence, "confidence"),
        precision=percent(precision, "precision"),
        start_rate=start_rate,
        max_rate=max_rate,
        trial_duration_s=seconds(trial_duration, "trial_duration"),
        confirm_duration_s=seconds(confirm_duration, "confirm_duration"),
        min_requests=min_requests,
        max_trials=max_trials,
    )
    options = SearchOptions(
        address=address, target_timeout_s=target_timeout_s, server_args=list(server_args or [])
    )
    return await CapacitySearch(the_plan, settings, options, stream=stream).execute()


def find_capacity(
    plan: Plan | dict[str, Any] | str | Path,
    slo: str | None = None,
    **settings: Any,
) -> CapacityResult:
    """The highest rate that meets `slo` ('p99<50ms'; or the plan's capacity.slo), found by
    trials on the plan's target and fleet (the bundled model server when it names none).

    Keyword arguments: max_error_rate, min_accuracy, confidence, precision (fractions or
    '0.1%'), start_rate, max_rate, trial_duration, confirm_duration ('10s' or seconds),
    min_requests, max_trials, out (the results folder), address (a Ray cluster),
    server_args (for the bundled server), target_timeout_s, stream (one progress line per
    trial; stderr).
    The result's `max_rate_rps` is the answer; `status` says whether there is one
    ("found"; "generator_limited" asks for more agents). Raises PlanError before anything
    starts, TargetUnavailable or ClusterError.
    """
    coroutine = find_capacity_async(plan, slo, **settings)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
