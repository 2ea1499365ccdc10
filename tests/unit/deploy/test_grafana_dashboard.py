"""deploy/grafana/: the dashboard JSON is fresh from its generator, well formed for Grafana
(unique ids, panels on the 24-column grid without overlap, every query on the
provisioned datasource), has the panels the issue asks for, and the provisioning files
agree with it and with the Prometheus config."""

import importlib.util
import json
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "raysiege.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "raysiege.yml"


def load_generator():
    spec = importlib.util.spec_from_file_location("raysiege_dashboard", GRAFANA / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_the_json_is_what_the_generator_writes():
    generator = load_generator()
    assert generator.OUT == DASHBOARD
    assert DASHBOARD.read_text() == generator.render(), "run deploy/grafana/dashboard.py"
    assert generator.main(["--check"]) == 0


def test_panels_sit_on_the_grid_without_overlap_and_ids_are_unique():
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"{panel['title']!r} overlaps another panel"
        cells |= mine


def test_every_query_uses_the_datasource_variable():
    board = dashboard()
    (variable,) = board["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip()


def test_the_issue_s_panels_are_there():
    panels = {p["title"]: p for p in dashboard()["panels"]}
    for title in (
        "Throughput",
        "Latency percentiles",
        "Request duration heatmap",
        "Responses by status code",
        "Send lag",
        "Agents",
        "Prediction accuracy",
        "Queue depth and in flight",
        "Batch size",
    ):
        assert title in panels, title
    heatmap = panels["Request duration heatmap"]
    assert heatmap["type"] == "heatmap"
    assert heatmap["targets"][0]["format"] == "heatmap"
    assert "raysiege_request_duration_seconds_bucket" in heatmap["targets"][0]["expr"]
    exprs = " ".join(t["expr"] for t in panels["Queue depth and in flight"]["targets"])
    assert "model_server_queue_depth" in exprs
    exprs = " ".join(t["expr"] for t in panels["Throughput"]["targets"])
    assert "raysiege_target_requests_per_second" in exprs


def test_provisioning_matches_the_dashboard_and_prometheus():
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    (variable,) = dashboard()["templating"]["list"]
    assert variable["current"]["value"] == source["uid"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-compose.yml").read_text())
    # $__rate_interval is derived from this: it must be the real scrape interval
    assert source["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
