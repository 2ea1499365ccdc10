"""Agents lost mid-run: the run goes on, what they sent is kept, the gap is marked.

In process on the session's Ray, against a fake server: an agent's actor is killed once
it has reported, as a node failure or an OOM kill would.
"""

from __future__ import annotations

import asyncio

import pytest
import ray

from coordinator.api import run_async
from coordinator.plan import FleetPlan, LoadPlan, OutputPlan, Plan, TargetPlan
from coordinator.results import INTERVALS_LOG, read_reports

pytestmark = pytest.mark.integration


def plan_for(target: str, out, on_loss: str) -> Plan:
    return Plan(
        name=f"loss-{on_loss}",
        target=TargetPlan(address=target),
        load=LoadPlan(rate=100.0, duration_s=6.0, max_send_lag_s=5.0),
        fleet=FleetPlan(agents=2, agent_cpus=0.5, on_agent_loss=on_loss),
        outputs=OutputPlan(dir=str(out), metrics_port=None),
    )


async def run_and_kill(plan: Plan, victim: int):
    from coordinator.run import Run, RunOptions

    run = Run(plan, RunOptions())
    task = asyncio.ensure_future(run.execute())
    deadline = asyncio.get_running_loop().time() + 120
    while not (run.fleet and victim in run.state.agents and run.state.agents[victim].reports >= 2):
        assert not task.done(), task.exception()
        assert asyncio.get_running_loop().time() < deadline, "the victim never reported"
        await asyncio.sleep(0.05)  # polling period
    killed = run.fleet.actors[victim]
    ray.kill(killed, no_restart=True)
    result = await task
    return run, result


def test_a_killed_agent_is_marked_lost_and_the_run_completes(tmp_path, ray_address, fake_target):
    _, result = asyncio.run(run_and_kill(plan_for(fake_target, tmp_path, "continue"), victim=1))
    s = result.summary
    lost = [a for a in s["agents"] if a["lost"]]
    assert [a["index"] for a in lost] == [1]
    assert lost[0]["requests"] > 0  # its intervals before the kill were received, and kept
    assert lost[0]["lost_at_unix_s"] and "lost_reason" in lost[0]
    assert s["agents_lost"] == 1 and s["valid"]  # one of two: degraded, not invalid
    assert s["degraded"] == [
        {
            "agent": 1,
            "reason": lost[0]["lost_reason"],
            "from_unix_s": lost[0]["lost_at_unix_s"],
            "to_unix_s": None,
        }
    ]
    survivor = next(a for a in s["agents"] if a["index"] == 0)
    assert survivor["requests"] == 300  # its whole share: 50/s for 6 s
    # nothing received was lost: the log on disk adds up to the summary
    reports = read_reports(tmp_path / INTERVALS_LOG)
    assert sum(sum(r.status_counts.values()) for r in reports) == s["requests"]
    from_victim = [r for r in reports if r.agent_index == 1]
    assert len(from_victim) >= 2 and not any(r.final for r in from_victim)
    assert sum(sum(r.status_counts.values()) for r in from_victim) == lost[0]["requests"]
    assert s["requests"] == survivor["requests"] + lost[0]["requests"]


def test_a_killed_agent_can_be_replaced_for_the_rest_of_the_run(tmp_path, ray_address, fake_target):
    _, result = asyncio.run(run_and_kill(plan_for(fake_target, tmp_path, "replace"), victim=0))
    s = result.summary
    agent = next(a for a in s["agents"] if a["index"] == 0)
    assert agent["lost"] and agent["replaced_by"]  # a new actor took over index 0
    window = s["degraded"][0]
    assert window["agent"] == 0 and window["to_unix_s"] is not None  # the gap closed
    assert window["to_unix_s"] >= window["from_unix_s"]
    # the replacement carried on: agent 0 sent for well over the two intervals before the kill
    assert agent["requests"] > 200
    assert s["requests"] == sum(a["requests"] for a in s["agents"])


def test_the_python_api_runs_a_plan_given_as_a_mapping(tmp_path, ray_address, fake_target):
    result = asyncio.run(
        run_async(
            {
                "target": {"address": fake_target},
                "load": {"concurrency": 2, "requests": 40},
                "fleet": {"agents": 1, "agent_cpus": 0.5},
                "outputs": {"dir": str(tmp_path), "metrics_port": None},
                "thresholds": ["error_rate < 1%"],
            }
        )
    )
    assert result.summary["requests"] == 40
    assert result.summary["passed"] and result.summary["thresholds"][0]["passed"]
    assert (tmp_path / "summary.json").exists()


def test_an_agent_that_hangs_is_declared_lost_instead_of_hanging_the_run(
    tmp_path, ray_address, fake_target
):
    """SIGSTOP freezes an agent's process: Ray still thinks it alive, it never reports."""
    import os
    import signal

    from coordinator.run import Run, RunOptions

    plan = Plan(
        target=TargetPlan(address=fake_target),
        load=LoadPlan(rate=50.0, duration_s=8.0, timeout_s=1.0, max_send_lag_s=5.0),
        fleet=FleetPlan(agents=2, agent_cpus=0.5),
        outputs=OutputPlan(dir=str(tmp_path), metrics_port=None),
    )

    async def scenario():
        run = Run(plan, RunOptions())
        task = asyncio.ensure_future(run.execute())
        deadline = asyncio.get_running_loop().time() + 120
        while not (run.fleet and 1 in run.state.agents and run.state.agents[1].reports >= 2):
            assert not task.done(), task.exception()
            assert asyncio.get_running_loop().time() < deadline, "agent 1 never reported"
            await asyncio.sleep(0.05)  # polling period
        os.kill(run.fleet.where[1]["pid"], signal.SIGSTOP)
        return await asyncio.wait_for(task, 120)

    summary = asyncio.run(scenario()).summary
    frozen = next(a for a in summary["agents"] if a["index"] == 1)
    assert frozen["lost"] and frozen["lost_reason"].startswith("no report for")
    assert frozen["requests"] > 0
    assert next(a for a in summary["agents"] if a["index"] == 0)["requests"] == 200  # 25/s for 8 s
