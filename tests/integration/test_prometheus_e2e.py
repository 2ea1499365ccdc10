"""Prometheus end to end: the deploy config and rules, a real Prometheus, a real run.

Debian's `prometheus` scrapes a `coordinator start` run (on the session's Ray) and the
MNIST model server it loads (started here with `--metrics-port`, as deploy/ runs it),
with deploy/prometheus/prometheus.yml's settings and rule files, its targets pointed at
this test's ports. Every PromQL expression of the Grafana dashboard and of the
rules is then asked of Prometheus' HTTP API, and each must return a finite sample.
Alert expressions are asked with `bool` comparisons, so they answer whenever their inputs
exist, firing or not. Without prometheus/promtool the test skips, and fails when CI is set.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import REPO, Child, coordinator, free_port, poll, python

pytestmark = pytest.mark.integration

DEPLOY = REPO / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "raysiege.json"
RATE_INTERVAL = "10s"  # what the test puts for Grafana's $__rate_interval
METRICS_LINE = r"metrics on http://127\.0\.0\.1:(\d+)/metrics"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (Debian package `prometheus`; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def with_bool(expr: str) -> str:
    """`a > b` → `a > bool b` outside label matchers: answers 0/1 whenever a and b exist."""
    parts = re.split(r"(\{[^}]*\})", expr)
    return "".join(
        part if i % 2 else re.sub(r"\s(==|!=|>=|<=|>|<)\s+(?!bool\b)", r" \1 bool ", part)
        for i, part in enumerate(parts)
    )


def expressions() -> dict[str, str]:
    """Every expression to check → where it comes from."""
    out: dict[str, str] = {}
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    for rule_file in config["rule_files"]:
        path = PROMETHEUS_YML.parent / rule_file
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                expr = " ".join(rule["expr"].split())
                if "alert" in rule:
                    asked = with_bool(expr)
                    assert asked != expr, f"alert {rule['alert']} has no comparison: {expr}"
                    out[asked] = f"{path.name}: alert {rule['alert']}"
                else:
                    out[expr] = f"{path.name}: {rule['record']}"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
            assert "$" not in expr, f"panel {panel['title']!r}: unknown variable in {expr}"
            out[expr] = f"dashboard: {panel['title']}"
    return out


def test_alert_expressions_are_asked_with_bool():
    assert with_bool('a{code!="OK"} > (14.4 * 0.001)\nand b < 0.95') == (
        'a{code!="OK"} > bool (14.4 * 0.001)\nand b < bool 0.95'
    )
    assert with_bool("a > bool 1") == "a > bool 1"


def prometheus_config(tmp: Path, targets: dict[str, str]) -> Path:
    """The deploy config with absolute rule paths and this test's targets, job by job."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["rule_files"] = [str(PROMETHEUS_YML.parent / f) for f in config["rule_files"]]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        body = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


def has_finite_sample(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


@pytest.fixture(scope="session")
def prometheus_tools() -> tuple[str, str]:
    """Checked before the session's Ray starts, so a skip costs nothing."""
    return require("prometheus"), require("promtool")


@pytest.fixture
def children():
    started: list[Child] = []
    yield started
    for child in reversed(started):
        child.stop()


def test_prometheus_scrapes_a_run_and_every_dashboard_and_rule_expression_has_data(
    prometheus_tools, tmp_path, ray_address, children
):
    prometheus_bin, promtool = prometheus_tools
    asked = expressions()
    asked.update({'up{job="raysiege"} == 1': "target", 'up{job="model-server"} == 1': "target"})

    server = Child(python("-m", "model_server", "serve", "--port", "0", "--metrics-port", "0"))
    children.append(server)
    grpc_port = int(
        server.wait_for_line(r"listening on 127\.0\.0\.1:(\d+)", stream="stderr").group(1)
    )
    server_metrics = int(server.wait_for_line(METRICS_LINE, stream="stderr").group(1))

    # Prometheus first, while the model loads: it takes a few seconds to pick up targets.
    coordinator_metrics, web_port = free_port(), free_port()
    config = prometheus_config(
        tmp_path,
        {
            "raysiege": f"127.0.0.1:{coordinator_metrics}",
            "model-server": f"127.0.0.1:{server_metrics}",
        },
    )
    check = Child([promtool, "check", "config", str(config)])
    assert check.wait(timeout_s=60) == 0, check.text("stdout") + check.text("stderr")
    prometheus = Child(
        [
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ]
    )
    children.append(prometheus)
    prometheus.wait_for_line("Server is ready to receive web requests", stream="stderr")
    api = Prometheus(web_port)

    server.wait_for_line(r"^READY port=", timeout_s=180)  # may train its model on first use
    out = tmp_path / "run"
    run = Child(
        coordinator(
            "start",
            "--address",
            ray_address,
            "--target",
            f"127.0.0.1:{grpc_port}",
            "--agents",
            "2",
            "--agent-cpus",
            "0.5",
            "--rate",
            "50",
            "--duration",
            "8s",
            "--max-send-lag",
            "5s",  # judge Prometheus here, not how busy this machine's generator is
            "--linger",
            "60s",  # /metrics stays up for the final scrapes; SIGINT ends it below
            "--metrics-port",
            str(coordinator_metrics),
            "--name",
            "prometheus-e2e",
            "--out",
            str(out),
        )
    )
    children.append(run)

    # Each expression must answer with a finite sample at some point of the run.
    pending = dict(asked)

    def missing() -> str:
        targets = [
            f"  {t['labels']['job']}: {t['health']} {t['lastError']}"
            for t in api.get("/api/v1/targets")["activeTargets"]
        ]
        return "\n".join(
            [
                "data for",
                *(f"  {w}: {e}" for e, w in pending.items()),
                "targets:",
                *targets,
                "coordinator stderr:",
                run.text("stderr")[-3000:],
            ]
        )

    def all_answered() -> bool:
        exited = run.process.poll()  # read first: a run that ends now may still answer
        for expr in list(pending):
            if has_finite_sample(api.query(expr)):
                del pending[expr]
        if pending and exited is not None:
            raise AssertionError(f"coordinator exited with {exited} before {missing()}")
        return not pending

    poll(all_answered, timeout_s=240, what=missing)
    rules = api.get("/api/v1/rules")["groups"]
    assert sum(len(g["rules"]) for g in rules) == sum(1 for w in asked.values() if ".yml" in w)
    for group in rules:
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule

    # Once the run is over, the last scrapes hold the summary's exact counts.
    summary_path = out / "summary.json"
    poll(summary_path.exists, timeout_s=120, what=lambda: "summary.json")
    summary = json.loads(summary_path.read_text())
    poll(
        lambda: api.value("sum(raysiege_request_duration_seconds_count)") == summary["requests"],
        timeout_s=30,
        what=lambda: f"{summary['requests']} requests in Prometheus",
    )
    assert summary["requests"] > 0
    assert api.value("sum(raysiege_requests_total)") == summary["requests"]
    assert api.value('raysiege_request_duration_seconds_bucket{le="+Inf"}') == summary["requests"]
    assert api.value("sum(raysiege_send_lag_seconds_count)") == summary["sent"]
    assert api.value('raysiege_agents{state="finished"}') == 2
    assert api.value('raysiege_run_phase{phase="finished"}') == 1
    assert api.value("raysiege_target_requests_per_second") == 50
    assert api.value('raysiege_run_info{plan="prometheus-e2e"}') == 1

    # SIGINT ends --linger (the run itself is complete, so the exit code stays 0).
    run.process.send_signal(signal.SIGINT)
    assert run.wait(timeout_s=60) == 0, run.text("stderr")[-3000:]
