"""Which model-server configuration needs fewer replicas for a traffic forecast?

Plans capacity for two configurations of the bundled MNIST model server with
`coordinator.api.find_capacity` (by default dynamic batching on, and off with
`--no-batching`), then divides a traffic forecast by each one's capacity:

    .venv/bin/python examples/capacity_compare.py --forecast 2000 --slo 'p99<50ms'
    .venv/bin/python examples/capacity_compare.py --forecast 2000 \\
        --config 'one worker=--workers 1' --config 'two workers=--workers 2'

Each search runs on the same fleet (`--agents`) against its own bundled server (started
once per search with the configuration's arguments) and leaves its results in
`--out/<name>/` (capacity.json, trials.csv, capacity.png). A search that the load
generator limited gives only a lower bound on capacity, and says so: run it again with
more agents before trusting its replica count.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from coordinator.api import find_capacity

DEFAULT_CONFIGS = ("batching=", "no batching=--no-batching")


@dataclass(frozen=True)
class Plan:
    name: str
    capacity_rps: float | None
    status: str  # the search's: found, max_rate, generator_limited, ...
    replicas: int | None

    @property
    def exact(self) -> bool:
        """A capacity measured, rather than a lower bound (or nothing)."""
        return self.status == "found"


def replicas_needed(forecast_rps: float, capacity_rps: float | None, headroom: float) -> int | None:
    """Replicas for the forecast when each takes capacity x (1 - headroom); None: unknown."""
    if not capacity_rps or capacity_rps <= 0:
        return None
    return max(1, math.ceil(forecast_rps / (capacity_rps * (1 - headroom))))


def verdict(plans: list[Plan], forecast_rps: float) -> str:
    """One line: which configuration needs fewer replicas, and how sure that is."""
    known = [p for p in plans if p.replicas is not None]
    if not known:
        return "no configuration met the SLO: no replica count can be given"
    best = min(known, key=lambda p: (p.replicas, -(p.capacity_rps or 0)))
    others = [p for p in known if p is not best]
    if others and all(p.replicas == best.replicas for p in others):
        text = f"both need {best.replicas} replica(s) for {forecast_rps:g} requests/s"
    else:
        text = (
            f"{best.name!r} needs fewer replicas: {best.replicas} for {forecast_rps:g} requests/s"
        )
        text += "".join(f" ({p.name!r}: {p.replicas})" for p in others)
    if any(not p.exact for p in plans):
        text += "; a capacity marked 'at least' is a lower bound, so its count may be high"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forecast", type=float, default=1000.0, help="requests/s to serve")
    parser.add_argument("--slo", default="p99<50ms")
    parser.add_argument("--headroom", type=float, default=0.0, help="keep this fraction spare")
    parser.add_argument(
        "--config",
        action="append",
        metavar="NAME=ARGS",
        help="a configuration: name and model-server arguments (repeatable; default: "
        "batching on and off)",
    )
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--trial-duration", default="5s")
    parser.add_argument("--start-rate", type=float, default=100.0)
    parser.add_argument("--precision", default="10%")
    parser.add_argument("--out", type=Path, default=Path("results/capacity-compare"))
    args = parser.parse_args(argv)

    plans = []
    for spec in args.config or DEFAULT_CONFIGS:
        name, _, server_args = spec.partition("=")
        folder = args.out / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "config")
        print(f"== {name}: model-server serve {server_args}".rstrip(), file=sys.stderr)
        result = find_capacity(
            {"fleet": {"agents": args.agents}, "outputs": {"metrics_port": 0}},
            args.slo,
            start_rate=args.start_rate,
            trial_duration=args.trial_duration,
            precision=args.precision,
            server_args=shlex.split(server_args),
            out=folder,
        )
        plans.append(
            Plan(
                name=name,
                capacity_rps=result.max_rate_rps,
                status=result.status,
                replicas=replicas_needed(args.forecast, result.max_rate_rps, args.headroom),
            )
        )
    print(f"capacity under {args.slo}, forecast {args.forecast:g} requests/s:")
    for p in plans:
        capacity = "none" if p.capacity_rps is None else f"{p.capacity_rps:g} requests/s"
        bound = "" if p.exact or p.capacity_rps is None else "at least "
        replicas = "?" if p.replicas is None else str(p.replicas)
        print(f"  {p.name:14} {bound}{capacity} ({p.status}) -> {replicas} replica(s)")
    print(verdict(plans, args.forecast))
    return 0


if __name__ == "__main__":
    sys.exit(main())
