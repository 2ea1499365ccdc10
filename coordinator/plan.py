"""A run's plan: what to load, how hard, for how long, with how many agents.

Built from the command line (plan files come later), validated completely before anything
starts; every problem is a `PlanError` that names the field and what is allowed. The plan
also splits the fleet's load into per-agent `AgentSpec`s.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from agents.spec import AgentSpec, LoadModel
from coordinator.errors import PlanError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str | float, field: str) -> float:
    """'30s', '500ms', '2m', '1h' or a number of seconds → seconds (> 0)."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if not match:
            raise PlanError(field, f"{text!r} is not a duration; use e.g. 500ms, 30s, 2m, 1h")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not (seconds > 0 and math.isfinite(seconds)):
        raise PlanError(field, f"must be a positive duration, got {text!r}")
    return seconds


def parse_target(text: str, field: str = "target") -> str:
    """HOST:PORT (IPv6 as [::1]:PORT) → the same text, checked."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PlanError(field, f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8001)")
    return text


@dataclass(frozen=True)
class Plan:
    """The fleet-wide run. `rate` is the fleet's total; agents share it evenly."""

    agents: int = 1
    rate: float | None = None
    concurrency: int | None = None
    duration_s: float | None = 30.0
    max_requests: int | None = None
    target: str | None = None  # None: start the bundled model server
    model_name: str = "mnist"
    model_version: str = ""
    batch_size: int = 1
    timeout_s: float = 10.0
    interval_s: float = 1.0
    max_in_flight: int = 1000
    check_fraction: float = 0.1
    seed: int = 0
    name: str = "adhoc"

    @property
    def load_model(self) -> LoadModel:
        return "closed" if self.concurrency is not None else "open"

    def validate(self) -> Plan:
        """Raise PlanError for the first invalid field; return self when all is well."""
        if self.agents < 1:
            raise PlanError("agents", f"must be >= 1, got {self.agents}")
        if self.rate is not None and self.concurrency is not None:
            raise PlanError(
                "rate/concurrency", "give one: --rate (open loop) or --concurrency (closed loop)"
            )
        if self.rate is None and self.concurrency is None:
            raise PlanError(
                "rate/concurrency", "give --rate RPS (open loop) or --concurrency N (closed loop)"
            )
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise PlanError("rate", f"must be a positive number of requests/s, got {self.rate}")
        if self.concurrency is not None and self.concurrency < 1:
            raise PlanError("concurrency", f"must be >= 1, got {self.concurrency}")
        if self.duration_s is None and self.max_requests is None:
            raise PlanError("duration", "give --duration or --requests (or both)")
        if self.duration_s is not None and not self.duration_s > 0:
            raise PlanError("duration", f"must be > 0, got {self.duration_s}")
        if self.max_requests is not None and self.max_requests < self.agents:
            raise PlanError(
                "requests",
                f"must be >= the number of agents ({self.agents}), got {self.max_requests}",
            )
        if self.target is not None:
            parse_target(self.target)
        if self.batch_size < 1:
            raise PlanError("batch_size", f"must be >= 1, got {self.batch_size}")
        if not self.timeout_s > 0:
            raise PlanError("timeout", f"must be > 0, got {self.timeout_s}")
        if not self.interval_s > 0:
            raise PlanError("interval", f"must be > 0, got {self.interval_s}")
        if self.max_in_flight < 1:
            raise PlanError("max_in_flight", f"must be >= 1, got {self.max_in_flight}")
        if not 0 <= self.check_fraction <= 1:
            raise PlanError("check_fraction", f"must be between 0 and 1, got {self.check_fraction}")
        return self

    def agent_specs(self, run_id: str, target: str) -> list[AgentSpec]:
        """Split the fleet's load: rate and request count evenly, concurrency per agent."""
        specs = []
        for i in range(self.agents):
            max_requests = None
            if self.max_requests is not None:
                # The first (max_requests % agents) agents take one more, so the sum is exact.
                max_requests = self.max_requests // self.agents + (
                    i < self.max_requests % self.agents
                )
            specs.append(
                AgentSpec(
                    run_id=run_id,
                    agent_index=i,
                    target=target,
                    model_name=self.model_name,
                    model_version=self.model_version,
                    load_model=self.load_model,
                    rate=None if self.rate is None else self.rate / self.agents,
                    concurrency=self.concurrency,
                    duration_s=self.duration_s,
                    max_requests=max_requests,
                    interval_s=self.interval_s,
                    timeout_s=self.timeout_s,
                    batch_size=self.batch_size,
                    max_in_flight=self.max_in_flight,
                    check_fraction=self.check_fraction,
                    seed=self.seed + i,
                )
            )
        return specs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
