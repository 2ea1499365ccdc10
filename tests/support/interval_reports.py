"""IntervalReports as agents send them, made from chosen latencies, for tests of results."""

from __future__ import annotations

from agents.histogram import Recorder
from model_server.api.report_pb2 import IntervalReport

T0 = 1_800_000_000.0  # a fixed wall-clock origin: no test reads the clock


def encoded(seconds: list[float]) -> bytes:
    recorder = Recorder()
    for value in seconds:
        recorder.record_s(value)
    return recorder.take()


def make_report(
    agent: int,
    seq: int,
    latencies: list[float],
    codes: dict[str, int] | None = None,
    *,
    lags: list[float] | None = None,
    interval_s: float = 1.0,
    offset_s: float = 0.0,
    **fields,
) -> IntervalReport:
    """Agent `agent`'s report number `seq`, over [T0 + offset + seq·interval, +interval)."""
    codes = {"OK": len(latencies)} if codes is None else codes
    start = T0 + offset_s + seq * interval_s
    fields.setdefault("run_id", "run-1")
    return IntervalReport(
        agent_index=agent,
        agent_id=f"actor-{agent}",
        node_id=f"node-{agent}",
        seq=seq,
        start_unix_s=start,
        end_unix_s=start + interval_s,
        status_counts=codes,
        latency_hdr=encoded(latencies),
        send_lag_hdr=encoded(lags if lags is not None else [0.0001] * len(latencies)),
        sent=sum(codes.values()),
        load_model="open",
        **fields,
    )


def write_run_folder(folder, plan, reports: list[IntervalReport], run_id: str = "run-1"):
    """A results folder as `coordinator start` leaves it, but for summary.json."""
    from coordinator.results import PLAN, ResultsWriter

    writer = ResultsWriter(folder)
    writer.open()
    writer.write_json(PLAN, {"run_id": run_id, **plan.to_dict()})
    for report in reports:
        writer.append(report)
    writer.close()
    return folder
