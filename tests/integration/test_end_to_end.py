"""`coordinator start` end to end: real Ray, real agents, real gRPC, real /metrics.

The contract run uses the embedded local Ray and the bundled MNIST model server, exactly
as a user would; the others join the session's Ray and load a fake server, where the
model is not the point.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from coordinator.errors import TargetUnavailable
from coordinator.exporter import fleet_registry
from coordinator.plan import FleetPlan, LoadPlan, OutputPlan, Plan, TargetPlan
from coordinator.progress import PlainProgress
from coordinator.results import INTERVALS_LOG, read_reports
from coordinator.run import Run, RunOptions
from tests.support.processes import Child, coordinator, free_port, poll

pytestmark = pytest.mark.integration

METRICS_LINE = r"metrics on http://127\.0\.0\.1:(\d+)/metrics"


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def ok_requests(port: int) -> float:
    return scrape(port).get(("raysiege_requests_total", (("code", "OK"),)), 0.0)


def check_summary_contract(summary: dict, agents: int) -> None:
    for key in (
        "requests",
        "ok",
        "errors",
        "status_counts",
        "throughput_rps",
        "latency_s",
        "agents",
        "duration_s",
        "target",
    ):
        assert key in summary, key
    assert set(summary["latency_s"]) >= {"p50", "p90", "p99", "p999", "max", "mean"}
    assert summary["requests"] == sum(summary["status_counts"].values())
    assert summary["requests"] == sum(a["requests"] for a in summary["agents"])
    assert summary["ok"] + summary["errors"] == summary["requests"]
    assert len(summary["agents"]) == agents
    for agent in summary["agents"]:
        assert {"id", "node", "requests"} <= set(agent) and agent["id"] and agent["node"]
    lat = summary["latency_s"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]


def test_the_contract_run_with_embedded_ray_and_the_bundled_server(tmp_path):
    """The command from the foundation issue, plus live and final /metrics scrapes."""
    out = tmp_path / "demo"
    run = Child(
        coordinator(
            "start",
            "--agents",
            "2",
            "--rate",
            "200",
            "--duration",
            "10s",
            "--out",
            str(out),
            "--metrics-port",
            "0",
            "--linger",
            "5s",
        )
    )
    port = int(run.wait_for_line(METRICS_LINE, stream="stderr", timeout_s=60).group(1))
    poll(lambda: ok_requests(port) > 0, timeout_s=120, what="live requests on /metrics")
    summary_path = out / "summary.json"
    poll(summary_path.exists, timeout_s=120, what="summary.json")
    summary = json.loads(summary_path.read_text())
    final = scrape(port)  # during --linger: the exporter shows the final values
    assert run.wait(timeout_s=60) == 0, run.text("stderr")[-3000:]

    check_summary_contract(summary, agents=2)
    assert summary["errors"] == 0 and summary["status_counts"] == {"OK": summary["requests"]}
    # 200/s for 10 s is a schedule of exactly 2,000 arrivals, none dropped
    assert summary["requests"] == 2000 and summary["dropped"] == 0
    assert summary["model_holdout_accuracy"] >= 0.9
    assert summary["accuracy"]["checked"] > 0 and summary["accuracy"]["rate"] >= 0.85
    assert final[("raysiege_requests_total", (("code", "OK"),))] == summary["requests"]
    assert final[("raysiege_request_duration_seconds_count", ())] == summary["requests"]
    assert final[("raysiege_agents", (("state", "finished"),))] == 2
    assert (
        sum(v for (name, _), v in final.items() if name == "raysiege_agent_requests_total")
        == summary["requests"]
    )
    # the log on disk holds every interval the summary was made from
    reports = read_reports(out / INTERVALS_LOG)
    assert sum(sum(r.status_counts.values()) for r in reports) == summary["requests"]
    assert {r.agent_index for r in reports if r.final} == {0, 1}
    assert "requests   2000" in run.text("stdout")


def test_a_request_count_is_met_exactly_across_the_fleet(tmp_path, ray_address, fake_target):
    run = Child(
        coordinator(
            "start",
            "--address",
            ray_address,
            "--target",
            fake_target,
            "--agents",
            "2",
            "--concurrency",
            "4",
            "--requests",
            "301",
            "--duration",
            "2m",
            "--out",
            str(tmp_path),
            "--no-metrics",
            "--json",
            "--agent-cpus",
            "0.5",
            "--max-send-lag",
            "5s",
        )
    )
    assert run.wait(timeout_s=120) == 0, run.text("stderr")[-3000:]
    summary = json.loads(run.text("stdout"))
    check_summary_contract(summary, agents=2)
    assert summary["requests"] == summary["ok"] == 301
    assert sorted(a["requests"] for a in summary["agents"]) == [150, 151]
    assert summary["load_model"] == "closed"
    assert json.loads((tmp_path / "summary.json").read_text())["requests"] == 301


def test_an_unreachable_target_fails_fast_with_exit_3(tmp_path):
    port = free_port()
    run = Child(
        coordinator(
            "start",
            "--target",
            f"127.0.0.1:{port}",
            "--connect-timeout",
            "2s",
            "--duration",
            "1s",
            "--out",
            str(tmp_path / "r"),
            "--no-metrics",
        )
    )
    assert run.wait(timeout_s=60) == 3
    assert f"127.0.0.1:{port}" in run.text("stderr")
    assert not (tmp_path / "r" / "summary.json").exists()


def test_errors_are_data_and_the_run_completes(tmp_path, ray_address):
    """In process, on the session's Ray: a server that fails every call."""
    import grpc

    from tests.support.fake_server import Behaviour, start_fake_server

    async def scenario():
        server, port = await start_fake_server(Behaviour(fail_with=grpc.StatusCode.UNAVAILABLE))
        try:
            plan = Plan(
                target=TargetPlan(address=f"127.0.0.1:{port}"),
                load=LoadPlan(rate=100.0, duration_s=2.0),
                fleet=FleetPlan(agents=2, agent_cpus=0.5),
                outputs=OutputPlan(dir=str(tmp_path), metrics_port=0),
            )
            run = Run(plan, RunOptions(), progress=PlainProgress())
            result = await run.execute()
            return run, result
        finally:
            await server.stop(0)

    run, result = asyncio.run(scenario())
    summary = result.summary
    check_summary_contract(summary, agents=2)
    assert summary["requests"] == 200 and summary["ok"] == 0
    assert summary["status_counts"] == {"UNAVAILABLE": 200}
    assert summary["error_rate"] == 1.0
    assert run.info.phase == "finished"


