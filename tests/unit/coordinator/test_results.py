"""coordinator/results.py: the interval log round-trips and survives a torn last write."""

import io

import pytest

from coordinator.results import (
    INTERVALS_LOG,
    ResultsWriter,
    encode_varint,
    read_delimited,
    read_reports,
)
from model_server.api.report_pb2 import IntervalReport


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
