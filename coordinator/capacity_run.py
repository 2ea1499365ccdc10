"""`CapacitySearch`: the capacity search run against a real deployment, trial by trial.

It owns what lasts the whole search: one Ray connection (trials run with `keep_ray`, and
the search shuts down only a Ray it started), the bundled model server when the plan
names no target (started once, not once per trial), the /metrics port (the first trial
binds it, 0 picking a free one, and every later trial binds the same port again; between
two trials it is closed for the moment the next trial takes to start), and the output
folder. Each trial is a `Run` of an open-loop Poisson plan at the probed rate, with the
plan's warm-up (2 s when it has none), in its own folder `trials/NNN-<rate>/`; its
summary and merged histogram become a `Measurement`, `coordinator.capacity.judge` judges
it and `next_step` says what comes next. One line per trial goes to the progress stream.

Outputs: `capacity.json` (the answer, `max_rate_rps`, with its percentiles and confidence
beside it, and every trial), `trials.csv`, `capacity.png` (the latency–throughput curve),
and per trial the run's own results plus `trial.json`.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
from hdrh.histogram import HdrHistogram

from coordinator import cluster
from coordinator.capacity import (
    TRIAL_COLUMNS,
    CapacityResult,
    Finished,
    Measurement,
    Probe,
    Settings,
    Slo,
    Trial,
    judge,
    next_step,
    trial_row,
)
from coordinator.capacity_stats import upper_rank
from coordinator.errors import PlanError, RaysiegeError
from coordinator.local_server import LocalServer, start_local_server
from coordinator.merge import FleetState
from coordinator.percentiles import values_at
from coordinator.plan import Plan, override
from coordinator.run import Run, RunOptions, new_run_id

log = logging.getLogger(__name__)

DEFAULT_WARMUP_S = 2.0
CAPACITY_JSON, TRIALS_CSV, CURVE_PNG = "capacity.json", "trials.csv", "capacity.png"


@dataclass
class SearchOptions:
    """How to run the search, beyond the plan and the settings."""

    address: str | None = None  # None: embedded local Ray
    target_timeout_s: float = 30.0
    server_args: list[str] = field(default_factory=list)  # for the bundled model server
    handle_signals: bool = False  # Ctrl-C stops the trial; the search ends interrupted
    plot: bool = True


class _Quiet:
    """The trials' own per-second progress is left out: the search prints one line each."""

    def start(self) -> None:
        pass

    def update(self, state: FleetState, elapsed_s: float, phase: str) -> None:
        pass

    def stop(self) -> None:
        pass


def count_over(hist: HdrHistogram, slo: Slo) -> int:
    """Requests slower than the SLO's bound. A histogram bucket straddling the bound counts
    as over (its highest equivalent value is what the percentiles report), so this agrees
    with the merged percentile and errs on the server's side of nothing."""
    bound_us = slo.bound_s * 1e6
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    over = 0
    for index in np.flatnonzero(counts).tolist():
        top = hist.get_highest_equivalent_value(hist.get_value_from_index(index))
        if top > bound_us or (top == bound_us and not slo.inclusive):
            over += int(counts[index])
    return over


def measurement_of(
    summary: dict[str, Any], state: FleetState, settings: Settings, probe: Probe, out_dir: Path
) -> Measurement:
    """A trial's figures from its run's summary and merged latency histogram."""
    slo = settings.slo
    n = int(summary["requests"])
    rank = upper_rank(n, slo.quantile, settings.confidence)
    upper = None
    if rank is not None:
        upper = values_at(state.latency, [100.0 * rank / n])[0] / 1e6
    generator = summary["generator"]
    return Measurement(
        rate=probe.rate,
        duration_s=probe.duration_s,
        requests=n,
        over_bound=count_over(state.latency, slo),
        percentile_s=float(summary["latency_s"][slo.metric]),
        errors=int(summary["errors"]),
        sent=int(summary["sent"]),
        dropped=int(summary["dropped"]),
        throughput_rps=float(summary["throughput_rps"]),
        send_lag_p99_s=float(generator["send_lag_p99_s"]),
        send_lag_max_s=float(summary["send_lag_s"]["max"]),
        max_send_lag_s=float(generator["max_send_lag_s"]),
        accuracy=summary["accuracy"]["rate"],
        agents_lost=int(summary["agents_lost"]),
        latency_s=dict(summary["latency_s"]),
        percentile_upper_s=upper,
        out_dir=str(out_dir),
    )


