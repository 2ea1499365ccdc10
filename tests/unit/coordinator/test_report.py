"""coordinator/report.py and `coordinator report`: a run re-rendered from its folder.

The "live" summary here is made the way `Run` makes it (its own `_run_facts`, the same
FleetState and build_summary), so the re-rendered one is held equal to it.
"""

import json
import re

import pytest

from coordinator.cli import main
from coordinator.merge import FleetState
from coordinator.plan import FleetPlan, LoadPlan, OutputPlan, Plan, TargetPlan
from coordinator.report import load_run, plan_from_json, rerender
from coordinator.results import INTERVALS_LOG, PLAN, SUMMARY, ResultsError, ResultsWriter
from coordinator.run import Run, RunOptions
from coordinator.summary import build_summary
from tests.support.interval_reports import T0, make_report

RUN_ID = "run-1"
TIMING = ("started_unix_s", "interrupted")


def a_plan(**load) -> Plan:
    return Plan(
        name="smoke",
        target=TargetPlan(address="127.0.0.1:8001"),
        load=LoadPlan(**{"rate": 20.0, "duration_s": 3.0, "warmup_s": 1.0, **load}),
        fleet=FleetPlan(agents=2, agent_cpus=0.5),
        thresholds=("p99 < 50ms", "error_rate < 10%"),
        outputs=OutputPlan(metrics_port=None),
    )


def some_reports(slow: bool = False, behind: bool = False):
    """`behind`: every measured interval says its agent fell behind its schedule."""
    tail = 0.2 if slow else 0.004
    b = {"behind": behind}
    return [
        make_report(0, 0, [0.050] * 10, warmup=True),
        make_report(1, 0, [0.050] * 10, warmup=True, offset_s=0.01),
        make_report(0, 1, [0.001] * 9 + [0.003], **b),
        make_report(1, 1, [0.002] * 9 + [tail], {"OK": 9, "UNAVAILABLE": 1}, offset_s=0.01, **b),
        make_report(0, 2, [0.001] * 10, checked=2, correct=2, **b),
        make_report(1, 2, [0.002] * 10, lags=[0.0002] * 10, offset_s=0.01, **b),
        make_report(1, 3, [], interval_s=0.1, offset_s=0.01, final=True, **b),
        make_report(0, 3, [0.001] * 2, interval_s=0.1, final=True, **b),
    ]


def live_run(folder, plan: Plan, reports, *, lost: dict[int, str] | None = None) -> dict:
    """What `coordinator start` leaves: plan.json, the interval files, summary.json."""
    run = Run(plan, RunOptions(run_id=RUN_ID))
    writer = ResultsWriter(folder)
    writer.open()
    writer.write_json(PLAN, {"run_id": RUN_ID, **plan.to_dict()})
    state = FleetState()
    for index in range(plan.fleet.agents):  # placement, as Run does it
        agent = state.agent(index)
        agent.agent_id, agent.node_id = f"actor-{index}", f"node-{index}"
        agent.node_ip = f"127.0.0.{index + 1}"
    for report in reports:
        writer.append(report)
        state.add(report)
    for index, reason in (lost or {}).items():
        state.mark_lost(index, reason, at_unix_s=T0 + 2.5)  # as Run marks it
    writer.close()
    summary = build_summary(
        state,
        run=run._run_facts(plan.target.address),
        max_send_lag_s=plan.load.max_send_lag_s,
        thresholds=run.thresholds,
    )
    summary["interrupted"] = False
    summary["started_unix_s"] = 1234.5
    writer.write_json(SUMMARY, summary)
    return json.loads((folder / SUMMARY).read_text())  # as JSON has it


def without(summary: dict, *keys: str, agent_keys: tuple[str, ...] = ()) -> dict:
    out = {k: v for k, v in summary.items() if k not in keys}
    out["agents"] = [{k: v for k, v in a.items() if k not in agent_keys} for a in out["agents"]]
    return out


def rerendered(folder) -> dict:
    summary, _ = rerender(load_run(folder))
    return json.loads(json.dumps(summary))


def test_from_the_log_and_plan_alone_the_summary_is_the_live_one(tmp_path):
    live = live_run(tmp_path, a_plan(), some_reports())
    (tmp_path / SUMMARY).unlink()
    again = rerendered(tmp_path)
    assert again["requests"] == 42 and again["warmup"]["requests"] == 20
    # equal but for timing facts and the node IPs, which only placement knew
    assert without(again, *TIMING, "rendered_from", agent_keys=("node_ip",)) == without(
        live, *TIMING, agent_keys=("node_ip",)
    )
    assert again["rendered_from"] == {
        "log": INTERVALS_LOG,
        "records": 8,
        "torn_tail_bytes": 0,
        "unfinished_agents": [],
        "kept_from_previous_summary": [],
    }


def test_with_the_last_summary_there_its_run_facts_are_kept(tmp_path):
    live = live_run(tmp_path, a_plan(), some_reports(), lost={1: "node removed"})
    again = rerendered(tmp_path)
    assert without(again, "rendered_from") == live
    assert again["agents_lost"] == 1 and again["agents"][1]["lost_reason"] == "node removed"
    assert again["degraded"][0]["from_unix_s"] == T0 + 2.5
    kept = set(again["rendered_from"]["kept_from_previous_summary"])
    assert kept == {"target", "model_holdout_accuracy", "degraded", *TIMING}


