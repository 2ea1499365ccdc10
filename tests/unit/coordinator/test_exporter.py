"""coordinator/exporter.py: read samples back from a fresh registry; no HTTP needed."""

import threading
import urllib.request

from prometheus_client import generate_latest

from agents.histogram import Recorder
from coordinator.exporter import DURATION_BUCKETS_S, RunInfo, fleet_registry, serve_metrics
from coordinator.merge import FleetState
from model_server.api.report_pb2 import IntervalReport


def _state() -> FleetState:
    rec = Recorder()
    for value in [0.0004] * 10 + [0.003] * 5 + [0.2] * 2:
        rec.record_s(value)
    state = FleetState()
    state.add(
        IntervalReport(
            agent_index=0,
            status_counts={"OK": 15, "UNAVAILABLE": 2},
            latency_hdr=rec.take(),
            sent=17,
            dropped=1,
            checked=10,
            correct=9,
        )
    )
    return state


def _registry(state):
    info = RunInfo(run_id="r1", plan="demo", target="127.0.0.1:1", load_model="open", agents=2)
    return fleet_registry(state, info, threading.Lock())


def test_requests_by_code_and_per_agent():
    reg = _registry(_state())
    assert reg.get_sample_value("raysiege_requests_total", {"code": "OK"}) == 15
    assert reg.get_sample_value("raysiege_requests_total", {"code": "UNAVAILABLE"}) == 2
    assert reg.get_sample_value("raysiege_agent_requests_total", {"agent": "0"}) == 17
    assert reg.get_sample_value("raysiege_dropped_total") == 1
    assert reg.get_sample_value("raysiege_predictions_correct_total") == 9
    # one agent reported, one has not yet: both count as running
    assert reg.get_sample_value("raysiege_agents", {"state": "running"}) == 2
    assert (
        reg.get_sample_value(
            "raysiege_run_info",
            {"run_id": "r1", "plan": "demo", "target": "127.0.0.1:1", "load_model": "open"},
        )
        == 1
    )


def test_duration_histogram_buckets_are_cumulative_and_complete():
    reg = _registry(_state())

    def bucket(le):
        return reg.get_sample_value("raysiege_request_duration_seconds_bucket", {"le": le})

    assert bucket("0.0005") == 10
    assert bucket("0.002") == 10
    assert bucket("0.005") == 15
    assert bucket("0.2") == 15  # 0.2 s lands in an HDR bucket whose top is just above 0.2
    assert bucket("0.5") == 17
    assert bucket("+Inf") == 17
    assert reg.get_sample_value("raysiege_request_duration_seconds_count") == 17
    total = reg.get_sample_value("raysiege_request_duration_seconds_sum")
    assert abs(total - (10 * 0.0004 + 5 * 0.003 + 2 * 0.2)) < 0.001
    counts = [bucket(repr(b)) for b in DURATION_BUCKETS_S]
    assert counts == sorted(counts)


def test_quantiles_come_from_the_merged_histogram():
    reg = _registry(_state())
    p50 = reg.get_sample_value("raysiege_request_duration_quantile_seconds", {"quantile": "0.5"})
    assert abs(p50 - 0.0004) < 0.0004 * 0.001 + 1e-6


def test_served_over_http_on_loopback():
    reg = _registry(_state())
    server, port = serve_metrics(reg, port=0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        server.shutdown()
        server.server_close()
    assert b'raysiege_requests_total{code="OK"} 15.0' in body
    assert body == generate_latest(reg)
