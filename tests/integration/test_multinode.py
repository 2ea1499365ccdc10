"""A real multi-node Ray cluster on this machine (a head and two workers, each its own
raylet on 127.0.0.1): `coordinator start --address` spreads agents over distinct nodes,
honours placement constraints, and survives the removal of a node mid-run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from coordinator.results import INTERVALS_LOG, read_reports
from tests.support.processes import Child, coordinator, python

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster():
    child = Child(python("-m", "tests.support.cluster", "--workers", "2"), stdin=True)
    ready = child.wait_for_line(r"READY address=(\S+) head=(\w+) workers=(\S+)", timeout_s=180)
    yield {
        "address": ready.group(1),
        "head": ready.group(2),
        "workers": ready.group(3).split(","),
        "child": child,
    }
    child.send("quit")
    child.wait(timeout_s=120)


def start(cluster, target, out, *args: str) -> Child:
    run = Child(
        coordinator(
            "start",
            "--address",
            cluster["address"],
            "--target",
            target,
            "--out",
            str(out),
            "--no-metrics",
            "--agent-cpus",
            "0.5",
            # placement is the point here, not the generator's timing on a busy machine
            "--max-send-lag",
            "5s",
            *args,
        )
    )
    run.out = Path(out)
    return run


def finish(run: Child) -> dict:
    code = run.wait(timeout_s=180)
    assert code == 0, run.text("stderr")[-3000:]
    # from the file: Ray may print a dead raylet's last words on the driver's stdout
    return json.loads((run.out / "summary.json").read_text())


def test_strict_spread_puts_each_agent_on_its_own_node(tmp_path, cluster, fake_target):
    summary = finish(
        start(
            cluster,
            fake_target,
            tmp_path,
            "--agents",
            "3",
            "--placement",
            "STRICT_SPREAD",
            "--rate",
            "150",
            "--duration",
            "3s",
        )
    )
    nodes = [a["node"] for a in summary["agents"]]
    assert len(set(nodes)) == 3
    assert set(nodes) == {cluster["head"], *cluster["workers"]}
    assert summary["requests"] == sum(a["requests"] for a in summary["agents"]) == 450


def test_agents_can_be_kept_off_the_head_and_on_nodes_with_a_resource(
    tmp_path, cluster, fake_target
):
    summary = finish(
        start(
            cluster,
            fake_target,
            tmp_path,
            "--agents",
            "2",
            "--avoid-head",
            "--node-resource",
            "loadgen",
            "--concurrency",
            "2",
            "--requests",
            "60",
        )
    )
    nodes = {a["node"] for a in summary["agents"]}
    assert nodes == set(cluster["workers"])
    assert summary["requests"] == 60


def test_a_node_removed_mid_run_loses_its_agent_not_the_run(tmp_path, cluster, fake_target):
    run = start(
        cluster,
        fake_target,
        tmp_path,
        "--agents",
        "3",
        "--placement",
        "STRICT_SPREAD",
        "--rate",
        "90",
        "--duration",
        "8s",
    )
    log = tmp_path / INTERVALS_LOG
    deadline = time.monotonic() + 120
    while True:  # until every agent has two intervals on disk
        seen = [r.agent_index for r in read_reports(log)] if log.exists() else []
        if all(seen.count(i) >= 2 for i in range(3)):
            break
        assert run.process.poll() is None, run.text("stderr")[-3000:]
        assert time.monotonic() < deadline, "agents never reported"
        time.sleep(0.1)  # polling period
    cluster["child"].send("remove 1")
    removed = cluster["child"].wait_for_line(r"REMOVED (\w+)", timeout_s=60).group(1)
    summary = finish(run)
    lost = [a for a in summary["agents"] if a["lost"]]
    assert [a["node"] for a in lost] == [removed]
    assert lost[0]["requests"] > 0 and summary["degraded"][0]["agent"] == lost[0]["index"]
    survivors = [a for a in summary["agents"] if not a["lost"]]
    assert [a["requests"] for a in survivors] == [240, 240]  # 30/s each for 8 s
    assert summary["requests"] == sum(a["requests"] for a in summary["agents"])
