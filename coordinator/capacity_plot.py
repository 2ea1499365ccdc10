"""The capacity curve: latency against achieved throughput, one point per trial, as PNG.

Drawn off-screen (Agg, no pyplot, nothing global). Each trial is a point at its achieved
throughput (completed requests per second of its measured window) and its SLO
percentile, coloured by outcome, with its p50 beneath; the SLO bound is a horizontal
line and the answer (the knee: the highest rate that met the SLO) a vertical one.
Latency is on a log scale, since past the knee it grows by orders of magnitude.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from coordinator.capacity import CapacityResult

COLORS = {"pass": "#1b9e77", "fail": "#d62728", "limited": "#9e9e9e"}
LABELS = {"pass": "passed", "fail": "failed", "limited": "generator behind"}


def curve_png(result: CapacityResult) -> bytes:
    slo = result.settings.slo
    fig = Figure(figsize=(12.0, 5.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    trials = sorted(result.trials, key=lambda t: (t.rate, t.index))
    pct_ms = [max(t.measurement.percentile_s, 1e-6) * 1e3 for t in trials]
    x = [t.measurement.achieved_rps for t in trials]
    # The lines join one trial per rate (the last, e.g. a confirmation), in rate order.
    last = {t.rate: t for t in trials}
    line = [last[rate] for rate in sorted(last)]
    ax.plot(
        [t.measurement.achieved_rps for t in line],
        [max(t.measurement.percentile_s, 1e-6) * 1e3 for t in line],
        "-",
        color="#555555",
        lw=1,
        alpha=0.6,
        zorder=1,
    )
    p50 = [
        (t.measurement.achieved_rps, t.measurement.latency_s["p50"] * 1e3)
        for t in line
        if t.measurement.latency_s.get("p50")
    ]
    if p50:
        ax.plot(*zip(*p50, strict=True), "--", color="#7570b3", lw=1, label="p50", zorder=1)
    for outcome, color in COLORS.items():
        points = [
            (xi, yi) for xi, yi, t in zip(x, pct_ms, trials, strict=True) if t.outcome == outcome
        ]
        if points:
            ax.scatter(
                *zip(*points, strict=True),
                color=color,
                s=36,
                zorder=3,
                label=f"{slo.metric}, trial {LABELS[outcome]}",
            )
    for t, xi, yi in zip(trials, x, pct_ms, strict=True):
        ax.annotate(f"{t.rate:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axhline(slo.bound_s * 1e3, color="#d95f02", lw=1.5, label=f"SLO {slo.rule}")
    answer = result.answer
    if answer is not None:
        knee = answer.measurement
        ax.axvline(
            knee.achieved_rps,
            color="#1b9e77",
            lw=1.5,
            ls=":",
            label=f"knee: {result.max_rate_rps:g} req/s scheduled\n"
            f"({knee.achieved_rps:.1f} achieved, {slo.metric} {knee.percentile_s * 1e3:.1f} ms,\n"
            f"{answer.confidence:.1%} confidence)",
        )
    ax.set_yscale("log")
    ax.set_xlabel("achieved throughput (completed requests/s, measured window)")
    ax.set_ylabel("latency (ms, from intended send time)")
    verdict = (
        f"max rate {result.max_rate_rps:g} req/s"
        if result.max_rate_rps is not None
        else "no answer"
    )
    ax.set_title(
        f"Capacity under {slo.rule}: {verdict} ({result.status}, {len(result.trials)} trials)",
        fontsize=11,
    )
    ax.grid(True, which="both", color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    out = io.BytesIO()
    fig.savefig(out, format="png", facecolor="white")
    return out.getvalue()
