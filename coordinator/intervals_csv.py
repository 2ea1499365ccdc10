"""The intervals CSV (`intervals.csv`): one row per agent-interval, in arrival order.

For spreadsheets and pandas: the same intervals as `intervals.pb` and `latency.hlog`, in
the same order. Columns are fixed when the file is opened: a column per gRPC status code
(the name as in summary.json's status_counts), `OTHER` for any other code name. Times
are unix seconds; latencies milliseconds (exact: the histograms hold microseconds);
booleans 0/1.

| column | what |
| --- | --- |
| agent, seq | the agent's index and the report's sequence number |
| start_unix_s, end_unix_s | the interval's bounds |
| warmup, final | a warm-up interval (left out of the summary); the agent's last report |
| requests | completed in the interval, any status |
| OK ... UNAUTHENTICATED, OTHER | completed, by gRPC status code |
| sent, dropped | requests sent; arrivals dropped at the in-flight cap |
| latency_p50_ms ... latency_max_ms | the interval's latency percentiles and maximum |
| send_lag_p99_ms | the interval's send-lag p99 (how late the generator sent) |
| in_flight | requests in flight at the interval's end |
| cpu_s | the agent's CPU seconds in the interval |
| behind | the agent fell behind its schedule in the interval |
| checked, correct | predictions checked against the digits' labels, and right |
"""

from __future__ import annotations

import csv
from typing import IO

import grpc
from hdrh.histogram import HdrHistogram

from coordinator.percentiles import values_at
from model_server.api.report_pb2 import IntervalReport

INTERVALS_CSV = "intervals.csv"
STATUS_CODES = [code.name for code in grpc.StatusCode]
LATENCY_PERCENTILES = {"latency_p50_ms": 50.0, "latency_p90_ms": 90.0, "latency_p99_ms": 99.0}
COLUMNS = [
    "agent",
    "seq",
    "start_unix_s",
    "end_unix_s",
    "warmup",
    "final",
    "requests",
    *STATUS_CODES,
    "OTHER",
    "sent",
    "dropped",
    *LATENCY_PERCENTILES,
    "latency_max_ms",
    "send_lag_p99_ms",
    "in_flight",
    "cpu_s",
    "behind",
    "checked",
    "correct",
]


def _ms(us: int) -> str:
    return f"{us / 1000:.3f}"


def interval_row(
    report: IntervalReport, latency: HdrHistogram, send_lag: HdrHistogram
) -> list[str]:
    """The CSV row of one report; `latency` and `send_lag` are its histograms, decoded."""
    codes = dict(report.status_counts)
    known = [codes.pop(name, 0) for name in STATUS_CODES]
    *lat, lat_max = values_at(latency, [*LATENCY_PERCENTILES.values(), 100.0])
    (lag_p99,) = values_at(send_lag, [99.0])
    return [
        str(report.agent_index),
        str(report.seq),
        f"{report.start_unix_s:.6f}",
        f"{report.end_unix_s:.6f}",
        str(int(report.warmup)),
        str(int(report.final)),
        str(sum(report.status_counts.values())),
        *map(str, known),
        str(sum(codes.values())),
        str(report.sent),
        str(report.dropped),
        *map(_ms, lat),
        _ms(lat_max),
        _ms(lag_p99),
        str(report.in_flight),
        f"{report.cpu_s:.6f}",
        str(int(report.behind)),
        str(report.checked),
        str(report.correct),
    ]


class IntervalsCsvWriter:
    """Writes the header at once, then a row per report, flushed each time."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._csv = csv.writer(stream, lineterminator="\n")
        self._csv.writerow(COLUMNS)
        stream.flush()

    def write(self, report: IntervalReport, latency: HdrHistogram, send_lag: HdrHistogram) -> None:
        self._csv.writerow(interval_row(report, latency, send_lag))
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()
