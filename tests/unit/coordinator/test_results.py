"""coordinator/results.py: the interval log round-trips and survives a torn last write;
the intervals CSV and the hlog get the same intervals, each flushed as it arrives."""

import csv
import io

import pytest

from coordinator.hlog import LATENCY_HLOG
from coordinator.intervals_csv import INTERVALS_CSV
from coordinator.results import (
    INTERVALS_LOG,
    ResultsError,
    ResultsWriter,
    encode_varint,
    read_delimited,
    read_reports,
    scan_log,
)
from model_server.api.report_pb2 import IntervalReport
from tests.support.interval_reports import T0, make_report


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**31, 2**63 - 1])
def test_varint_round_trip(value):
    records = list(read_delimited(io.BytesIO(encode_varint(value) + b"x" * min(value, 3))))
    if value <= 3:
        assert records == [b"x" * value]
    else:
        assert records == []  # the record is shorter than its length: ignored, not misread


def test_every_report_is_on_disk_as_soon_as_it_is_appended(tmp_path):
    writer = ResultsWriter(tmp_path / "run")
    writer.open()
    for seq in range(3):
        writer.append(IntervalReport(agent_index=1, seq=seq, status_counts={"OK": seq + 1}))
        # readable by another reader before close: flushed per report
        assert [r.seq for r in read_reports(tmp_path / "run" / INTERVALS_LOG)] == list(
            range(seq + 1)
        )
    writer.close()


def test_a_torn_last_record_is_ignored(tmp_path):
    writer = ResultsWriter(tmp_path)
    writer.open()
    writer.append(IntervalReport(seq=0, status_counts={"OK": 1}))
    writer.append(IntervalReport(seq=1, status_counts={"OK": 2}))
    writer.close()
    path = tmp_path / INTERVALS_LOG
    path.write_bytes(path.read_bytes()[:-2])
    assert [r.seq for r in read_reports(path)] == [0]


def test_json_is_replaced_whole(tmp_path):
    writer = ResultsWriter(tmp_path)
    writer.open()
    writer.write_json("summary.json", {"a": 1})
    writer.write_json("summary.json", {"a": 2})
    assert (tmp_path / "summary.json").read_text().strip() == '{\n  "a": 2\n}'
    assert not list(tmp_path.glob("*.tmp"))


# -- the CSV and the hlog beside the log ------------------------------------------------


def csv_rows(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def hlog_lines(path):
    return [line for line in path.read_text().splitlines() if not line.startswith(("#", '"'))]


def test_every_report_reaches_the_csv_and_the_hlog_as_it_is_appended(tmp_path):
    writer = ResultsWriter(tmp_path)
    writer.open()
    reports = [
        make_report(0, 0, [0.004] * 3, warmup=True),
        make_report(1, 0, [0.001] * 2, {"OK": 1, "UNAVAILABLE": 1}),
        make_report(0, 1, []),
    ]
    for n, report in enumerate(reports, start=1):
        writer.append(report)
        # each file is readable by another reader before close: flushed per report
        assert len(read_reports(tmp_path / INTERVALS_LOG)) == n
        assert len(csv_rows(tmp_path / INTERVALS_CSV)) == n
        assert len(hlog_lines(tmp_path / LATENCY_HLOG)) == n
    writer.close()
    rows = csv_rows(tmp_path / INTERVALS_CSV)
    assert [(r["agent"], r["seq"], r["requests"], r["warmup"]) for r in rows] == [
        ("0", "0", "3", "1"),
        ("1", "0", "2", "0"),
        ("0", "1", "0", "0"),
    ]
    lines = hlog_lines(tmp_path / LATENCY_HLOG)
    assert [line.split(",")[-1].encode() for line in lines[:2]] == [
        reports[0].latency_hdr,
        reports[1].latency_hdr,
    ]
    assert lines[0].startswith("Tag=warmup,1.000,1.000,")  # base: an interval before the first
    assert f"#[BaseTime: {T0 - 1:.3f} " in (tmp_path / LATENCY_HLOG).read_text()


def test_opening_a_folder_again_starts_the_interval_files_afresh(tmp_path):
    for run in range(2):
        writer = ResultsWriter(tmp_path)
        writer.open()
        writer.append(make_report(0, 0, [0.001], run_id=f"run-{run}"))
        writer.close()
    assert [r.run_id for r in read_reports(tmp_path / INTERVALS_LOG)] == ["run-1"]
    assert len(csv_rows(tmp_path / INTERVALS_CSV)) == 1
    assert len(hlog_lines(tmp_path / LATENCY_HLOG)) == 1


def test_scan_log_measures_a_torn_tail(tmp_path):
    writer = ResultsWriter(tmp_path)
    writer.open()
    for seq in range(3):
        writer.append(make_report(0, seq, [0.001] * (seq + 1)))
    writer.close()
    path = tmp_path / INTERVALS_LOG
    whole = path.read_bytes()
    assert scan_log(path).torn_tail_bytes == 0
    path.write_bytes(whole[:-7])
    scanned = scan_log(path)
    assert [r.seq for r in scanned.reports] == [0, 1]
    last = make_report(0, 2, [0.001] * 3).SerializeToString()
    assert scanned.torn_tail_bytes == len(encode_varint(len(last))) + len(last) - 7


def test_a_record_that_is_not_a_report_is_an_error_naming_it(tmp_path):
    good = make_report(0, 0, [0.001]).SerializeToString()
    path = tmp_path / INTERVALS_LOG
    path.write_bytes(encode_varint(len(good)) + good + encode_varint(3) + b"\xff\xff\xff")
    with pytest.raises(ResultsError, match=r"record 1 \(at byte \d+\) is not an IntervalReport"):
        scan_log(path)