def trial_plan(
    plan: Plan, probe: Probe, out_dir: Path, *, seed: int, metrics_port: int | None
) -> Plan:
    """The plan of one trial: open-loop Poisson at the probed rate for the probed time,
    after the plan's warm-up; the search judges it, so the plan's thresholds are dropped."""
    warmup = plan.load.warmup_s or DEFAULT_WARMUP_S
    trial = override(
        plan,
        "load",
        arrival="poisson",
        rate=probe.rate,
        concurrency=None,
        stages=(),
        closed=False,
        requests=None,
        warmup_s=warmup,
        duration_s=probe.duration_s,
        seed=seed,
    )
    trial = override(trial, "outputs", dir=str(out_dir), metrics_port=metrics_port, linger_s=0.0)
    return replace(trial, thresholds=(), abort_on_threshold=False).validate()


def check_open_loop(plan: Plan) -> None:
    """Capacity trials are open loop at the search's rates: a closed loop or stages in
    the plan would be silently ignored, so they are refused."""
    if plan.load.concurrency is not None or plan.load.closed:
        raise PlanError(
            "load.concurrency", "capacity trials are open loop at the search's rates; remove it"
        )
    if plan.load.stages:
        raise PlanError("load.stages", "capacity trials run at one rate each; remove the stages")


def progress_line(trial: Trial, settings: Settings) -> str:
    m = trial.measurement
    slo = settings.slo
    mark = {"pass": "PASS", "fail": "FAIL", "limited": "GENERATOR BEHIND"}[trial.outcome]
    line = (
        f"trial {trial.index:>2} {trial.phase:7} {m.rate:>9.4g} req/s  {mark:4}  "
        f"{slo.metric} {m.percentile_s * 1e3:.2f} ms (< {slo.bound_s * 1e3:g}), "
        f"{m.over_bound}/{m.requests} over (<= {max(trial.max_over, 0)}), "
        f"errors {m.errors}, {m.achieved_rps:.1f} req/s done, "
        f"send lag p99 {m.send_lag_p99_s * 1e3:.1f} ms"
    )
    if trial.reasons:
        line += f"  [{trial.reasons[0]}]"
    return line


