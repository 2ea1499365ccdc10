"""`Run`: the one object that wires a load test together.

It owns the results writer, the /metrics exporter, the bundled model server (when no
target is given), the Ray connection and the agents, consumes the agents' report streams,
merges them, and tears everything down in reverse order whatever happens.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.target import Target, TargetError
from coordinator import cluster
from coordinator.errors import PlanError, TargetUnavailable
from coordinator.exporter import RunInfo, fleet_registry, serve_metrics
from coordinator.local_server import LocalServer, start_local_server
from coordinator.merge import FleetState
from coordinator.plan import Plan
from coordinator.progress import PlainProgress, Progress
from coordinator.results import PLAN, SUMMARY, ResultsWriter
from coordinator.summary import build_summary
from model_server.api.report_pb2 import IntervalReport

log = logging.getLogger(__name__)


def new_run_id(now: Callable[[], float] = time.time) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now()))
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass
class RunOptions:
    """How to run a plan (as opposed to what load to generate)."""

    out_dir: Path | None = None  # default results/<run-id>
    metrics_port: int | None = 9464  # None: no /metrics
    metrics_host: str = "127.0.0.1"
    address: str | None = None  # None: embedded local Ray
    agent_cpus: float = 1.0
    linger_s: float = 0.0
    run_id: str | None = None
    target_timeout_s: float = 30.0
    server_args: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    summary: dict[str, Any]
    out_dir: Path
    metrics_port: int | None

    @property
    def agents_lost(self) -> int:
        return int(self.summary["agents_lost"])


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
        self.options = options or RunOptions()
        self.run_id = self.options.run_id or new_run_id(wall)
        self.out_dir = self.options.out_dir or Path("results") / self.run_id
        self.progress = progress or PlainProgress()
        self.state = FleetState()
        self.lock = threading.Lock()
        self._clock = clock
        self._wall = wall
        self.writer = ResultsWriter(self.out_dir)
        self.metrics_port: int | None = None
        self.local_server: LocalServer | None = None
        self.info = RunInfo(
            run_id=self.run_id,
            plan=plan.name,
            target=plan.target or "bundled",
            load_model=plan.load_model,
            agents=plan.agents,
        )

    async def execute(self) -> RunResult:
        async with AsyncExitStack() as stack:
            writer = self.writer
            try:
                writer.open()
            except OSError as error:
                raise PlanError(
                    "out", f"cannot write results to {self.out_dir}: {error.strerror}"
                ) from error
            stack.callback(writer.close)
            writer.write_json(PLAN, {"run_id": self.run_id, **self.plan.to_dict()})

            if self.options.metrics_port is not None:
                registry = fleet_registry(self.state, self.info, self.lock)
                try:
                    server, self.metrics_port = serve_metrics(
                        registry, port=self.options.metrics_port, host=self.options.metrics_host
                    )
                except OSError as error:
                    where = f"{self.options.metrics_host}:{self.options.metrics_port}"
                    raise PlanError(
                        "metrics_port", f"cannot serve /metrics on {where}: {error.strerror}"
                    ) from error
                stack.callback(server.server_close)
                stack.callback(server.shutdown)
                log.info(
                    "metrics on http://%s:%d/metrics", self.options.metrics_host, self.metrics_port
                )

            target = self.plan.target
            if target is None:
                log.info(
                    "starting the bundled model server (log: %s)", self.out_dir / "model_server.log"
                )
                self.local_server = await asyncio.to_thread(
                    start_local_server,
                    self.out_dir / "model_server.log",
                    extra_args=self.options.server_args,
                )
                stack.callback(self.local_server.stop)
                target = self.local_server.address
                self.info.target = target
            await self._check_target(target)

            # In this (the main) thread: Ray installs signal handlers only there.
            where = cluster.connect(
                self.options.address, agents=self.plan.agents, agent_cpus=self.options.agent_cpus
            )
            log.info("using %s", where)
            if self.options.address is None:
                stack.callback(cluster.disconnect)
            fleet = await cluster.place_agents(self.plan.agents, agent_cpus=self.options.agent_cpus)
            stack.callback(fleet.release)
            for info in fleet.where:
                agent = self.state.agent(info["index"])
                agent.agent_id, agent.node_id, agent.node_ip = (
                    info["actor_id"],
                    info["node_id"],
                    info["node_ip"],
                )
            log.info(
                "agents on nodes: %s",
                ", ".join(f"{w['index']}@{w['node_ip']}" for w in fleet.where),
            )

            started = self._wall()
            summary = await self._drive(fleet, target)
            summary["started_unix_s"] = started
            writer.write_json(SUMMARY, summary)
            if self.options.linger_s > 0 and self.metrics_port is not None:
                await asyncio.sleep(self.options.linger_s)  # let the last scrape see final values
            return RunResult(summary=summary, out_dir=self.out_dir, metrics_port=self.metrics_port)
        raise AssertionError("unreachable")

    async def _check_target(self, target: str) -> None:
        probe = Target(target)
        try:
            await probe.describe(
                self.plan.model_name, self.plan.model_version, self.options.target_timeout_s
            )
        except TargetError as error:
            raise TargetUnavailable(str(error)) from error
        finally:
            await probe.close()

    async def _drive(self, fleet: cluster.Fleet, target: str) -> dict[str, Any]:
        import ray

        writer = self.writer
        specs = self.plan.agent_specs(self.run_id, target)
        start = self._clock()
        self.info.phase = "running"
        self.progress.start()

        async def consume(index: int, actor: Any) -> None:
            try:
                async for ref in actor.run.remote(specs[index].to_dict()):
                    report = IntervalReport.FromString(await ref)
                    writer.append(report)  # on disk before it is counted anywhere
                    with self.lock:
                        self.state.add(report)
            except ray.exceptions.RayError as error:
                reason = (
                    str(error).strip().splitlines()[-1][:300]
                    if str(error).strip()
                    else type(error).__name__
                )
                log.error("agent %d lost at %.1f s: %s", index, self._clock() - start, reason)
                with self.lock:
                    self.state.mark_lost(index, reason)

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.plan.interval_s)
                with self.lock:
                    self.progress.update(self.state, self._clock() - start, self.info.phase)

        ticker = asyncio.ensure_future(tick())
        try:
            await asyncio.gather(*(consume(i, a) for i, a in enumerate(fleet.actors)))
        finally:
            ticker.cancel()
            self.info.phase = "finished"
            with self.lock:
                self.progress.update(self.state, self._clock() - start, self.info.phase)
            self.progress.stop()

        with self.lock:
            run = {
                "run_id": self.run_id,
                "plan": self.plan.name,
                "target": target,
                "load_model": self.plan.load_model,
                "requested": {
                    "agents": self.plan.agents,
                    "rate": self.plan.rate,
                    "concurrency": self.plan.concurrency,
                    "duration_s": self.plan.duration_s,
                    "max_requests": self.plan.max_requests,
                    "batch_size": self.plan.batch_size,
                },
                "model_holdout_accuracy": self.local_server.holdout_accuracy
                if self.local_server
                else None,
            }
            return build_summary(self.state, run=run)