def test_an_unready_model_is_refused_before_any_agent_starts(tmp_path, fake_target):
    plan = Plan(
        target=TargetPlan(address=fake_target, model="resnet"),
        load=LoadPlan(rate=10.0, duration_s=1.0),
        outputs=OutputPlan(dir=str(tmp_path), metrics_port=None),
    )
    run = Run(plan, RunOptions(target_timeout_s=5))
    with pytest.raises(TargetUnavailable, match="resnet"):
        asyncio.run(run.execute())
    assert not Path(tmp_path / "summary.json").exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_the_agents_writes_everything_and_exits_130(
    tmp_path, ray_address, fake_target, sig
):
    import signal

    run = Child(
        coordinator(
            "start",
            "--address",
            ray_address,
            "--target",
            fake_target,
            "--agents",
            "2",
            "--rate",
            "100",
            "--duration",
            "5m",
            "--out",
            str(tmp_path),
            "--no-metrics",
            "--agent-cpus",
            "0.5",
        )
    )
    log = tmp_path / INTERVALS_LOG
    poll(
        lambda: log.exists() and len(read_reports(log)) >= 4,
        timeout_s=120,
        what="four intervals on disk",
    )
    run.process.send_signal(getattr(signal, sig))
    assert run.wait(timeout_s=60) == 130, run.text("stderr")[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["requests"] == sum(sum(r.status_counts.values()) for r in read_reports(log)) > 0
    assert "requests" in run.text("stdout")  # the summary was printed too


def test_secrets_never_reach_the_results_the_logs_or_metrics(tmp_path, ray_address, caplog):
    """A bearer token from a file and a secret header are sent, and written nowhere."""
    from tests.support.fake_server import Behaviour, start_fake_server

    token_file = tmp_path / "token"
    token_file.write_text("tok-3f9a1c\n")
    out = tmp_path / "run"

    async def scenario():
        behaviour = Behaviour(token="tok-3f9a1c")
        server, port = await start_fake_server(behaviour)
        try:
            plan = Plan(
                target=TargetPlan(
                    address=f"127.0.0.1:{port}",
                    bearer_token_file=str(token_file),
                    metadata={"x-api-key": "key-77d2e0"},
                ),
                load=LoadPlan(concurrency=1, requests=20),
                fleet=FleetPlan(agents=1, agent_cpus=0.5),
                outputs=OutputPlan(dir=str(out), metrics_port=0),
            )
            run = Run(plan, RunOptions(), progress=PlainProgress())
            task = asyncio.ensure_future(run.execute())
            while run.metrics_port is None:
                await asyncio.sleep(0.01)  # polling period
            return await task, run
        finally:
            await server.stop(0)

    caplog.set_level("DEBUG")
    result, run = asyncio.run(scenario())
    assert result.summary["ok"] == 20  # the token went out with every request
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    metrics = generate_latest(fleet_registry(run.state, run.info, run.lock))
    logs = caplog.text.encode()
    for secret in (b"tok-3f9a1c", b"key-77d2e0"):
        assert secret not in written and secret not in metrics and secret not in logs
    assert logs  # the run did log
    assert (
        b"x-api-key" in (out / "plan.json").read_bytes()
    )  # the header is named, its value redacted