class CapacitySearch:
    def __init__(
        self,
        plan: Plan,
        settings: Settings,
        options: SearchOptions | None = None,
        *,
        stream: IO[str] | None = None,
    ) -> None:
        check_open_loop(plan)
        self.plan = plan.validate()
        self.settings = settings.validate()
        self.options = options or SearchOptions()
        self.stream = stream or sys.stderr
        self.search_id = new_run_id()
        out = plan.outputs.dir or str(Path("results") / f"capacity-{self.search_id}")
        self.out_dir = Path(out)
        self.trials: list[Trial] = []
        self.metrics_port: int | None = plan.outputs.metrics_port
        self.local_server: LocalServer | None = None
        self.interrupted = False
        self.started = time.time()

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    async def execute(self) -> CapacityResult:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "trials").mkdir(exist_ok=True)
        except OSError as error:
            raise PlanError(
                "outputs.dir", f"cannot write results to {self.out_dir}: {error.strerror}"
            ) from error
        self.started = time.time()
        async with AsyncExitStack() as stack:
            target = self._target(stack)
            fleet = self.plan.fleet
            where, ray_started = cluster.connect(
                self.options.address, agents=fleet.agents, agent_cpus=fleet.agent_cpus
            )
            log.info("using %s for every trial", where)
            if ray_started:
                stack.callback(cluster.disconnect)
            s = self.settings
            self._say(
                f"capacity search against {target}: {s.slo.rule}, errors <= "
                f"{s.max_error_rate:.3%}, {s.confidence:.0%} confidence, precision "
                f"{s.precision:.0%}; {fleet.agents} agent(s); results in {self.out_dir}/"
            )
            finished = await self._search(target)
        return self._write(target, finished)

    def _target(self, stack: AsyncExitStack) -> str:
        """The plan's target, or the bundled model server started once for every trial."""
        if self.plan.target.address is not None:
            return self.plan.target.address
        log_path = self.out_dir / "model_server.log"
        log.info("starting the bundled model server for the whole search (log: %s)", log_path)
        self.local_server = start_local_server(log_path, extra_args=self.options.server_args)
        stack.callback(self.local_server.stop)
        return self.local_server.address

    async def _search(self, target: str) -> Finished:
        plan = override(self.plan, "target", address=target)
        while True:
            step = next_step(self.settings, self.trials)
            if isinstance(step, Finished):
                return step
            try:
                trial = await self._trial(plan, step, len(self.trials))
            except RaysiegeError as error:  # the trials so far are kept, then it is raised
                self._write(target, Finished("error", None, f"stopped on an error: {error}"))
                raise
            if trial is None:  # interrupted: the search ends with what it has
                self.interrupted = True
                st = next_step(replace(self.settings, max_trials=len(self.trials)), self.trials)
                return Finished(
                    "interrupted",
                    st.max_rate_rps if isinstance(st, Finished) else None,
                    "interrupted: the search was stopped before it found an answer",
                )
            self.trials.append(trial)
            self._say(progress_line(trial, self.settings))
            self._write_trials()

    async def _trial(self, plan: Plan, probe: Probe, index: int) -> Trial | None:
        folder = self.out_dir / "trials" / f"{index:03d}-{probe.rate:g}"
        trial = trial_plan(
            plan, probe, folder, seed=plan.load.seed + index, metrics_port=self.metrics_port
        )
        options = RunOptions(
            address=self.options.address,
            run_id=f"{self.search_id}-{index:03d}",
            target_timeout_s=self.options.target_timeout_s,
            handle_signals=self.options.handle_signals,
            keep_ray=True,
        )
        run = Run(trial, options, progress=_Quiet())
        result = await run.execute()
        if self.metrics_port == 0 and result.metrics_port is not None:
            self.metrics_port = result.metrics_port  # later trials serve on the same port
            log.info("metrics on port %d for the rest of the search", self.metrics_port)
        if result.interrupted:
            return None
        measurement = measurement_of(result.summary, run.state, self.settings, probe, folder)
        judged = judge(self.settings, index, probe.phase, measurement)
        (folder / "trial.json").write_text(json.dumps(judged.to_dict(), indent=2) + "\n")
        return judged

    def _facts(self, target: str) -> dict[str, Any]:
        server = self.local_server
        return {
            "search_id": self.search_id,
            "target": target,
            "bundled_server": server is not None,
            "server_args": list(self.options.server_args),
            "model_holdout_accuracy": server.holdout_accuracy if server else None,
            "agents": self.plan.fleet.agents,
            "warmup_s": self.plan.load.warmup_s or DEFAULT_WARMUP_S,
            "started_unix_s": self.started,
            "elapsed_s": round(time.time() - self.started, 3),
            "interrupted": self.interrupted,
            "metrics_port": self.metrics_port,
        }

    # -- outputs ---------------------------------------------------------------------------

    def _write_trials(self) -> None:
        with open(self.out_dir / TRIALS_CSV, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=TRIAL_COLUMNS)
            writer.writeheader()
            for trial in self.trials:
                writer.writerow(trial_row(trial))

    def _write(self, target: str, finished: Finished) -> CapacityResult:
        """The search's result as it stands (finished, or stopped on an error), written."""
        result = CapacityResult(
            settings=self.settings,
            finished=finished,
            trials=self.trials,
            out_dir=str(self.out_dir),
            facts=self._facts(target),
        )
        self._write_trials()
        data = result.to_dict()
        if self.options.plot and self.trials:
            from coordinator.capacity_plot import curve_png

            (self.out_dir / CURVE_PNG).write_bytes(curve_png(result))
            data["plot"] = CURVE_PNG
        (self.out_dir / CAPACITY_JSON).write_text(json.dumps(data, indent=2) + "\n")
        return result
