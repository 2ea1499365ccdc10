"""The report's figures: matplotlib, drawn off-screen (Agg), returned as PNG bytes.

Each function takes the timeline (coordinator/timeline.py) or a histogram and returns
one PNG; nothing global is touched (no pyplot, no rcParams). Warm-up is drawn as a shaded
span and never as data; every title states the window its figures cover. Latencies are
histogram microseconds, shown in milliseconds.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from hdrh.histogram import HdrHistogram
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from coordinator.timeline import Timeline, percentile_distribution

WIDTH_IN, DPI = 11.0, 100
COLORS = {"p50": "#1b9e77", "p90": "#7570b3", "p99": "#d95f02", "max": "#e7298a"}
WARMUP_COLOR = "#9e9e9e"
ERROR_COLORS = ["#d62728", "#ff7f0e", "#8c564b", "#bcbd22", "#17becf", "#9467bd"]


def _figure(height_in: float) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI, facecolor="white")
    return out.getvalue()


def _window_text(tl: Timeline) -> str:
    if tl.window is None:
        return "no measured intervals"
    text = f"measured window {tl.window[1] - tl.window[0]:.1f} s"
    if tl.warmup:
        text += f"; warm-up {tl.warmup[1] - tl.warmup[0]:.1f} s shaded, excluded"
    return text


def _time_axes(ax: Axes, tl: Timeline, *, label_x: bool = True) -> None:
    if tl.warmup:
        ax.axvspan(*tl.warmup, color=WARMUP_COLOR, alpha=0.18, lw=0, label="warm-up (excluded)")
    ax.set_xlim(0, max(tl.end_s, 1e-3))
    ax.grid(True, color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    if label_x:
        ax.set_xlabel("seconds since the first interval started")


def _nothing(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#555555")


def _series(tl: Timeline, values: Sequence[float | None]) -> tuple[list[float], list[float]]:
    """Bin midpoints and values, NaN where a bin has none (a gap in the line)."""
    return [b.mid_s for b in tl.bins], [math.nan if v is None else v for v in values]


def throughput_figure(tl: Timeline) -> bytes:
    fig = _figure(5.2)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    fig.suptitle(f"Throughput and errors per second ({_window_text(tl)})", fontsize=11)
    _time_axes(top, tl, label_x=False)
    _time_axes(bottom, tl)
    if tl.bins:
        x, total = _series(tl, [b.throughput_rps for b in tl.bins])
        _, ok = _series(tl, [b.status_counts.get("OK", 0) / b.width_s for b in tl.bins])
        top.plot(x, total, "-o", ms=3, color="#1f77b4", label="completed (any status)")
        top.plot(x, ok, "-", lw=1, color="#2ca02c", label="OK")
        targets = [b.target for b in tl.bins if b.target is not None]
        if targets:
            _, target = _series(tl, [b.target for b in tl.bins])
            top.plot(x, target, "--", lw=1, color="#555555", label="target rate")
        highest = max([b.throughput_rps for b in tl.bins] + targets + [1.0])
        top.set_ylim(0, highest * 1.15)  # headroom: a steady rate is not drawn on the frame
        codes = tl.error_codes()
        base = [0.0] * len(tl.bins)
        for code, color in zip(codes, ERROR_COLORS * len(codes), strict=False):
            rates = [b.errors.get(code, 0) / b.width_s for b in tl.bins]
            bottom.bar(
                [b.start_s for b in tl.bins],
                rates,
                width=[b.width_s * 0.9 for b in tl.bins],
                bottom=base,
                align="edge",
                color=color,
                label=code,
            )
            base = [a + r for a, r in zip(base, rates, strict=True)]
        if not codes:
            _nothing(bottom, "no errors in the measured window")
    else:
        _nothing(top, "no measured intervals")
    top.set_ylabel("requests/s")
    bottom.set_ylabel("errors/s")
    top.legend(loc="lower right", fontsize=8, ncols=4)
    if tl.error_codes():
        bottom.legend(loc="upper right", fontsize=8, ncols=4)
    return _png(fig)


def latency_figure(tl: Timeline) -> bytes:
    fig = _figure(4.0)
    ax = fig.subplots()
    ax.set_title(f"Latency percentiles per second ({_window_text(tl)})", fontsize=11)
    _time_axes(ax, tl)
    points = [b.latency_us for b in tl.bins]
    if any(points):
        for name, color in COLORS.items():
            x, y = _series(tl, [p[name] / 1000 if p else None for p in points])
            ax.plot(x, y, "-o", ms=3, lw=1.4, color=color, label=name)
        lows = [p["p50"] for p in points if p]
        highs = [p["max"] for p in points if p]
        if max(highs) > 50 * max(min(lows), 1):
            ax.set_yscale("log")  # a stall's max would flatten every other line
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            ax.set_ylim(bottom=0)
    else:
        _nothing(ax, "no request completed in the measured window")
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper left", fontsize=8, ncols=5)
    return _png(fig)


def _percentile_label(x: float, _pos: int) -> str:
    """1/(1-q) back to q: 1 -> 0%, 10 -> 90%, 100 -> 99%, 1000 -> 99.9% ..."""
    if x <= 1:
        return "0%"
    nines = round(math.log10(x))
    return f"{100 - 100 / 10**nines:.{max(0, nines - 2)}f}%"


def distribution_figure(hist: HdrHistogram, marks: dict[str, float] | None = None) -> bytes:
    """Latency by percentile on HdrHistogram's log 1/(1-q) axis; `marks` are named
    percentiles (p50, p99 ...) to label, in percent."""
    fig = _figure(4.4)
    ax = fig.subplots()
    total = hist.get_total_count()
    ax.set_title(
        f"Latency by percentile, HdrHistogram ({total} requests in the measured window)",
        fontsize=11,
    )
    marks = {name: p for name, p in (marks or {}).items() if p < 100}
    steps = percentile_distribution(hist, extra=marks.values())  # through the marks
    ax.set_xscale("log")
    ax.grid(True, which="major", color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    if steps:
        max_ms = hist.get_max_value() / 1000
        x = [1 / (1 - q / 100) for q, _ in steps]
        y = [v / 1000 for _, v in steps]
        if y[-1] < max_ms:  # the curve ends at the slowest of N requests, at 1/(1-q) = N
            x, y = [*x, max(x[-1], float(total))], [*y, max_ms]
        ax.plot(x, y, "-", lw=1.6, color="#1f77b4", label="latency")
        ax.axhline(max_ms, ls="--", lw=1, color=COLORS["max"], label=f"max {max_ms:.3f} ms")
        at = dict(steps)
        for name, percentile in marks.items():
            px, ms = 1 / (1 - percentile / 100), at[percentile] / 1000
            ax.plot([px], [ms], "o", ms=5, color=COLORS.get(name, "#333333"))
            ax.annotate(
                f"{name} {ms:.3f} ms",
                (px, ms),
                textcoords="offset points",
                xytext=(5, 6),
                ha="left",
                fontsize=8,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
            )
        # a decade beyond the last point: nothing is drawn on the frame's edge
        ax.set_xlim(1, 10 ** math.ceil(math.log10(max(x) * 1.5)))
        ax.set_ylim(bottom=0, top=max_ms * 1.12)
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.set_xlim(1, 100)
        _nothing(ax, "no request completed in the measured window")
    decades = [10.0**k for k in range(0, 10)]
    ax.xaxis.set_major_locator(FixedLocator(decades))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(_percentile_label))
    ax.set_xlabel("percentile (log scale of 1/(1-q))")
    ax.set_ylabel("latency (ms)")
    return _png(fig)


def send_lag_figure(tl: Timeline, max_send_lag_s: float) -> bytes:
    fig = _figure(4.0)
    ax = fig.subplots()
    ax.set_title(
        f"Send lag: how late the generator sent, per second ({_window_text(tl)})", fontsize=11
    )
    _time_axes(ax, tl)
    points = [b.send_lag_us for b in tl.bins]
    highest = max_send_lag_s * 1000
    if any(points):
        for name in ("p99", "max"):
            x, y = _series(tl, [p[name] / 1000 if p else None for p in points])
            ax.plot(x, y, "-o", ms=3, lw=1.4, color=COLORS[name], label=name)
        highest = max(highest, *(p["max"] / 1000 for p in points if p))
    else:
        _nothing(ax, "no request sent in the measured window")
    ax.axhline(
        max_send_lag_s * 1000,
        ls="--",
        lw=1,
        color="#555555",
        label=f"limit for p99: {max_send_lag_s * 1000:g} ms",
    )
    ax.set_ylim(0, highest * 1.2)  # the limit line and the legend clear of the frame
    ax.set_ylabel("send lag (ms)")
    if any(b.dropped for b in tl.bins):
        dropped = ax.twinx()
        dropped.bar(
            [b.start_s for b in tl.bins],
            [b.dropped for b in tl.bins],
            width=[b.width_s * 0.9 for b in tl.bins],
            align="edge",
            color="#d62728",
            alpha=0.35,
            label="dropped arrivals",
        )
        dropped.set_ylabel("dropped arrivals")
        dropped.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8, ncols=4)
    return _png(fig)
