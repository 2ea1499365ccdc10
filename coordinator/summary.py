"""The run summary: the merged state as a plain dict, written as summary.json and printed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coordinator.merge import FleetState
from coordinator.thresholds import Threshold, judge

if TYPE_CHECKING:
    from coordinator.plan import Plan

# An agent-interval is "behind" when its send-lag p99 passed the limit (or it dropped).
# A generator that was behind in at most this fraction of them had a passing hiccup
# (a GC pause, a busy neighbour), not a lack of capacity.
MAX_BEHIND_FRACTION = 0.10


def generator_verdict(state: FleetState, max_send_lag_s: float) -> dict[str, Any]:
    """Did the load generator keep up? Nothing dropped, and the send-lag p99 within the
    limit — over the run, or in all but MAX_BEHIND_FRACTION of the agent-intervals.

    A run whose generator fell behind measured the generator as much as the server; it
    is reported invalid rather than as a slow server.
    """
    lag_p99 = state.send_lag_s()["p99"]
    requests = state.requests
    transient = state.intervals_behind <= MAX_BEHIND_FRACTION * state.intervals
    return {
        "kept_up": state.dropped == 0 and (lag_p99 <= max_send_lag_s or transient),
        "send_lag_p99_s": lag_p99,
        "max_send_lag_s": max_send_lag_s,
        "dropped": state.dropped,
        "intervals": state.intervals,
        "intervals_behind": state.intervals_behind,
        "loop_lag_max_s": state.loop_lag_max_s,
        "cpu_s": round(state.cpu_s, 3),
        "cpu_us_per_request": round(state.cpu_s / requests * 1e6, 1) if requests else None,
    }


def build_summary(
    state: FleetState,
    *,
    run: dict[str, Any],
    max_send_lag_s: float = 0.050,
    thresholds: list[Threshold] | None = None,
) -> dict[str, Any]:
    """Everything a reader needs; `run` carries run id, target, plan and timing facts.

    The figures cover the measured window only: warm-up intervals are counted under
    `warmup` and nowhere else. `valid` is false when the generator fell behind or more
    than half of the agents were lost; `passed` is whether every threshold held.
    """
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
            "warmup_requests": a.warmup_requests,
            "intervals_behind": a.intervals_behind,
            "lost": a.lost,
            **(
                {
                    "lost_reason": a.lost_reason,
                    "lost_at_unix_s": a.lost_at_unix_s,
                    "replaced_by": a.replaced_by or None,
                }
                if a.lost
                else {}
            ),
        }
        for _, a in sorted(state.agents.items())
    ]
    lost = sum(a.lost for a in state.agents.values())
    generator = generator_verdict(state, max_send_lag_s)
    summary: dict[str, Any] = {
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
        "agents_lost": lost,
        "warmup": {
            "requests": state.warmup_requests,
            "status_counts": dict(sorted(state.warmup_status_counts.items())),
            "end_unix_s": state.warmup_end_unix_s,
        },
        "window": {"start_unix_s": state.first_start_unix_s, "end_unix_s": state.last_end_unix_s},
        "generator": generator,
        "degraded": [w.to_dict() for w in state.degraded],
        # when requests failed: an outage shows as one window, merged over agents
        "error_windows": sorted(state.error_windows, key=lambda w: w["from_unix_s"]),
        "valid": generator["kept_up"] and lost * 2 <= len(agents) and requests > 0,
    }
    verdicts = judge(thresholds or [], summary)
    summary["thresholds"] = [v.to_dict() for v in verdicts]
    summary["passed"] = all(v.passed for v in verdicts)
    return summary


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
    gen = summary["generator"]
    lines.append(
        f"  generator  {'kept up' if gen['kept_up'] else 'FELL BEHIND'}: send lag p99 "
        f"{ms(gen['send_lag_p99_s'])} (limit {ms(gen['max_send_lag_s'])}), "
        f"{gen['intervals_behind']}/{gen['intervals']} intervals behind, "
        f"{gen['cpu_us_per_request'] or 0:.0f} µs CPU per request"
    )
    if summary["warmup"]["requests"]:
        lines.append(
            f"  warm-up    {summary['warmup']['requests']} requests, left out of the figures"
        )
    if summary["agents_lost"]:
        lines.append(f"  LOST       {summary['agents_lost']} agent(s); see summary.json")
    for verdict in summary["thresholds"]:
        actual = "n/a" if verdict["actual"] is None else f"{verdict['actual']:.6g}"
        mark = "PASS" if verdict["passed"] else "FAIL"
        lines.append(f"  {mark:10} {verdict['rule']} (actual {actual})")
    if not summary["valid"]:
        lines.append(
            "  INVALID    the generator fell behind or too many agents were lost: see generator"
        )
    return "\n".join(lines)


def run_facts(
    plan: Plan, run_id: str, target: str, holdout_accuracy: float | None = None
) -> dict[str, Any]:
    """What a run records about itself beside the figures; a live run and a re-rendered
    one (`coordinator report`) both use it. `holdout_accuracy` is the bundled server's."""
    ld = plan.load
    is_open = plan.load_model == "open"
    return {
        "run_id": run_id,
        "plan": plan.name,
        "target": target,
        "load_model": plan.load_model,
        "arrival": ld.arrival if is_open else None,
        # Open loop corrects coordinated omission; a closed loop cannot, and says so.
        "latency_from": "intended send time" if is_open else "actual send time",
        "requested": {
            "agents": plan.fleet.agents,
            "rate": ld.rate,
            "concurrency": ld.concurrency,
            "stages": [list(s) for s in ld.stages],
            "warmup_s": ld.warmup_s,
            "duration_s": ld.duration_s,
            "max_requests": ld.requests,
            "batch_size": ld.batch_size,
        },
        "model_holdout_accuracy": holdout_accuracy,
    }
