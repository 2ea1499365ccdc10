"""Re-rendering a run from its results folder: what `coordinator report RUN_DIR` does.

The figures come from `intervals.pb` and `plan.json` alone: the reports are replayed in
the order they arrived through the same `FleetState` merge and `build_summary` a live run
uses, with the plan's thresholds and send-lag limit, so the summary of a complete log
equals the live one. A log cut short (a SIGKILLed coordinator) gives the summary of every
complete record in it.

A few facts of a run are not in those two files: the address of a bundled model server
and its holdout accuracy, the agents' node IPs, which agents were lost and why, when the
run started, whether it was interrupted, and anything else the live summary recorded
beyond the figures. When the folder still holds a `summary.json`, those are kept from it
(lost agents count as lost again, so the verdict is the live one); without it (the
coordinator was killed before writing one) they are left out, and `rendered_from` says
which agents never sent their final report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from coordinator.errors import PlanError
from coordinator.merge import FleetState
from coordinator.plan import FleetPlan, LoadPlan, OutputPlan, Plan, TargetPlan
from coordinator.results import (
    INTERVALS_LOG,
    PLAN,
    SUMMARY,
    IntervalLog,
    ResultsError,
    ResultsWriter,
    scan_log,
)
from coordinator.summary import build_summary, run_facts
from coordinator.thresholds import Threshold, parse_thresholds

log = logging.getLogger(__name__)

# Facts the log cannot know; a previous summary.json's values win over the re-render's.
# (Its keys that the re-render does not produce at all are kept as well.)
KEPT_FACTS = ("target", "model_holdout_accuracy", "degraded")
# ... and per agent: where it ran, and when and why it was lost (and replaced).
KEPT_AGENT_FACTS = ("node_ip", "lost", "lost_reason", "lost_at_unix_s", "replaced_by")


@dataclass
class RunFolder:
    """A results folder, read: the plan as run, the interval log, the last summary."""

    path: Path
    run_id: str
    plan: Plan
    thresholds: list[Threshold]
    log: IntervalLog
    previous: dict[str, Any] | None


def _build(cls: type, data: Any) -> Any:
    """A plan section from plan.json; fields this version does not know are ignored."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in dict(data).items() if k in names})


def plan_from_json(data: Any, source: str = PLAN) -> Plan:
    """The Plan that `Plan.to_dict()` wrote (not validated again: TLS files may be gone)."""
    try:
        load = dict(data["load"])
        load["stages"] = tuple(tuple(stage) for stage in load.get("stages") or ())
        return Plan(
            name=str(data["name"]),
            target=_build(TargetPlan, data["target"]),
            load=_build(LoadPlan, load),
            fleet=_build(FleetPlan, data["fleet"]),
            thresholds=tuple(str(rule) for rule in data.get("thresholds") or ()),
            abort_on_threshold=bool(data.get("abort_on_threshold", False)),
            outputs=_build(OutputPlan, data.get("outputs") or {}),
        )
    except KeyError as error:
        raise ResultsError(f"{source}: no {error.args[0]!r} section: not a plan as run") from None
    except (TypeError, ValueError) as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ResultsError(f"{source}: not a plan as run ({text})") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file: not a results folder") from None
    except OSError as error:
        raise ResultsError(f"{path}: cannot read: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path}: not valid JSON ({error})".splitlines()[0]) from None


def load_run(path: Path) -> RunFolder:
    """Read a results folder; every problem is a one-line ResultsError naming the file."""
    if not path.is_dir():
        raise ResultsError(f"{path}: no such folder")
    plan_json = _read_json(path / PLAN)
    if not isinstance(plan_json, dict) or not isinstance(plan_json.get("run_id"), str):
        raise ResultsError(f"{path / PLAN}: no run_id: not the plan of a run")
    run_id = plan_json["run_id"]
    plan = plan_from_json(plan_json, str(path / PLAN))
    try:
        thresholds = parse_thresholds(plan.thresholds)
    except PlanError as error:
        raise ResultsError(f"{path / PLAN}: {error}") from None
    log_path = path / INTERVALS_LOG
    if not log_path.is_file():
        raise ResultsError(f"{log_path}: no such file: not a results folder")
    interval_log = scan_log(log_path)
    if not interval_log.reports and interval_log.torn_tail_bytes:
        raise ResultsError(f"{log_path}: holds no complete IntervalReport")
    for i, report in enumerate(interval_log.reports):
        if report.run_id and report.run_id != run_id:
            raise ResultsError(
                f"{log_path}: record {i} is from run {report.run_id!r}, not {run_id!r}"
            )
    previous = None
    if (path / SUMMARY).is_file():
        try:
            previous = _read_json(path / SUMMARY)
        except ResultsError as error:
            log.warning("%s; its run facts are not kept", error)
        if not isinstance(previous, dict) or previous.get("run_id") != run_id:
            previous = None  # another run's, or not a summary: nothing of it is kept
    return RunFolder(path, run_id, plan, thresholds, interval_log, previous)


def _previous_agents(folder: RunFolder) -> dict[int, dict[str, Any]]:
    agents = (folder.previous or {}).get("agents") or []
    return {
        a["index"]: a for a in agents if isinstance(a, dict) and isinstance(a.get("index"), int)
    }


def replay(folder: RunFolder) -> FleetState:
    """The merged state of every complete record, as the live run merged them.

    Agents the previous summary lists as lost are marked lost (so the verdict counts
    them); when they were lost is not in the log, so no degraded window is derived here.
    """
    state = FleetState()
    for index in range(folder.plan.fleet.agents):
        state.agent(index)  # the live run knows every placed agent, reporting or not
    previous = _previous_agents(folder)
    for index, old in previous.items():
        agent = state.agent(index)
        agent.agent_id, agent.node_id = str(old.get("id", "")), str(old.get("node", ""))
    for report in folder.log.reports:
        state.add(report)
    for index, old in previous.items():
        state.agent(index).node_ip = str(old.get("node_ip", ""))
        if old.get("lost"):
            state.mark_lost(index, str(old.get("lost_reason", "")))
    return state


def rerender(folder: RunFolder) -> tuple[dict[str, Any], FleetState]:
    """The summary of the run from its log and plan, with the facts kept from the last one."""
    state = replay(folder)
    previous = folder.previous or {}
    target = folder.plan.target.address or "bundled"
    summary = build_summary(
        state,
        run=run_facts(folder.plan, folder.run_id, target),
        max_send_lag_s=folder.plan.load.max_send_lag_s,
        thresholds=folder.thresholds,
    )
    kept = [key for key in KEPT_FACTS if key in previous]
    kept += [key for key in previous if key not in summary and key != "rendered_from"]
    for key in kept:
        summary[key] = previous[key]
    previous_agents = _previous_agents(folder)
    for agent in summary["agents"]:
        old = previous_agents.get(agent["index"], {})
        agent.update({k: v for k, v in old.items() if k in KEPT_AGENT_FACTS or k not in agent})
    summary["rendered_from"] = {
        "log": INTERVALS_LOG,
        "records": len(folder.log.reports),
        "torn_tail_bytes": folder.log.torn_tail_bytes,
        "unfinished_agents": sorted(i for i, a in state.agents.items() if not a.finished),
        "kept_from_previous_summary": kept,
    }
    return summary, state


def write_summary(folder: RunFolder, summary: dict[str, Any]) -> Path:
    try:
        return ResultsWriter(folder.path).write_json(SUMMARY, summary)
    except OSError as error:
        raise ResultsError(f"{folder.path / SUMMARY}: cannot write: {error.strerror}") from None
