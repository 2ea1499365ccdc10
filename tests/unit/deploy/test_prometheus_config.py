"""deploy/prometheus/: promtool checks the configs and rules, runs the rules' unit tests,
and every metric and bucket the rules and the dashboard name is one that is exported.

promtool comes with Debian's `prometheus` package; without it these tests skip, and fail
when CI is set.
"""

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from coordinator.exporter import DURATION_BUCKETS, SEND_LAG_BUCKETS, RunInfo, fleet_registry
from coordinator.merge import FleetState
from model_server.api.report_pb2 import IntervalReport
from model_server.cli import DEFAULT_METRICS_PORT
from model_server.metrics import ServerMetrics

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
CONFIGS = [PROMETHEUS / "prometheus.yml", PROMETHEUS / "prometheus-compose.yml"]
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "raysiege.json"
COORDINATOR_METRICS_PORT = 9464  # coordinator start --metrics-port default (README)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian package `prometheus`; .ci/run installs it)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60)


def rules() -> list[dict]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def all_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [rule["expr"] for rule in rules()] + [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_promtool_check_config(config):
    check = promtool("check", "config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2 rule files found" in check.stdout


def test_promtool_check_rules():
    check = promtool("check", "rules", *map(str, RULE_FILES))
    assert check.returncode == 0, check.stdout + check.stderr


def test_promtool_test_rules_fires_each_alert_and_only_when_it_should():
    check = promtool("test", "rules", str(PROMETHEUS / "tests" / "raysiege-alerts.test.yml"))
    assert check.returncode == 0, check.stdout + check.stderr
    tested = set(
        re.findall(
            r"alertname: (\w+)",
            (PROMETHEUS / "tests").joinpath("raysiege-alerts.test.yml").read_text(),
        )
    )
    assert tested == {rule["alert"] for rule in rules() if "alert" in rule}


def test_promtool_check_config_can_fail(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 2s\n")
    assert promtool("check", "config", str(bad)).returncode != 0


def test_the_issue_s_alerts_exist():
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert {
        "RaysiegeErrorBudgetBurn",
        "RaysiegeLatencyBudgetBurn",
        "RaysiegeGeneratorSaturated",
        "RaysiegeAgentLost",
    } <= alerts


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_scrape_every_second_on_the_cli_default_ports(config):
    parsed = yaml.safe_load(config.read_text())
    assert parsed["global"]["scrape_interval"] == "1s"
    ports = {
        job["job_name"]: {t.rsplit(":", 1)[1] for c in job["static_configs"] for t in c["targets"]}
        for job in parsed["scrape_configs"]
    }
    assert ports == {
        "raysiege": {str(COORDINATOR_METRICS_PORT)},
        "model-server": {str(DEFAULT_METRICS_PORT)},
    }
    assert sorted(PROMETHEUS / f for f in parsed["rule_files"]) == RULE_FILES


def test_local_config_scrapes_loopback_only():
    parsed = yaml.safe_load(CONFIGS[0].read_text())
    targets = [
        t for job in parsed["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    assert targets and all(t.startswith("127.0.0.1:") for t in targets)


def exported_names() -> set[str]:
    """Sample names the coordinator and the model server expose (fully populated)."""
    state = FleetState()
    state.add(IntervalReport(agent_index=0, status_counts={"OK": 1}, sent=1, checked=1, correct=1))
    info = RunInfo(run_id="r", plan="p", target="t", load_model="open", agents=1, target_rate=1.0)
    registries = [fleet_registry(state, info, threading.Lock())]
    server = CollectorRegistry()
    metrics = ServerMetrics(server, max_batch_size=8)
    metrics.record_request("ModelInfer", "OK", 0.001)
    metrics.observe_batch(1, 0.001)
    registries.append(server)
    return {
        sample.name
        for registry in registries
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if not sample.name.endswith("_created")  # client_python's creation timestamps
    }


def test_every_metric_named_in_rules_and_dashboard_is_exported():
    exported = exported_names()
    named = {
        name
        for expr in all_expressions()
        for name in re.findall(r"(?<![\w:])((?:raysiege|model_server)_[a-z0-9_]+)", expr)
    }
    assert named, "no metric found in the expressions"
    assert named - exported == set()
    # and the other way round: every exported family is shown or judged somewhere
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exported}
    used = {re.sub(r"_(bucket|count|sum)$", "", n) for n in named}
    assert families - used == set()


def test_every_bucket_named_is_an_exported_bound():
    labels = {
        "raysiege_request_duration_seconds_bucket": set(DURATION_BUCKETS.labels),
        "raysiege_send_lag_seconds_bucket": set(SEND_LAG_BUCKETS.labels),
    }
    found = 0
    for expr in all_expressions():
        for metric, le in re.findall(r'(\w+_bucket)\{[^}]*le="([^"]+)"', expr):
            found += 1
            assert le in labels[metric], f"{metric} has no bucket le={le!r}: {expr}"
    assert found >= 2
