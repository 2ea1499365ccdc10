"""What one agent is asked to do: plain, picklable data that crosses Ray to the actor."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from agents.pacing import (
    Closed,
    ConstantProfile,
    Limits,
    OpenLoop,
    PoissonArrivals,
    Stage,
    StagesProfile,
    UniformArrivals,
    stages_duration,
)

LoadModel = Literal["open", "closed"]
Arrival = Literal["constant", "poisson"]


@dataclass(frozen=True)
class TlsConfig:
    """PEM contents (not paths: agents may run on nodes that do not have the files)."""

    ca_pem: bytes | None = None  # trust these roots instead of the system's
    cert_pem: bytes | None = None  # client certificate, for mutual TLS
    key_pem: bytes | None = None
    server_name: str = ""  # override the name checked against the server's certificate


@dataclass(frozen=True)
class AgentSpec:
    """One agent's share of a run. `rate` and stage rates are this agent's share."""

    run_id: str
    agent_index: int
    target: str
    model_name: str = "mnist"
    model_version: str = ""
    load_model: LoadModel = "open"
    arrival: Arrival = "constant"
    rate: float | None = None
    concurrency: int | None = None
    # Ramping: (duration_s, target) pairs; the target is a rate (open) or a concurrency
    # (closed), starting from `rate` / `concurrency` (0 when not given).
    stages: tuple[tuple[float, float], ...] = ()
    warmup_s: float = 0.0
    duration_s: float | None = None  # measured time after warm-up; with stages, ignored
    max_requests: int | None = None
    interval_s: float = 1.0
    timeout_s: float = 10.0
    batch_size: int = 1
    max_in_flight: int = 1000
    max_send_lag_s: float = 0.050
    precise_timer: bool = True  # see LoadEngine._wait and agents/timer.py
    check_fraction: float = 0.1
    seed: int = 0  # shuffles the digits and seeds Poisson gaps; the plan gives each agent its own
    digits: Literal["cycle", "sample"] = "cycle"
    datatype: str = ""  # "" : as the model's metadata says; or FP32 / UINT8
    contents: Literal["raw", "typed"] = "raw"
    input_name: str = ""  # "" : discovered from the model's metadata
    output_name: str = ""
    tls: TlsConfig | None = None
    metadata: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold secrets
    connect_timeout_s: float = 15.0

    @property
    def stage_list(self) -> tuple[Stage, ...]:
        return tuple(Stage(duration_s=d, target=t) for d, t in self.stages)

    @property
    def run_length_s(self) -> float | None:
        """The whole schedule, warm-up included (None: only a request count ends it)."""
        if self.stages:
            return stages_duration(self.stage_list)
        if self.duration_s is None:
            return None
        return self.warmup_s + self.duration_s

    def pacer(self) -> OpenLoop | Closed:
        limits = Limits(duration_s=self.run_length_s, max_requests=self.max_requests)
        if self.load_model == "open":
            if self.stages:
                profile = StagesProfile(self.stage_list, start=self.rate or 0.0)
            elif self.rate is None:
                raise ValueError("an open-loop agent needs a rate or stages")
            else:
                profile = ConstantProfile(self.rate)
            arrivals = (
                PoissonArrivals(self.seed) if self.arrival == "poisson" else UniformArrivals()
            )
            return OpenLoop(profile=profile, arrivals=arrivals, limits=limits)
        if self.concurrency is None and not self.stages:
            raise ValueError("a closed-loop agent needs a concurrency or stages")
        return Closed(concurrency=self.concurrency or 0, limits=limits, stages=self.stage_list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentSpec:
        data = dict(data)
        if data.get("tls") is not None:
            data["tls"] = TlsConfig(**data["tls"])
        data["stages"] = tuple(tuple(s) for s in data.get("stages", ()))
        data["metadata"] = tuple(tuple(m) for m in data.get("metadata", ()))
        return cls(**data)
