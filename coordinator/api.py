"""The Python API: run a plan from a script or a notebook, with the CLI's validation and
results.

    from coordinator.api import run
    result = run({"target": {"address": "127.0.0.1:8001"},
                  "load": {"rate": 200, "duration": "30s"}, "fleet": {"agents": 2}})
    print(result.summary["latency_s"]["p99"], result.out_dir)

`run` blocks until the run is over; inside a running event loop (Jupyter) it runs the
load test on a thread of its own. `run_async` is the coroutine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

from coordinator.plan import Plan, load_plan_file, plan_from_mapping
from coordinator.progress import PlainProgress, Progress
from coordinator.run import Run, RunOptions, RunResult

__all__ = ["Plan", "RunResult", "as_plan", "run", "run_async"]


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
