"""`Run`: the one object that wires a load test together.

It owns the results writer, the /metrics exporter, the bundled model server (when the
plan names no target), the Ray connection and the agents; it consumes the agents' report
streams, writes each report to disk before merging it, and tears everything down in
reverse order whatever happens. Ctrl-C (SIGINT) or SIGTERM stops the agents and still
writes the summary of what was received (`interrupted: true`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agents.spec import AgentSpec
from agents.target import Target, TargetError
from coordinator import cluster
from coordinator.errors import PlanError, ResultsUnwritable, TargetUnavailable
from coordinator.exporter import RunInfo, fleet_registry, serve_metrics
from coordinator.local_server import LocalServer, start_local_server
from coordinator.merge import FleetState
from coordinator.plan import Plan
from coordinator.progress import PlainProgress, Progress
from coordinator.results import PLAN, SUMMARY, ResultsWriter
from coordinator.summary import build_summary, run_facts
from coordinator.thresholds import parse_thresholds
from model_server.api.report_pb2 import IntervalReport

log = logging.getLogger(__name__)


def silence_limit(spec: AgentSpec, *, first: bool) -> float:
    """How long an agent may go without a report before it counts as lost: a few
    intervals, or a request's deadline and then some, whichever is longer; the first
    report may also wait for the agent to reach the target."""
    limit = max(5 * spec.interval_s, spec.timeout_s + 3 * spec.interval_s)
    return limit + spec.connect_timeout_s if first else limit


def bounded(fn: Callable[[], object], timeout_s: float, what: str) -> None:
    """Run a teardown step on a daemon thread for at most `timeout_s`: Ray calls block
    when its control plane is gone, and a stuck teardown must not keep the process."""
    failure: list[BaseException] = []

    def call() -> None:
        try:
            fn()
        except Exception as error:  # reported below; teardown goes on
            failure.append(error)

    thread = threading.Thread(target=call, name=f"teardown-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        log.warning("%s did not finish within %.0f s; leaving it", what, timeout_s)
    elif failure:
        log.warning("%s failed: %s", what, failure[0])


def new_run_id(now: Callable[[], float] = time.time) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now()))
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass
class RunOptions:
    """How to run a plan, beyond the plan itself."""

    address: str | None = None  # None: embedded local Ray
    run_id: str | None = None
    target_timeout_s: float = 30.0
    server_args: list[str] = field(default_factory=list)
    handle_signals: bool = False  # SIGINT/SIGTERM stop the run gracefully (the CLI sets it)
    keep_ray: bool = False  # leave a Ray this run started up (for several runs in one process)


@dataclass
class RunResult:
    summary: dict[str, Any]
    out_dir: Path
    metrics_port: int | None

    @property
    def agents_lost(self) -> int:
        return int(self.summary["agents_lost"])

    @property
    def interrupted(self) -> bool:
        return bool(self.summary.get("interrupted"))


class Run:
    def __init__(
        self,
        plan: Plan,
        options: RunOptions | None = None,
        *,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.plan = plan.validate()
        self.thresholds = parse_thresholds(plan.thresholds)
        self.options = options or RunOptions()
        self.run_id = self.options.run_id or new_run_id(wall)
        self.out_dir = Path(plan.outputs.dir) if plan.outputs.dir else Path("results") / self.run_id
        self.progress = progress or PlainProgress()
        self.state = FleetState()
        self.lock = threading.Lock()
        self.writer = ResultsWriter(self.out_dir)
        self._clock = clock
        self._wall = wall
        self._stop = asyncio.Event()
        self.metrics_port: int | None = None
        self.local_server: LocalServer | None = None
        self.fleet: cluster.Fleet | None = None
        self.aborted: str | None = None
        self.results_error: str | None = None
        self.info = RunInfo(
            run_id=self.run_id,
            plan=plan.name,
            target=plan.target.address or "bundled",
            load_model=plan.load_model,
            agents=plan.fleet.agents,
            target_rate=plan.load.rate,
        )

    def stop(self) -> None:
        """Ask the run to stop early (thread-safe from the event loop's thread)."""
        self._stop.set()

    async def execute(self) -> RunResult:
        async with AsyncExitStack() as stack:
            self._open_results(stack)
            self._serve_metrics(stack)
            target = await self._target(stack)

            fleet_plan = self.plan.fleet
            # In this (the main) thread: Ray installs signal handlers only there.
            where, started = cluster.connect(
                self.options.address, agents=fleet_plan.agents, agent_cpus=fleet_plan.agent_cpus
            )
            log.info("using %s", where)
            if started and not self.options.keep_ray:
                stack.callback(bounded, cluster.disconnect, 30.0, "Ray shutdown")
            # After Ray: ray.init installs its own SIGTERM handler, which would kill the run.
            if self.options.handle_signals:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self.stop)
                    stack.callback(loop.remove_signal_handler, sig)
            fleet = await cluster.place_agents(
                fleet_plan.agents,
                agent_cpus=fleet_plan.agent_cpus,
                strategy=fleet_plan.placement,
                node_resource=fleet_plan.node_resource,
                avoid_head=fleet_plan.avoid_head,
            )
            self.fleet = fleet
            stack.callback(bounded, fleet.release, 30.0, "releasing the agents")
            for info in fleet.where:
                agent = self.state.agent(info["index"])
                agent.agent_id, agent.node_id = info["actor_id"], info["node_id"]
                agent.node_ip = info["node_ip"]
            placed = ", ".join(
                f"{w['index']}@{w['node_ip']}/{w['node_id'][:8]}" for w in fleet.where
            )
            log.info("agents on nodes: %s", placed)

            started = self._wall()
            summary = await self._drive(fleet, target)
            summary["started_unix_s"] = started
            if self.results_error is None:
                self.writer.write_json(SUMMARY, summary)
            else:
                raise ResultsUnwritable(
                    f"results could not be written to {self.out_dir}: {self.results_error}; "
                    f"the run was stopped after {summary['requests']} requests"
                )
            linger = self.plan.outputs.linger_s
            if linger > 0 and self.metrics_port is not None and not self._stop.is_set():
                # Let the last scrape see final values; a signal cuts it short.
                await asyncio.wait({asyncio.ensure_future(self._stop.wait())}, timeout=linger)
            return RunResult(summary=summary, out_dir=self.out_dir, metrics_port=self.metrics_port)
        raise AssertionError("unreachable")

    # -- set-up steps ------------------------------------------------------------------

    def _open_results(self, stack: AsyncExitStack) -> None:
        try:
            self.writer.open()
            self.writer.write_json(PLAN, {"run_id": self.run_id, **self.plan.to_dict()})
        except OSError as error:
            self._close_results()
            raise PlanError(
                "outputs.dir", f"cannot write results to {self.out_dir}: {error.strerror or error}"
            ) from error
        stack.callback(self._close_results)

    def _close_results(self) -> None:
        try:
            self.writer.close()
        except OSError as error:  # already reported when a write failed
            log.debug("closing the results: %s", error)

    def _serve_metrics(self, stack: AsyncExitStack) -> None:
        out = self.plan.outputs
        if out.metrics_port is None:
            return
        registry = fleet_registry(self.state, self.info, self.lock)
        try:
            server, self.metrics_port = serve_metrics(
                registry, port=out.metrics_port, host=out.metrics_host
            )
        except OSError as error:
            raise PlanError(
                "outputs.metrics_port",
                f"cannot serve /metrics on {out.metrics_host}:{out.metrics_port}: {error.strerror}",
            ) from error
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        log.info("metrics on http://%s:%d/metrics", out.metrics_host, self.metrics_port)

    async def _target(self, stack: AsyncExitStack) -> str:
        target = self.plan.target.address
        if target is None:
            log_path = self.out_dir / "model_server.log"
            log.info("starting the bundled model server (log: %s)", log_path)
            self.local_server = await asyncio.to_thread(
                start_local_server, log_path, extra_args=self.options.server_args
            )
            stack.callback(self.local_server.stop)
            target = self.local_server.address
            self.info.target = target
        t = self.plan.target
        probe = Target(target, tls=self.plan.tls(), metadata=self.plan.metadata())
        try:
            await probe.describe(
                t.model,
                t.version,
                self.options.target_timeout_s,
                input_name=t.input,
                output_name=t.output,
                datatype=t.datatype,
            )
        except TargetError as error:
            raise TargetUnavailable(str(error)) from error
        finally:
            await probe.close()
        return target

    # -- the run -----------------------------------------------------------------------

    async def _drive(self, fleet: cluster.Fleet, target: str) -> dict[str, Any]:
        import ray

        writer = self.writer
        specs = self.plan.agent_specs(self.run_id, target)
        start = self._clock()
        self.info.phase = "running"
        self.progress.start()

        async def consume(index: int, actor: Any, spec: AgentSpec) -> None:
            stream = actor.run.remote(spec.to_dict())
            limit = silence_limit(spec, first=True)
            try:
                while True:
                    try:
                        ref = await asyncio.wait_for(stream.__anext__(), limit)
                    except StopAsyncIteration:
                        return
                    report = IntervalReport.FromString(await asyncio.wait_for(ref, limit))
                    limit = silence_limit(spec, first=False)
                    try:
                        writer.append(report)  # on disk before it is counted anywhere
                    except OSError as error:
                        self._results_failed(error)
                        return
                    with self.lock:
                        self.state.add(report)
            except TimeoutError:
                # A hung actor, or a Ray that went away under us: the run must not hang too.
                reason = f"no report for {limit:.0f} s"
            except ray.exceptions.RayError as error:
                text = str(error).strip()
                reason = text.splitlines()[-1][:300] if text else type(error).__name__
            elapsed = self._clock() - start
            log.error("agent %d lost at %.1f s: %s", index, elapsed, reason)
            with self.lock:
                self.state.mark_lost(index, reason, at_unix_s=self._wall())
            replacement = self._replacement(spec, elapsed)
            if replacement is not None and not self._stop.is_set():
                try:
                    actor = await cluster.replace_agent(
                        fleet, index, agent_cpus=self.plan.fleet.agent_cpus
                    )
                except Exception as error:  # the run goes on without it
                    log.error("agent %d could not be replaced: %s", index, error)
                    return
                with self.lock:
                    self.state.mark_replaced(index, fleet.where[index]["actor_id"])
                log.warning(
                    "agent %d replaced on node %s for the remaining %.1f s",
                    index,
                    fleet.where[index]["node_ip"],
                    replacement.duration_s or 0,
                )
                await consume(index, actor, replacement)

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.plan.load.interval_s)
                elapsed = self._clock() - start
                with self.lock:
                    self.progress.update(self.state, elapsed, self.info.phase)
                    self._check_abort(elapsed, target)

        consumers = [
            asyncio.ensure_future(consume(i, a, specs[i])) for i, a in enumerate(fleet.actors)
        ]
        ticker = asyncio.ensure_future(tick())
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait(
                [stopper, asyncio.gather(*consumers)], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            interrupted = self._stop.is_set()
            if interrupted:
                log.warning("stopping: the agents are told to stop; what was received is kept")
            for task in (*consumers, ticker, stopper):
                task.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
            self.info.phase = "finished"
            with self.lock:
                self.progress.update(self.state, self._clock() - start, self.info.phase)
            self.progress.stop()

        with self.lock:
            summary = build_summary(
                self.state,
                run=self._run_facts(target),
                max_send_lag_s=self.plan.load.max_send_lag_s,
                thresholds=self.thresholds,
            )
        summary["interrupted"] = interrupted and self.aborted is None
        summary["aborted"] = self.aborted
        return summary

    def _results_failed(self, error: OSError) -> None:
        """The results folder stopped taking writes (disk full, removed, read-only): stop
        the run cleanly rather than measure what cannot be kept."""
        if self.results_error is None:
            self.results_error = error.strerror or str(error)
            log.error(
                "cannot write results to %s: %s; stopping the run", self.out_dir, self.results_error
            )
        self._stop.set()

    def _replacement(self, spec: AgentSpec, elapsed_s: float) -> AgentSpec | None:
        """What a replacement for a lost agent should run, or None (continue without it).

        It takes over the lost agent's share for the rest of the schedule: constant-rate
        and closed loops only (a ramp cannot be resumed midway), and only if at least one
        interval is left.
        """
        if self.plan.fleet.on_agent_loss != "replace" or spec.stages or spec.duration_s is None:
            return None
        remaining = spec.warmup_s + spec.duration_s - elapsed_s
        if remaining < spec.interval_s or spec.max_requests is not None:
            return None
        warmup = max(0.0, spec.warmup_s - elapsed_s)
        return replace(spec, warmup_s=warmup, duration_s=remaining - warmup, seed=spec.seed + 7919)

    def _check_abort(self, elapsed_s: float, target: str) -> None:
        """With `abort_on_fail`, stop the run once a threshold fails over the measured data
        (after five intervals of it, so early noise does not decide)."""
        if not (self.plan.abort_on_threshold and self.thresholds) or self.aborted:
            return
        if elapsed_s < self.plan.load.warmup_s + 5 * self.plan.load.interval_s:
            return
        summary = build_summary(self.state, run={}, thresholds=self.thresholds)
        failed = [v for v in summary["thresholds"] if not v["passed"]]
        if failed and self.state.requests:
            self.aborted = f"threshold failed: {failed[0]['rule']} (actual {failed[0]['actual']})"
            log.error("aborting: %s", self.aborted)
            self._stop.set()

    def _run_facts(self, target: str) -> dict[str, Any]:
        accuracy = self.local_server.holdout_accuracy if self.local_server else None
        return run_facts(self.plan, self.run_id, target, accuracy)
