"""The run over time, for the report's plots: the fleet's intervals gathered into time bins.

Pure: a function of the reports, in any order. Each agent reports on its own interval
boundaries, so the fleet's series bins them: bins of the plan's interval width from the
start of the measured window, an agent-interval belonging to the bin its midpoint falls
in (the last bin, stretched to the window's end, takes an agent's short final interval).
Histograms in a bin are merged exactly, so a bin's percentiles are those of every request
completed in it. Warm-up intervals are never binned; only their span is kept, to be
shown shaded. Times are seconds since the first interval's start, warm-up included.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from agents.histogram import merge_into, new_histogram
from coordinator.percentiles import values_at
from model_server.api.report_pb2 import IntervalReport

LATENCY_POINTS = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
SEND_LAG_POINTS = {"p99": 99.0, "max": 100.0}


@dataclass
class Bin:
    """The fleet over [start_s, end_s): counts, and percentiles in microseconds."""

    start_s: float
    end_s: float
    requests: int = 0
    status_counts: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    target: float | None = None  # the fleet's scheduled rate (open loop), req/s
    latency_us: dict[str, int] = field(default_factory=dict)  # empty: no request completed
    send_lag_us: dict[str, int] = field(default_factory=dict)

    @property
    def width_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def mid_s(self) -> float:
        return (self.start_s + self.end_s) / 2

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.width_s if self.width_s > 0 else 0.0

    @property
    def errors(self) -> dict[str, int]:
        return {code: n for code, n in sorted(self.status_counts.items()) if code != "OK" and n}


@dataclass
class Timeline:
    origin_unix_s: float  # the first interval's start, warm-up included
    bins: list[Bin]
    warmup: tuple[float, float] | None  # the warm-up's span, shaded in the plots
    window: tuple[float, float] | None  # the measured window

    @property
    def end_s(self) -> float:
        spans = [s for s in (self.warmup, self.window) if s]
        return max((s[1] for s in spans), default=0.0)

    def error_codes(self) -> list[str]:
        return sorted({code for b in self.bins for code in b.errors})


def build_timeline(reports: Iterable[IntervalReport], interval_s: float) -> Timeline:
    reports = list(reports)
    if not reports:
        return Timeline(origin_unix_s=0.0, bins=[], warmup=None, window=None)
    origin = min(r.start_unix_s for r in reports)
    warm = [r for r in reports if r.warmup]
    measured = [r for r in reports if not r.warmup]
    warmup = (0.0, max(r.end_unix_s for r in warm) - origin) if warm else None
    if not measured:
        return Timeline(origin_unix_s=origin, bins=[], warmup=warmup, window=None)
    start = min(r.start_unix_s for r in measured) - origin
    end = max(r.end_unix_s for r in measured) - origin
    count = max(1, round((end - start) / interval_s))
    bins = [
        Bin(start + i * interval_s, end if i == count - 1 else start + (i + 1) * interval_s)
        for i in range(count)
    ]
    latency = [new_histogram() for _ in bins]
    send_lag = [new_histogram() for _ in bins]
    targets: list[dict[int, float]] = [{} for _ in bins]  # agent -> its latest target
    for r in sorted(measured, key=lambda r: r.end_unix_s):
        mid = (r.start_unix_s + r.end_unix_s) / 2 - origin
        i = min(count - 1, max(0, math.floor((mid - start) / interval_s)))
        b = bins[i]
        b.requests += sum(r.status_counts.values())
        b.status_counts.update(r.status_counts)
        b.dropped += r.dropped
        merge_into(latency[i], r.latency_hdr)
        merge_into(send_lag[i], r.send_lag_hdr)
        if r.load_model == "open":
            targets[i][r.agent_index] = r.target
    for b, lat, lag, tgt in zip(bins, latency, send_lag, targets, strict=True):
        b.latency_us = _points(lat, LATENCY_POINTS)
        b.send_lag_us = _points(lag, SEND_LAG_POINTS)
        b.target = sum(tgt.values()) if tgt else None
    return Timeline(origin_unix_s=origin, bins=bins, warmup=warmup, window=(start, end))


def _points(hist: HdrHistogram, points: dict[str, float]) -> dict[str, int]:
    if hist.get_total_count() == 0:
        return {}
    return dict(zip(points, values_at(hist, list(points.values())), strict=True))


def agent_latency(reports: Iterable[IntervalReport]) -> dict[int, HdrHistogram]:
    """Each agent's latency over the measured window (warm-up left out), merged exactly."""
    out: dict[int, HdrHistogram] = {}
    for r in reports:
        if not r.warmup:
            merge_into(out.setdefault(r.agent_index, new_histogram()), r.latency_hdr)
    return out


def percentile_distribution(
    hist: HdrHistogram, ticks_per_half_distance: int = 5, extra: Iterable[float] = ()
) -> list[tuple[float, int]]:
    """(percentile, value) at the percentile ticks of HdrHistogram's distribution (.hgrm)
    and at the `extra` percentiles, 100% excluded (its 1/(1-q) is infinite).

    Values are `get_value_at_percentile`'s, like the summary's, rather than the
    iterator's own (which rounds the other way), so that the curve rises monotonically
    through the summary's p50 ... p99.9.
    """
    if hist.get_total_count() == 0:
        return []
    ticks = {
        item.percentile_level_iterated_to
        for item in hist.get_percentile_iterator(ticks_per_half_distance)
    }
    levels = sorted(p for p in ticks | set(extra) if p < 100.0)
    return list(zip(levels, values_at(hist, levels), strict=True))
