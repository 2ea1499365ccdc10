"""Writes deploy/grafana/dashboards/raysiege.json, the Grafana dashboard of a raysiege run.

The dashboard is generated so that its panels stay uniform and its PromQL readable here;
the JSON is committed (Grafana provisions it from disk) and a test fails when it is stale.

    .venv/bin/python deploy/grafana/dashboard.py          # rewrite the JSON
    .venv/bin/python deploy/grafana/dashboard.py --check  # exit 1 when it is stale

Queries use `$__rate_interval`, which Grafana derives from the datasource's scrape
interval (1 s, set in provisioning/datasources/prometheus.yml).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "raysiege.json"
UID = "raysiege-run"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
WIDTH = 24  # Grafana's grid


def q(expr: str, legend: str = "", **extra: Any) -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend or "__auto", **extra}


def quantiles(metric: str, *qs: float, by: str = "le") -> list[dict[str, Any]]:
    """histogram_quantile targets over a classic histogram's rate."""
    return [
        q(
            f"histogram_quantile({x}, sum by ({by}) (rate({metric}_bucket[{RATE}])))",
            f"p{x * 100:g}",
        )
        for x in qs
    ]


class Layout:
    """Places panels left to right, wrapping into rows of the 24-column grid."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self._x = self._y = self._row_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"x": 0, "y": self._y, "w": WIDTH, "h": 1},
                "id": len(self.panels) + 1,
            }
        )
        self._y += 1

    def _newline(self) -> None:
        self._y += self._row_h
        self._x = self._row_h = 0

    def add(
        self,
        title: str,
        targets: list[dict[str, Any]],
        *,
        unit: str,
        kind: str = "timeseries",
        w: int = 12,
        h: int = 8,
        description: str = "",
        options: dict[str, Any] | None = None,
        field: dict[str, Any] | None = None,
    ) -> None:
        if self._x + w > WIDTH:
            self._newline()
        refs = "ABCDEFGHIJ"
        self.panels.append(
            {
                "type": kind,
                "title": title,
                "description": description,
                "datasource": DATASOURCE,
                "gridPos": {"x": self._x, "y": self._y, "w": w, "h": h},
                "id": len(self.panels) + 1,
                "targets": [
                    {"datasource": DATASOURCE, "refId": refs[i], **t} for i, t in enumerate(targets)
                ],
                "fieldConfig": {"defaults": {"unit": unit, **(field or {})}, "overrides": []},
                "options": options or {"legend": {"displayMode": "list", "placement": "bottom"}},
            }
        )
        self._x += w
        self._row_h = max(self._row_h, h)


def panels() -> list[dict[str, Any]]:
    grid = Layout()
    grid.row("Load")
    grid.add(
        "Throughput",
        [
            q(f"sum(rate(raysiege_requests_total[{RATE}]))", "completed"),
            q(f"sum(rate(raysiege_sent_total[{RATE}]))", "sent"),
            q("sum(raysiege_target_requests_per_second)", "target"),
            q("sum(raysiege_achieved_requests_per_second)", "achieved (run so far)"),
        ],
        unit="reqps",
        description="Completed and sent requests per second against the plan's target rate.",
    )
    grid.add(
        "Latency percentiles",
        [
            *quantiles("raysiege_request_duration_seconds", 0.5, 0.9, 0.99, 0.999),
            q(
                "max by (percentile) (raysiege_request_duration_percentile_seconds)",
                "p{{percentile}} exact, run so far",
            ),
        ],
        unit="s",
        description="Over the last rate interval from the exported buckets, and exact "
        "whole-run percentiles from the merged HdrHistogram. Open loop: from the intended "
        "send time.",
    )
    grid.add(
        "Request duration heatmap",
        [
            q(
                f"sum by (le) (increase(raysiege_request_duration_seconds_bucket[{RATE}]))",
                "{{le}}",
                format="heatmap",
            )
        ],
        unit="s",
        kind="heatmap",
        w=24,
        description="Requests per duration bucket; the bounds are HdrHistogram bucket tops.",
        options={
            "calculate": False,
            "yAxis": {"unit": "s"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5},
            "rowsFrame": {"layout": "auto"},
        },
    )
    grid.add(
        "Responses by status code",
        [q(f"sum by (code) (rate(raysiege_requests_total[{RATE}]))", "{{code}}")],
        unit="reqps",
        description="gRPC status codes; everything but OK is an error.",
    )
    grid.add(
        "Error ratio",
        [
            q(
                f'(sum(rate(raysiege_requests_total{{code!="OK"}}[{RATE}])) or vector(0))'
                f" / sum(rate(raysiege_requests_total[{RATE}]))",
                "errors",
            )
        ],
        unit="percentunit",
    )
    grid.row("Load generator")
    grid.add(
        "Send lag",
        quantiles("raysiege_send_lag_seconds", 0.5, 0.99),
        unit="s",
        description="Actual minus intended send time. A high send lag means the agents, "
        "not the server, are the bottleneck.",
    )
    grid.add(
        "In flight and dropped",
        [
            q("sum(raysiege_in_flight)", "in flight"),
            q(f"sum(rate(raysiege_dropped_total[{RATE}]))", "dropped/s"),
        ],
        unit="short",
        description="Arrivals are dropped when an agent has its maximum in flight.",
    )
    grid.add(
        "Agents",
        [
            q("sum by (state) (raysiege_agents)", "{{state}}"),
            q("sum(raysiege_agents_lost_total)", "lost (replaced or not)"),
            q("max(raysiege_degraded)", "degraded"),
        ],
        unit="short",
        w=8,
        description="Agents by state; a replaced agent runs again under its index. "
        "Degraded is 1 while the fleet runs short of a lost agent.",
    )
    grid.add(
        "Requests per agent",
        [q(f"sum by (agent) (rate(raysiege_agent_requests_total[{RATE}]))", "agent {{agent}}")],
        unit="reqps",
        w=8,
    )
    grid.add(
        "Agent CPU",
        [q(f"sum by (agent) (rate(raysiege_agent_cpu_seconds_total[{RATE}]))", "agent {{agent}}")],
        unit="percentunit",
        w=8,
        description="CPU seconds per second of each agent's process.",
    )
    grid.add(
        "Prediction accuracy",
        [
            q(
                f"sum(rate(raysiege_predictions_correct_total[{RATE}]))"
                f" / sum(rate(raysiege_predictions_checked_total[{RATE}]))",
                "last interval",
            ),
            q("max(raysiege_prediction_accuracy_ratio)", "run so far"),
        ],
        unit="percentunit",
        description="Responses checked against the digits' labels, under load.",
        field={"min": 0, "max": 1},
    )
    grid.add(
        "Run phase",
        [q("max by (phase) (raysiege_run_phase)", "{{phase}}")],
        unit="short",
        kind="state-timeline",
        w=8,
        description="The run's phase: starting, running, finished.",
        options={"showValue": "never", "mergeValues": True},
    )
    grid.add(
        "Run",
        [q("raysiege_run_info", format="table", instant=True)],
        unit="none",
        kind="table",
        w=16,
        description="Run id, plan name, target and load model of the runs in view.",
        options={"showHeader": True},
    )
    grid.row("Model server")
    grid.add(
        "Queue depth and in flight",
        [
            q("sum(model_server_queue_depth)", "queued"),
            q("sum(model_server_in_flight_requests)", "in flight"),
        ],
        unit="short",
        w=8,
    )
    grid.add(
        "Batch size",
        [
            *quantiles("model_server_batch_size", 0.5, 0.99),
            q(
                f"sum(rate(model_server_batch_size_sum[{RATE}]))"
                f" / sum(rate(model_server_batch_size_count[{RATE}]))",
                "mean",
            ),
        ],
        unit="short",
        w=8,
        description="Rows per executed batch of the dynamic batcher.",
    )
    grid.add(
        "Inference time per batch",
        quantiles("model_server_inference_duration_seconds", 0.5, 0.99),
        unit="s",
        w=8,
    )
    grid.add(
        "Server requests by method and code",
        [
            q(
                f"sum by (method, code) (rate(model_server_requests_total[{RATE}]))",
                "{{method}} {{code}}",
            )
        ],
        unit="reqps",
    )
    grid.add(
        "Server-side ModelInfer latency",
        [
            q(
                "histogram_quantile(0.99, sum by (le) (rate("
                f'model_server_request_duration_seconds_bucket{{method="ModelInfer"}}[{RATE}])))',
                "p99",
            ),
            q(
                "histogram_quantile(0.5, sum by (le) (rate("
                f'model_server_request_duration_seconds_bucket{{method="ModelInfer"}}[{RATE}])))',
                "p50",
            ),
        ],
        unit="s",
        description="As the server sees it; the gap to the client-side latency is network, "
        "queueing in gRPC and the client.",
    )
    return grid.panels


def dashboard() -> dict[str, Any]:
    return {
        "uid": UID,
        "title": "raysiege load test",
        "description": "A raysiege run: coordinator metrics (raysiege_*) and the model "
        "server's own (model_server_*).",
        "tags": ["raysiege", "load-testing"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "schemaVersion": 39,
        "version": 1,
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
