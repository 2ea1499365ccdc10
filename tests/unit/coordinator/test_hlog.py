"""coordinator/hlog.py: HdrHistogram's log format, read back by hdrh's own reader."""

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from agents.histogram import decode, new_histogram
from coordinator.hlog import LEGEND, HlogWriter, base_time, header, interval_line
from tests.support.interval_reports import T0, make_report


def write_log(path, reports):
    with open(path, "w") as stream:
        writer = HlogWriter(stream)
        for report in reports:
            writer.write(report, decode(report.latency_hdr))
    return path


def read_log(path):
    reader = HistogramLogReader(str(path), new_histogram())
    out = []
    while (hist := reader.get_next_interval_histogram()) is not None:
        out.append(hist)
    reader.close()
    return out


def counts(hist: HdrHistogram) -> dict[int, int]:
    return {item.value_iterated_to: item.count_at_value_iterated_to for item in hist}


def test_the_header_is_the_standard_one():
    lines = header(1733326752.1234).splitlines()
    assert lines[0] == "#[Histogram log format version 1.3]"
    assert lines[1] == (
        "#[StartTime: 1733326752.123 (seconds since epoch), 2024-12-04 15:39:12.123 UTC]"
    )
    assert lines[2] == "#[BaseTime: 1733326752.123 (seconds since epoch)]"
    assert lines[3].startswith("#[") and "microseconds" in lines[3]
    assert lines[-1] == LEGEND
    assert LEGEND == (
        '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"'
    )


def test_an_interval_line_is_relative_start_length_max_in_ms_and_the_agents_payload():
    report = make_report(0, 2, [0.001, 0.001234, 0.5], offset_s=0.25)
    line = interval_line(report, decode(report.latency_hdr), T0)
    start, length, max_ms, payload = line.rstrip("\n").split(",")
    assert (start, length) == ("2.250", "1.000")
    # 500,000 µs is recorded as the top of its bucket: 500,223 µs = 500.223 ms, not floored
    assert max_ms == f"{decode(report.latency_hdr).get_max_value() / 1000:.3f}" == "500.223"
    assert payload.encode() == report.latency_hdr
    assert re.fullmatch(r"\d+\.\d{3},\d+\.\d{3},\d+\.\d{3},HISTF\S+\n", line)


def test_warmup_lines_are_tagged_and_empty_intervals_hold_an_empty_histogram():
    warm = make_report(0, 0, [0.002], warmup=True)
    assert interval_line(warm, decode(warm.latency_hdr), T0).startswith("Tag=warmup,0.000,")
    empty = make_report(0, 1, [])
    assert empty.latency_hdr == b""
    line = interval_line(empty, new_histogram(), T0)
    assert HdrHistogram.decode(line.rstrip("\n").split(",")[3]).get_total_count() == 0


def test_a_start_before_the_base_time_is_written_as_zero():
    report = make_report(0, 0, [0.001], offset_s=-0.004)
    assert interval_line(report, decode(report.latency_hdr), T0).startswith("0.000,0.996,")


def test_hdrh_reads_every_interval_back(tmp_path):
    reports = [
        make_report(0, 0, [0.003] * 4, warmup=True),
        make_report(0, 1, [0.001, 0.002, 0.004]),
        make_report(1, 1, [0.010] * 7, offset_s=0.01),
        make_report(1, 2, []),
        make_report(0, 2, [0.2, 0.0015]),
    ]
    got = read_log(write_log(tmp_path / "latency.hlog", reports))
    assert len(got) == len(reports)
    for report, hist in zip(reports, got, strict=True):
        assert counts(hist) == counts(decode(report.latency_hdr))
        # the reader's absolute timestamps (ms) are the intervals' own, to the millisecond
        assert abs(hist.get_start_time_stamp() / 1000 - report.start_unix_s) < 0.0011
        assert abs(hist.get_end_time_stamp() / 1000 - report.end_unix_s) < 0.0011
        assert hist.get_tag() == ("warmup" if report.warmup else None)


def test_adding_the_untagged_lines_gives_the_measured_window(tmp_path):
    reports = [make_report(0, 0, [0.5] * 3, warmup=True)] + [
        make_report(a, s, [0.001 * (a + s + 1)] * 5) for a in range(2) for s in range(1, 4)
    ]
    total = new_histogram()
    for hist in read_log(write_log(tmp_path / "latency.hlog", reports)):
        if hist.get_tag() is None:
            total.add(hist)
    assert total.get_total_count() == 30
    assert total.get_max_value() < 500_000  # the warm-up's 0.5 s is not in it


def test_the_header_comes_with_the_first_interval_and_lines_are_flushed_as_written():
    stream = io.StringIO()
    writer = HlogWriter(stream)
    assert stream.getvalue() == ""
    first = make_report(1, 0, [0.001], offset_s=0.01)
    writer.write(first, decode(first.latency_hdr))
    assert base_time(first) == writer.base_unix_s == first.start_unix_s - 1.0
    text = stream.getvalue()
    assert text.startswith(header(writer.base_unix_s)) and text.count("\n") == 6
    # another agent's first interval, reported later, starting a little earlier: in range
    other = make_report(0, 0, [0.002])
    writer.write(other, decode(other.latency_hdr))
    assert stream.getvalue().splitlines()[-1].startswith("0.990,1.000,2.000,")


HDRHISTOGRAM_JAR = Path("/usr/share/java/hdrhistogram.jar")  # Debian's libhdrhistogram-java


@pytest.mark.skipif(
    not (HDRHISTOGRAM_JAR.exists() and shutil.which("java")),
    reason="HdrHistogram's Java tools are not installed (apt-get install libhdrhistogram-java)",
)
def test_hdrhistograms_own_log_processor_reads_the_measured_window(tmp_path):
    reports = [make_report(0, 0, [0.5] * 3, warmup=True)] + [
        make_report(a, s, [0.001 * (a + s + 1)] * 5) for a in range(2) for s in range(1, 4)
    ]
    path = write_log(tmp_path / "latency.hlog", reports)
    out = tmp_path / "processed"
    processor = ["java", "-cp", str(HDRHISTOGRAM_JAR), "org.HdrHistogram.HistogramLogProcessor"]
    done = subprocess.run(
        [*processor, "-i", str(path), "-o", str(out), "-outputValueUnitRatio", "1000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    footer = (tmp_path / "processed.hgrm").read_text()
    # untagged lines only: the warm-up's three 0.5 s requests are not in it
    assert re.search(r"#\[Max\s+=\s+5\.003, Total count\s+=\s+30\]", footer), footer
