"""The fleet's merged state: interval reports from every agent added up exactly.

Pure: no clock, no Ray, no I/O. `FleetState.add(report)` folds one agent's interval in
(histograms merge bucket by bucket, counts add), so the merged percentiles are the ones
a single histogram of every request would give. Exporter, progress and summary read it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from agents.histogram import merge_into, new_histogram
from model_server.api.report_pb2 import IntervalReport

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


@dataclass
class AgentState:
    index: int
    agent_id: str = ""
    node_id: str = ""
    node_ip: str = ""
    requests: int = 0
    status_counts: Counter[str] = field(default_factory=Counter)
    reports: int = 0
    last_seq: int = -1
    finished: bool = False
    lost: bool = False
    lost_reason: str = ""
    in_flight: int = 0
    cpu_s: float = 0.0
    warmup_requests: int = 0
    intervals_behind: int = 0
    lost_at_unix_s: float | None = None
    replaced_by: str = ""


@dataclass
class Degraded:
    """A window in which the fleet ran short of an agent."""

    agent: int
    reason: str
    from_unix_s: float
    to_unix_s: float | None = None  # None: until the end of the run

    def to_dict(self) -> dict[str, object]:
        return {
            "agent": self.agent,
            "reason": self.reason,
            "from_unix_s": self.from_unix_s,
            "to_unix_s": self.to_unix_s,
        }


@dataclass
class FleetState:
    """Everything merged so far; cumulative over the run.

    Warm-up intervals are counted apart (`warmup_*`) and never enter the histograms,
    counts and window that the summary, the percentiles and the verdict are made of.
    """

    latency: HdrHistogram = field(default_factory=new_histogram)
    send_lag: HdrHistogram = field(default_factory=new_histogram)
    status_counts: Counter[str] = field(default_factory=Counter)
    agents: dict[int, AgentState] = field(default_factory=dict)
    sent: int = 0
    dropped: int = 0
    checked: int = 0
    correct: int = 0
    first_start_unix_s: float | None = None
    last_end_unix_s: float | None = None
    reports: int = 0
    intervals: int = 0  # measured (non-warm-up) agent intervals
    intervals_behind: int = 0  # ... in which the agent fell behind its schedule
    loop_lag_max_s: float = 0.0
    cpu_s: float = 0.0
    warmup_requests: int = 0
    warmup_status_counts: Counter[str] = field(default_factory=Counter)
    warmup_end_unix_s: float | None = None
    degraded: list[Degraded] = field(default_factory=list)
    # Spans of time in which requests failed, merged over agents: [from, to, errors, codes]
    error_windows: list[dict[str, Any]] = field(default_factory=list)

    def agent(self, index: int) -> AgentState:
        if index not in self.agents:
            self.agents[index] = AgentState(index=index)
        return self.agents[index]

    def add(self, report: IntervalReport) -> None:
        completed = sum(report.status_counts.values())
        agent = self.agent(report.agent_index)
        agent.agent_id = report.agent_id or agent.agent_id
        agent.node_id = report.node_id or agent.node_id
        agent.reports += 1
        agent.last_seq = report.seq
        agent.in_flight = report.in_flight
        agent.cpu_s += report.cpu_s
        agent.finished = agent.finished or report.final
        for window in self.degraded:  # a replacement reporting ends its predecessor's gap
            if (
                window.agent == report.agent_index
                and window.to_unix_s is None
                and agent.replaced_by
            ):
                window.to_unix_s = report.start_unix_s
        self.reports += 1
        if report.warmup:
            agent.warmup_requests += completed
            self.warmup_requests += completed
            self.warmup_status_counts.update(report.status_counts)
            if self.warmup_end_unix_s is None or report.end_unix_s > self.warmup_end_unix_s:
                self.warmup_end_unix_s = report.end_unix_s
            return
        merge_into(self.latency, report.latency_hdr)
        merge_into(self.send_lag, report.send_lag_hdr)
        self.status_counts.update(report.status_counts)
        self.sent += report.sent
        self.dropped += report.dropped
        self.checked += report.checked
        self.correct += report.correct
        self.intervals += 1
        self.intervals_behind += report.behind
        agent.intervals_behind += report.behind
        self.loop_lag_max_s = max(self.loop_lag_max_s, report.loop_lag_max_s)
        self.cpu_s += report.cpu_s
        if self.first_start_unix_s is None or report.start_unix_s < self.first_start_unix_s:
            self.first_start_unix_s = report.start_unix_s
        if self.last_end_unix_s is None or report.end_unix_s > self.last_end_unix_s:
            self.last_end_unix_s = report.end_unix_s
        agent.requests += completed
        agent.status_counts.update(report.status_counts)
        failed = {code: n for code, n in report.status_counts.items() if code != "OK" and n}
        if failed:
            self._note_errors(report.start_unix_s, report.end_unix_s, failed)

    def _note_errors(self, start: float, end: float, failed: dict[str, int]) -> None:
        """Merge an interval with errors into the window it touches (an outage seen by
        several agents is one window), or open a new one."""
        for window in self.error_windows:
            if start <= window["to_unix_s"] + 0.5 and end >= window["from_unix_s"] - 0.5:
                window["from_unix_s"] = min(window["from_unix_s"], start)
                window["to_unix_s"] = max(window["to_unix_s"], end)
                window["errors"] += sum(failed.values())
                for code, n in failed.items():
                    window["status_counts"][code] = window["status_counts"].get(code, 0) + n
                return
        self.error_windows.append(
            {
                "from_unix_s": start,
                "to_unix_s": end,
                "errors": sum(failed.values()),
                "status_counts": dict(failed),
            }
        )

    def mark_lost(self, index: int, reason: str, at_unix_s: float | None = None) -> None:
        """Agent `index` died: what it sent is kept; the fleet is degraded from now on."""
        agent = self.agent(index)
        agent.lost = True
        agent.lost_reason = reason
        agent.in_flight = 0
        agent.lost_at_unix_s = at_unix_s
        if at_unix_s is not None:
            self.degraded.append(Degraded(agent=index, reason=reason, from_unix_s=at_unix_s))

    def mark_replaced(self, index: int, actor_id: str) -> None:
        """A new actor took over agent `index`; its first report closes the gap."""
        agent = self.agent(index)
        agent.replaced_by = actor_id
        agent.finished = False

    @property
    def is_degraded(self) -> bool:
        return any(w.to_unix_s is None for w in self.degraded)

    # -- derived figures -------------------------------------------------------------

    @property
    def requests(self) -> int:
        return sum(self.status_counts.values())

    @property
    def ok(self) -> int:
        return self.status_counts.get("OK", 0)

    @property
    def errors(self) -> int:
        return self.requests - self.ok

    @property
    def in_flight(self) -> int:
        return sum(a.in_flight for a in self.agents.values() if not a.finished)

    @property
    def window_s(self) -> float:
        """The measurement window: first interval start to last interval end, any agent."""
        if self.first_start_unix_s is None or self.last_end_unix_s is None:
            return 0.0
        return max(0.0, self.last_end_unix_s - self.first_start_unix_s)

    def latency_s(self) -> dict[str, float]:
        """Merged latency percentiles, max, min and mean, in seconds (zeros when empty)."""
        return histogram_summary_s(self.latency)

    def send_lag_s(self) -> dict[str, float]:
        return histogram_summary_s(self.send_lag)


def histogram_summary_s(hist: HdrHistogram) -> dict[str, float]:
    if hist.get_total_count() == 0:
        return {name: 0.0 for name in [*PERCENTILES, "max", "min", "mean"]}
    out = {name: hist.get_value_at_percentile(p) / 1e6 for name, p in PERCENTILES.items()}
    out["max"] = hist.get_max_value() / 1e6
    out["min"] = hist.get_min_value() / 1e6
    out["mean"] = hist.get_mean_value() / 1e6
    return out
