"""The capacity search end to end: real Ray, real agents, real gRPC.

Against a fake server of known capacity (8 slots of 25 ms each: 320 requests/s, first
come first served) the answer is computed, not guessed: the M/D/8 queue model
(coordinator/capacity_model.py) puts the highest rate with p99 under 250 ms at about
314 requests/s, and the search must land within 10% of it. The bound is ten service
times, so that latency noise from a machine shared with other test runs moves the knee
by a few percent only, and small against the trials' length, so that a rate over
capacity shows its growing queue within a trial; for the same reason the generator may
lag 100 ms (its limit is 50 ms by default) before a trial is called its fault.

Against the bundled MNIST server, the CLI reports an answer and a curve, with one server
and one /metrics port for the whole search. Its SLO is loose (p99 under 200 ms) and its
rate capped (300/s), because on two shared cores the TensorFlow server, the agent and
other test runs compete: the point is the machinery end to end, in bounded time, and an
answer (exit 0) whether the server meets the SLO up to the cap or fails below it.
"""

from __future__ import annotations

import csv
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from coordinator.api import find_capacity
from coordinator.capacity_model import SlotServer
from tests.support.processes import Child, coordinator, fake_server

pytestmark = pytest.mark.integration

SLOTS, SERVICE_S, SLO, BOUND_S = 8, 0.025, "p99<250ms", 0.250


def test_the_search_finds_the_analytic_knee_of_a_server_of_known_capacity(tmp_path, ray_address):
    knee = SlotServer(SLOTS, SERVICE_S).knee(0.99, BOUND_S)
    assert 300 < knee < 320  # 8 slots of 25 ms: capacity 320/s
    server, target = fake_server("--slots", str(SLOTS), "--service-ms", str(SERVICE_S * 1000))
    lines: list[str] = []

    class Lines:  # the progress stream: one line per trial
        def write(self, text: str) -> None:
            lines.extend(line for line in text.splitlines() if line)

        def flush(self) -> None:
            pass

    try:
        result = find_capacity(
            {
                "target": {"address": target},
                "fleet": {"agents": 1, "agent_cpus": 0.5},
                "load": {"warmup": "1s", "check_fraction": 0, "max_send_lag": "100ms"},
                "outputs": {"metrics_port": 0},
            },
            SLO,
            start_rate=250,
            trial_duration="2s",
            confirm_duration="6s",
            min_requests=300,
            out=tmp_path,
            stream=Lines(),
        )
    finally:
        server.stop()

    trials = [(t.rate, t.phase, t.outcome) for t in result.trials]
    assert result.status == "found", (result.finished, trials)
    assert result.max_rate_rps == pytest.approx(knee, rel=0.10), (knee, trials)
    assert result.finished.failing_rate_rps / result.max_rate_rps <= 1.05  # the precision
    answer = result.answer
    assert answer is not None and answer.phase == "confirm" and answer.outcome == "pass"
    assert answer.measurement.percentile_s < BOUND_S and answer.confidence >= 0.95

    # the outputs: capacity.json, every trial as JSON and CSV, the curve
    data = json.loads((tmp_path / "capacity.json").read_text())
    assert data["max_rate_rps"] == result.max_rate_rps and data["status"] == "found"
    assert data["answer"]["confidence"] >= 0.95 and data["answer"]["latency_s"]["p99"] < BOUND_S
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [(float(r["rate"]), r["phase"], r["outcome"]) for r in rows] == trials
    assert (tmp_path / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for trial in result.trials:
        folder = Path(trial.measurement.out_dir)
        assert folder.parent == tmp_path / "trials"
        assert folder.name == f"{trial.index:03d}-{trial.rate:g}"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["requests"] == trial.measurement.requests
        assert json.loads((folder / "trial.json").read_text())["outcome"] == trial.outcome
        plan = json.loads((folder / "plan.json").read_text())
        assert plan["load"]["arrival"] == "poisson" and plan["load"]["rate"] == trial.rate
        # one /metrics port for the whole search: the first trial's free port, reused
        assert plan["outputs"]["metrics_port"] == (0 if trial.index == 0 else data["metrics_port"])
    # live progress: a header, then one line per trial
    assert len([line for line in lines if line.startswith("trial ")]) == len(result.trials)


def scrape_during(child: Child, port: int) -> str | None:
    """/metrics while the search runs: scraped until it answers or the search ends (between
    two trials the port is closed for a moment)."""
    while child.process.poll() is None:
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)  # polling period, not synchronisation
    return None


def test_against_the_bundled_mnist_server_the_cli_reports_an_answer_and_a_curve(
    tmp_path, ray_address
):
    out = tmp_path / "cap"
    child = Child(
        coordinator(
            "capacity",
            "--address",
            ray_address,
            "--slo",
            "p99<200ms",
            "--start-rate",
            "100",
            "--max-rate",
            "300",
            "--precision",
            "25%",
            "--max-trials",
            "8",
            "--trial-duration",
            "2s",
            "--confirm-duration",
            "4s",
            "--min-requests",
            "300",
            "--warmup",
            "1s",
            "--agent-cpus",
            "0.5",
            "--metrics-port",
            "0",
            "--out",
            str(out),
        )
    )
    try:
        port = int(
            child.wait_for_line(
                r"metrics on http://127\.0\.0\.1:(\d+)/metrics", stream="stderr", timeout_s=240
            ).group(1)
        )
        body = scrape_during(child, port)
        code = child.wait(timeout_s=300)
    finally:
        child.stop()
    stderr = child.text("stderr")
    assert code == 0, stderr[-3000:]
    data = json.loads((out / "capacity.json").read_text())
    assert data["status"] in ("found", "max_rate") and data["max_rate_rps"] >= 1
    assert data["bundled_server"] and data["model_holdout_accuracy"] > 0.8
    assert data["answer"]["percentile_s"] < 0.200 and data["answer"]["confidence"] >= 0.95
    assert len(data["trials"]) <= 8
    assert (out / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "model_server.log").exists()  # one bundled server for the whole search
    assert "capacity: " in child.text("stdout") and "results in" in child.text("stdout")
    assert stderr.count("starting the bundled model server") == 1
    ports = {int(p) for p in re.findall(r"metrics on http://127\.0\.0\.1:(\d+)/", stderr)}
    assert ports == {port}  # every trial served /metrics on the same port
    assert body is not None and "raysiege_requests_total" in body
