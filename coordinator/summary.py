"""The run summary: the merged state as a plain dict, written as summary.json and printed."""

from __future__ import annotations

from typing import Any

from coordinator.merge import FleetState


def build_summary(state: FleetState, *, run: dict[str, Any]) -> dict[str, Any]:
    """Everything a reader needs; `run` carries run id, target, plan and timing facts."""
    window = state.window_s
    requests = state.requests
    agents = [
        {
            "id": a.agent_id,
            "index": a.index,
            "node": a.node_id,
            "node_ip": a.node_ip,
            "requests": a.requests,
            "status_counts": dict(sorted(a.status_counts.items())),
            "cpu_s": round(a.cpu_s, 3),
            "lost": a.lost,
            **({"lost_reason": a.lost_reason} if a.lost else {}),
        }
        for _, a in sorted(state.agents.items())
    ]
    return {
        **run,
        "requests": requests,
        "ok": state.ok,
        "errors": state.errors,
        "error_rate": state.errors / requests if requests else 0.0,
        "status_counts": dict(sorted(state.status_counts.items())),
        "sent": state.sent,
        "dropped": state.dropped,
        "throughput_rps": requests / window if window else 0.0,
        "duration_s": window,
        "latency_s": state.latency_s(),
        "send_lag_s": state.send_lag_s(),
        "accuracy": {
            "checked": state.checked,
            "correct": state.correct,
            "rate": state.correct / state.checked if state.checked else None,
        },
        "agents": agents,
        "agents_lost": sum(a.lost for a in state.agents.values()),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable summary (the full one is summary.json)."""
    lat = summary["latency_s"]

    def ms(value: float) -> str:
        return f"{value * 1e3:.2f} ms"

    codes = ", ".join(f"{k}={v}" for k, v in summary["status_counts"].items()) or "none"
    acc = summary["accuracy"]["rate"]
    lines = [
        f"run {summary.get('run_id', '?')} against {summary.get('target', '?')} "
        f"({summary.get('load_model', '?')} loop, {len(summary['agents'])} agents)",
        f"  requests   {summary['requests']} in {summary['duration_s']:.1f} s "
        f"= {summary['throughput_rps']:.1f} req/s; errors {summary['errors']} ({codes})",
        f"  latency    p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  p99 {ms(lat['p99'])}  "
        f"p99.9 {ms(lat['p999'])}  max {ms(lat['max'])}  mean {ms(lat['mean'])}",
        f"  send lag   p99 {ms(summary['send_lag_s']['p99'])}; dropped {summary['dropped']}",
        f"  accuracy   {'n/a' if acc is None else f'{acc:.2%}'} "
        f"of {summary['accuracy']['checked']} checked predictions",
    ]
    if summary.get("model_holdout_accuracy") is not None:
        holdout = summary["model_holdout_accuracy"]
        lines.append(f"  model      holdout accuracy {holdout:.2%} (the bundled server's)")
    if summary["agents_lost"]:
        lines.append(f"  LOST       {summary['agents_lost']} agent(s); see summary.json")
    return "\n".join(lines)
