"""`report.html`: one self-contained page per run, the figures embedded as PNG data URIs.

A summary table in the manner of JMeter's Summary Report (a row per agent and a total:
requests, errors, throughput, latency percentiles), the verdicts (generator, thresholds),
status codes and accuracy, then the plots of coordinator/plots.py. `render_html` is a
pure function of the summary, the per-agent latency histograms and the figures;
`write_html_report` gathers those from a results folder. Nothing is fetched when the
page is opened: no scripts, fonts or links to anything outside it.
"""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from coordinator.errors import PlanError
from coordinator.merge import FleetState
from coordinator.percentiles import values_at
from coordinator.report import RunFolder
from coordinator.results import ResultsError
from coordinator.thresholds import LATENCY, parse_threshold
from coordinator.timeline import agent_latency, build_timeline

REPORT_HTML = "report.html"
TABLE_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}

STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #222; margin: 24px auto; max-width: 1140px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.facts { color: #555; margin: 2px 0; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 4px; color: #fff;
         font-weight: 600; font-size: 13px; vertical-align: middle; margin-left: 8px; }
.pass { background: #2e7d32; } .fail { background: #c62828; } .invalid { background: #6a1b9a; }
table { border-collapse: collapse; margin: 6px 0 4px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d0d0; padding: 4px 9px; text-align: right; }
th { background: #f2f4f7; } td.label, th.label { text-align: left; white-space: nowrap; }
tr.total td { font-weight: 600; background: #fafafa; }
.bad { color: #c62828; font-weight: 600; } .good { color: #2e7d32; font-weight: 600; }
.tables { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 18px 0; } figure img { width: 100%; border: 1px solid #e3e3e3; }
figcaption { color: #555; font-size: 13px; }
.note { color: #555; font-size: 13px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.3f}"


def _utc(unix_s: float | None) -> str:
    if unix_s is None:
        return "n/a"
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(head: list[str], rows: list[list[str]], *, total: list[str] | None = None) -> str:
    """Cells are HTML already; the first column is a label."""

    def row(cells: list[str], cls: str = "") -> str:
        tds = "".join(
            f'<td class="label">{c}</td>' if i == 0 else f"<td>{c}</td>"
            for i, c in enumerate(cells)
        )
        return f"<tr{f' class={cls!r}' if cls else ''}>{tds}</tr>"

    ths = "".join(
        f'<th class="label">{_e(h)}</th>' if i == 0 else f"<th>{_e(h)}</th>"
        for i, h in enumerate(head)
    )
    thead = f"<thead><tr>{ths}</tr></thead>" if any(head) else ""
    body = "".join(row(r) for r in rows) + (row(total, "total") if total else "")
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def verdict(summary: dict[str, Any]) -> tuple[str, str]:
    """(css class, words) for the run as a whole, as `coordinator.cli.exit_code` judges it:
    invalid, failed (a threshold failed or aborted the run) or passed; lost agents make
    a degraded window, not a failure."""
    lost = summary["agents_lost"]
    if not summary["valid"]:
        if not summary["generator"]["kept_up"]:
            return "invalid", "INVALID: the load generator fell behind"
        if not summary["requests"]:
            return "invalid", "INVALID: no request completed"
        return "invalid", f"INVALID: {lost} of {len(summary['agents'])} agents lost"
    failed = [f"threshold {v['rule']} failed" for v in summary["thresholds"] if not v["passed"]]
    if summary.get("aborted"):
        failed.append(f"aborted: {summary['aborted']}")
    if failed:
        return "fail", "FAILED: " + "; ".join(failed)
    held = len(summary["thresholds"])
    words = f"PASSED: {held} threshold(s) held" if held else "PASSED"
    return "pass", words + (f"; degraded, {lost} agent(s) lost" if lost else "")


def summary_rows(
    summary: dict[str, Any], agents: dict[int, HdrHistogram]
) -> tuple[list[list[str]], list[str]]:
    """JMeter-style rows: one per agent, and the total (from the summary's own figures)."""
    window = summary["duration_s"]

    def cells(label: str, requests: int, errors: int, lat: dict[str, float]) -> list[str]:
        return [
            label,
            str(requests),
            str(errors),
            f"{errors / requests:.2%}" if requests else "n/a",
            f"{requests / window:.1f}" if window else "n/a",
            *(_ms(lat.get(k)) if requests else "n/a" for k in ("mean", "min")),
            *(_ms(lat.get(k)) if requests else "n/a" for k in TABLE_PERCENTILES),
            _ms(lat.get("max")) if requests else "n/a",
        ]

    rows = []
    for a in summary["agents"]:
        hist = agents.get(a["index"])
        lat: dict[str, float] = {}
        if hist is not None and hist.get_total_count():
            points = values_at(hist, list(TABLE_PERCENTILES.values()))
            lat = {k: v / 1e6 for k, v in zip(TABLE_PERCENTILES, points, strict=True)}
            lat |= {
                "mean": hist.get_mean_value() / 1e6,
                "min": hist.get_min_value() / 1e6,
                "max": hist.get_max_value() / 1e6,
            }
        errors = a["requests"] - a["status_counts"].get("OK", 0)
        node = f" on {a['node_ip'] or a['node'][:8]}" if (a["node_ip"] or a["node"]) else ""
        label = f"agent {a['index']}{_e(node)}" + (" <b>(lost)</b>" if a["lost"] else "")
        rows.append(cells(label, a["requests"], errors, lat))
    lat_s = summary["latency_s"]
    total_lat = {**lat_s, "p99.9": lat_s["p999"]}
    total = cells("TOTAL", summary["requests"], summary["errors"], total_lat)
    return rows, total


def _threshold_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for v in summary["thresholds"]:
        try:
            metric = parse_threshold(v["rule"]).metric
        except PlanError:  # a rule from another version: its actual is shown as it is
            metric = ""
        actual = v["actual"]
        if actual is None:
            shown = "n/a"
        elif metric in LATENCY:
            shown = f"{actual * 1e3:.3f} ms"
        elif metric in ("error_rate", "accuracy"):
            shown = f"{actual:.3%}"
        else:
            shown = f"{actual:.6g}"
        mark = '<span class="good">PASS</span>' if v["passed"] else '<span class="bad">FAIL</span>'
        rows.append([_e(v["rule"]), shown, mark])
    return rows


def _generator_rows(summary: dict[str, Any]) -> list[list[str]]:
    g = summary["generator"]
    kept = "kept up" if g["kept_up"] else "FELL BEHIND"
    per_request = g.get("cpu_us_per_request")
    return [
        ["verdict", f'<span class="{"good" if g["kept_up"] else "bad"}">{kept}</span>'],
        ["send lag p99", f"{_ms(g['send_lag_p99_s'])} ms (limit {_ms(g['max_send_lag_s'])} ms)"],
        ["dropped arrivals", str(g["dropped"])],
        ["intervals behind schedule", f"{g['intervals_behind']} of {g['intervals']}"],
        ["event-loop lag max", f"{_ms(g['loop_lag_max_s'])} ms"],
        ["agent CPU", f"{g['cpu_s']} s" + (f", {per_request} µs/request" if per_request else "")],
    ]


def render_html(
    summary: dict[str, Any], agents: dict[int, HdrHistogram], figures: dict[str, bytes]
) -> str:
    """The page. `figures` maps captions to PNG bytes, shown in order."""
    css, words = verdict(summary)
    requested = summary.get("requested") or {}
    load = (
        f"{summary.get('load_model', '?')} loop"
        + (f", {summary['arrival']} arrivals" if summary.get("arrival") else "")
        + (f", rate {requested['rate']:g}/s" if requested.get("rate") else "")
        + (f", concurrency {requested['concurrency']}" if requested.get("concurrency") else "")
        + (f", {len(requested['stages'])} stages" if requested.get("stages") else "")
    )
    window = summary.get("window") or {}
    warm = summary["warmup"]
    facts = [
        f"target <b>{_e(summary.get('target', '?'))}</b> · plan {_e(summary.get('plan', '?'))} · "
        f"{_e(load)} · {len(summary['agents'])} agent(s) · latency from the "
        f"{_e(summary.get('latency_from', '?'))}",
        f"measured window {summary['duration_s']:.1f} s from "
        f"{_utc(window.get('start_unix_s'))} to {_utc(window.get('end_unix_s'))}"
        + (
            f"; warm-up of {warm['requests']} requests left out of every figure"
            if warm["requests"]
            else ""
        ),
    ]
    rows, total = summary_rows(summary, agents)
    lat_head = ["mean", "min", *TABLE_PERCENTILES, "max"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>raysiege run {_e(summary.get('run_id', '?'))}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>raysiege run {_e(summary.get('run_id', '?'))}"
        f'<span class="badge {css}">{_e(words)}</span></h1>',
        *(f'<p class="facts">{line}</p>' for line in facts),
        "<h2>Summary report</h2>",
        _table(
            [
                "label",
                "requests",
                "errors",
                "error %",
                "throughput (req/s)",
                *(f"{h} (ms)" for h in lat_head),
            ],
            rows,
            total=total,
        ),
        '<p class="note">Latency covers every completed request, whatever its status. '
        "Throughput is requests over the measured window.</p>",
        '<div class="tables">',
        "<div><h2>Status codes</h2>"
        + _table(
            ["code", "requests"],
            [[_e(k), str(v)] for k, v in summary["status_counts"].items()] or [["none", "0"]],
        )
        + "</div>",
        "<div><h2>Generator</h2>" + _table(["", ""], _generator_rows(summary)) + "</div>",
        "<div><h2>Thresholds</h2>"
        + (
            _table(["rule", "actual", "verdict"], _threshold_rows(summary))
            if summary["thresholds"]
            else '<p class="note">none set</p>'
        )
        + "</div>",
        "<div><h2>Accuracy</h2>" + _table(["", ""], _accuracy_rows(summary)) + "</div>",
        "</div>",
        *_degraded(summary),
        "<h2>Over time</h2>",
    ]
    for caption, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    source = summary.get("rendered_from") or {}
    parts.append(
        f'<p class="note">Rendered from {_e(source.get("log", "intervals.pb"))} '
        f"({source.get('records', '?')} interval reports) and plan.json."
        + (
            f" Agents that sent no final report (lost, or the run was cut short): "
            f"{_e(', '.join(map(str, source['unfinished_agents'])))}."
            if source.get("unfinished_agents")
            else ""
        )
        + "</p></body></html>"
    )
    return "\n".join(parts) + "\n"


def _degraded(summary: dict[str, Any]) -> list[str]:
    """The windows in which the fleet ran short of a lost agent, if any."""
    windows = summary.get("degraded") or []
    if not windows:
        return []
    rows = [
        [
            f"agent {_e(w.get('agent'))}",
            _e(w.get("reason", "")),
            _utc(w.get("from_unix_s")),
            _utc(w.get("to_unix_s")) if w.get("to_unix_s") else "the end of the run",
        ]
        for w in windows
    ]
    return ["<h2>Degraded</h2>", _table(["agent lost", "reason", "from", "to"], rows)]


def _accuracy_rows(summary: dict[str, Any]) -> list[list[str]]:
    acc = summary["accuracy"]
    rows = [
        ["checked predictions", str(acc["checked"])],
        ["correct", str(acc["correct"])],
        ["rate", "n/a" if acc["rate"] is None else f"{acc['rate']:.2%}"],
    ]
    if summary.get("model_holdout_accuracy") is not None:
        rows.append(["model holdout accuracy", f"{summary['model_holdout_accuracy']:.2%}"])
    return rows


def figures(folder: RunFolder, state: FleetState, summary: dict[str, Any]) -> dict[str, bytes]:
    """The plots of a run, by caption (matplotlib is imported only here)."""
    from coordinator import plots

    tl = build_timeline(folder.log.reports, folder.plan.load.interval_s)
    marks = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
    width = f"{folder.plan.load.interval_s:g} s"
    return {
        f"Throughput and errors: requests completed per second in bins of {width} (an "
        "agent's interval counts in the bin its midpoint falls in), the target rate dashed; "
        "below, errors per second by gRPC status code.": plots.throughput_figure(tl),
        f"Latency percentiles per {width} bin, exact over every request completed in it "
        "(the agents' histograms merged).": plots.latency_figure(tl),
        "Latency percentile distribution of the whole measured window: value at each "
        "percentile, on HdrHistogram's log scale of 1/(1-q).": plots.distribution_figure(
            state.latency, marks
        ),
        "Send lag: how late the agents sent requests after their scheduled time; the dashed "
        "line is the limit the generator's send-lag p99 is judged by.": plots.send_lag_figure(
            tl, folder.plan.load.max_send_lag_s
        ),
    }


def write_html_report(folder: RunFolder, summary: dict[str, Any], state: FleetState) -> Path:
    page = render_html(summary, agent_latency(folder.log.reports), figures(folder, state, summary))
    path = folder.path / REPORT_HTML
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as error:
        raise ResultsError(f"{path}: cannot write: {error.strerror}") from None
    return path
