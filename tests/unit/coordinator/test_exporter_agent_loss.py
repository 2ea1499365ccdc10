"""coordinator/exporter.py: a lost agent, and its replacement, as /metrics shows them."""

import threading

from coordinator.exporter import RunInfo, fleet_registry
from coordinator.merge import FleetState
from model_server.api.report_pb2 import IntervalReport


def _registry(state: FleetState):
    info = RunInfo(run_id="r", plan="p", target="t", load_model="open", agents=2)
    return fleet_registry(state, info, threading.Lock())


def test_a_lost_agent_degrades_the_run_until_its_replacement_reports():
    state = FleetState()
    for agent in (0, 1):
        state.add(
            IntervalReport(
                agent_index=agent, seq=0, start_unix_s=10, end_unix_s=11, status_counts={"OK": 5}
            )
        )
    reg = _registry(state)
    assert reg.get_sample_value("raysiege_degraded") == 0
    state.mark_lost(1, "node removed", at_unix_s=11.5)
    assert reg.get_sample_value("raysiege_degraded") == 1
    assert reg.get_sample_value("raysiege_agents", {"state": "lost"}) == 1
    assert reg.get_sample_value("raysiege_agents_lost_total") == 1
    state.mark_replaced(1, "actor-new")
    state.add(
        IntervalReport(
            agent_index=1, seq=0, start_unix_s=13, end_unix_s=14, status_counts={"OK": 5}
        )
    )
    assert reg.get_sample_value("raysiege_degraded") == 0
    assert reg.get_sample_value("raysiege_agents", {"state": "lost"}) == 0
    assert reg.get_sample_value("raysiege_agents", {"state": "running"}) == 2
    assert reg.get_sample_value("raysiege_agents_lost_total") == 1  # it was lost all the same
    assert state.degraded[0].to_unix_s == 13
