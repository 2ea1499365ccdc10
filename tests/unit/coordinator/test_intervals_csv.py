"""coordinator/intervals_csv.py: one row per agent-interval, every column as documented."""

import csv
import io

from agents.histogram import decode
from coordinator.intervals_csv import COLUMNS, STATUS_CODES, IntervalsCsvWriter, interval_row
from tests.support.interval_reports import T0, make_report


def row_of(report) -> dict[str, str]:
    row = interval_row(report, decode(report.latency_hdr), decode(report.send_lag_hdr))
    assert len(row) == len(COLUMNS)
    return dict(zip(COLUMNS, row, strict=True))


def test_a_row_holds_the_reports_figures():
    report = make_report(
        3,
        7,
        [0.001] * 50 + [0.002] * 40 + [0.010] * 9 + [0.250],
        {"OK": 97, "UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 1},
        lags=[0.0001] * 98 + [0.030] * 2,
        dropped=4,
        in_flight=12,
        cpu_s=0.3125,
        behind=True,
        checked=10,
        correct=9,
        final=True,
    )
    row = row_of(report)
    assert (row["agent"], row["seq"], row["warmup"], row["final"]) == ("3", "7", "0", "1")
    assert float(row["start_unix_s"]) == T0 + 7 and float(row["end_unix_s"]) == T0 + 8
    assert (row["requests"], row["OK"], row["UNAVAILABLE"], row["DEADLINE_EXCEEDED"]) == (
        "100",
        "97",
        "2",
        "1",
    )
    assert sum(int(row[c]) for c in [*STATUS_CODES, "OTHER"]) == 100
    assert (row["sent"], row["dropped"], row["in_flight"], row["behind"]) == ("100", "4", "12", "1")
    # µs buckets, shown in ms: the top of each value's bucket, exactly
    assert row["latency_p50_ms"] == "1.000"
    assert row["latency_p90_ms"] == "2.000"
    assert row["latency_p99_ms"] == "10.007"
    assert row["latency_max_ms"] == "250.111"
    assert row["send_lag_p99_ms"] == "30.015"
    assert (row["cpu_s"], row["checked"], row["correct"]) == ("0.312500", "10", "9")


def test_unknown_codes_are_counted_under_other_and_empty_intervals_are_zeros():
    row = row_of(make_report(0, 0, [], {"TEAPOT": 3, "OK": 1}, warmup=True))
    assert (row["OK"], row["OTHER"], row["requests"], row["warmup"]) == ("1", "3", "4", "1")
    assert row["latency_p99_ms"] == row["latency_max_ms"] == "0.000"


def test_the_header_comes_first_and_each_row_is_flushed():
    stream = io.StringIO()
    writer = IntervalsCsvWriter(stream)
    assert stream.getvalue() == ",".join(COLUMNS) + "\n"
    for seq in range(3):
        report = make_report(1, seq, [0.001] * (seq + 1))
        writer.write(report, decode(report.latency_hdr), decode(report.send_lag_hdr))
    rows = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert [(r["agent"], r["seq"], r["requests"]) for r in rows] == [
        ("1", "0", "1"),
        ("1", "1", "2"),
        ("1", "2", "3"),
    ]