def test_the_plans_thresholds_and_send_lag_limit_judge_the_rerun(tmp_path):
    # the same lagging reports: over a 0.1 ms limit the generator fell behind, under
    # the default 50 ms it kept up; and the plan's p99 threshold fails on the slow tail
    strict, lenient = tmp_path / "strict", tmp_path / "lenient"
    live = live_run(strict, a_plan(max_send_lag_s=0.0001), some_reports(slow=True, behind=True))
    again = rerendered(strict)
    assert (again["passed"], again["valid"]) == (live["passed"], live["valid"]) == (False, False)
    assert [v["passed"] for v in again["thresholds"]] == [False, True]
    assert again["generator"]["max_send_lag_s"] == 0.0001
    live_run(lenient, a_plan(), some_reports(slow=True, behind=True))
    assert rerendered(lenient)["valid"] is True


def test_a_log_cut_short_gives_the_summary_of_its_complete_records(tmp_path):
    reports = some_reports()
    live_run(tmp_path, a_plan(), reports)
    (tmp_path / SUMMARY).unlink()
    log = tmp_path / INTERVALS_LOG
    log.write_bytes(log.read_bytes()[:-5])  # the last record torn
    again = rerendered(tmp_path)
    assert again["requests"] == 40  # every measured request but the torn record's two
    assert again["rendered_from"]["torn_tail_bytes"] > 0
    assert again["rendered_from"]["unfinished_agents"] == [0]
    assert "interrupted" not in again


def test_plan_json_round_trips():
    plan = a_plan(stages=((1.0, 10.0), (2.0, 30.0)), rate=None)
    assert plan_from_json(json.loads(json.dumps(plan.to_dict()))) == plan


def test_cli_report_prints_rewrites_and_exits_as_start_would(tmp_path, capsys):
    live_run(tmp_path / "ok", a_plan(), some_reports())
    (tmp_path / "ok" / SUMMARY).write_text("{}")  # another run's: nothing of it is kept
    assert main(["report", str(tmp_path / "ok")]) == 0
    out = capsys.readouterr().out
    assert "requests   42 in " in out and f"summary rewritten in {tmp_path / 'ok'}" in out
    assert json.loads((tmp_path / "ok" / SUMMARY).read_text())["requests"] == 42

    live_run(tmp_path / "slow", a_plan(), some_reports(slow=True))
    assert main(["report", str(tmp_path / "slow")]) == 1  # p99 < 50ms failed
    live_run(tmp_path / "lagging", a_plan(max_send_lag_s=0.0001), some_reports(behind=True))
    capsys.readouterr()
    assert main(["report", str(tmp_path / "lagging"), "--json"]) == 3  # the generator fell behind
    assert json.loads(capsys.readouterr().out)["generator"]["kept_up"] is False


def test_an_interrupted_runs_report_is_judged_on_its_figures(tmp_path):
    live_run(tmp_path, a_plan(), some_reports())
    summary = json.loads((tmp_path / SUMMARY).read_text())
    (tmp_path / SUMMARY).write_text(json.dumps({**summary, "interrupted": True}))
    assert main(["report", str(tmp_path)]) == 0


def _no_log(d):
    (d / INTERVALS_LOG).unlink()


def _no_plan(d):
    (d / PLAN).unlink()


def _bad_json(d):
    (d / PLAN).write_text("{not json")


def _no_run_id(d):
    (d / PLAN).write_text(json.dumps({"name": "x"}))


def _no_section(d):
    (d / PLAN).write_text(json.dumps({"run_id": RUN_ID, "name": "x"}))


def _bad_threshold(d):
    plan = json.loads((d / PLAN).read_text())
    (d / PLAN).write_text(json.dumps({**plan, "thresholds": ["latency fast"]}))


def _garbage_log(d):
    (d / INTERVALS_LOG).write_bytes(b"hello world, not a log")


def _other_runs_records(d):
    with open(d / INTERVALS_LOG, "ab") as stream:
        from coordinator.results import encode_varint

        data = make_report(0, 9, [0.001], run_id="run-2").SerializeToString()
        stream.write(encode_varint(len(data)) + data)


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (_no_log, "intervals.pb: no such file"),
        (_no_plan, "plan.json: no such file"),
        (_bad_json, "plan.json: not valid JSON"),
        (_no_run_id, "plan.json: no run_id"),
        (_no_section, "plan.json: no 'load' section"),
        (_bad_threshold, "plan.json: thresholds[0]: 'latency fast' is not METRIC OP VALUE"),
        (_garbage_log, "intervals.pb: holds no complete IntervalReport"),
        (_other_runs_records, "intervals.pb: record 8 is from run 'run-2', not 'run-1'"),
    ],
)
def test_a_folder_that_is_not_a_run_is_one_line_and_exit_2(tmp_path, capsys, spoil, problem):
    live_run(tmp_path, a_plan(), some_reports())
    spoil(tmp_path)
    with pytest.raises(ResultsError, match=re.escape(problem)):
        load_run(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("coordinator: error: ") and problem in err[0]


def test_a_missing_folder_is_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
