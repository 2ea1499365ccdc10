"""What one agent is asked to do: plain, picklable data that crosses Ray to the actor."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from agents.pacing import Closed, ConstantRate, Limits

LoadModel = Literal["open", "closed"]


@dataclass(frozen=True)
class AgentSpec:
    """One agent's share of a run. `rate` is this agent's share of the fleet's rate."""

    run_id: str
    agent_index: int
    target: str
    model_name: str = "mnist"
    model_version: str = ""
    load_model: LoadModel = "open"
    rate: float | None = None
    concurrency: int | None = None
    duration_s: float | None = None
    max_requests: int | None = None
    interval_s: float = 1.0
    timeout_s: float = 10.0
    batch_size: int = 1
    max_in_flight: int = 1000
    check_fraction: float = 0.1
    seed: int = 0  # shuffles the digits; the plan gives each agent its own
    connect_timeout_s: float = 15.0

    def pacer(self) -> ConstantRate | Closed:
        limits = Limits(duration_s=self.duration_s, max_requests=self.max_requests)
        if self.load_model == "open":
            if self.rate is None:
                raise ValueError("an open-loop agent needs a rate")
            return ConstantRate(rate=self.rate, limits=limits)
        if self.concurrency is None:
            raise ValueError("a closed-loop agent needs a concurrency")
        return Closed(concurrency=self.concurrency, limits=limits)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
