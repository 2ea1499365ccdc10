"""The HdrHistogram interval log (`latency.hlog`), as HdrHistogram's tools read it.

HistogramLogAnalyzer, HdrHistogram's HistogramLogProcessor and `hdrh.log.HistogramLogReader`
read this format (histogram log format 1.3)::

    #[Histogram log format version 1.3]
    #[StartTime: 1733326752.123 (seconds since epoch), 2024-12-04 15:39:12.123 UTC]
    #[BaseTime: 1733326752.123 (seconds since epoch)]
    #[raysiege: latency in microseconds, Interval_Max in milliseconds; ...]
    "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
    Tag=warmup,0.004,1.000,12.543,HISTFAAAA...
    1.004,1.000,3.241,HISTFAAAA...

One line per agent-interval, in the order the reports arrived (the order of
`intervals.pb` and of the intervals CSV). Timestamps are seconds relative to BaseTime;
the payload is the agent's own encoded latency histogram (microseconds), byte for byte.
The header is written with the first interval: start and base time are that interval's
start less its length. Readers skip an interval that starts before StartTime, and the
agents of a fleet run the same schedule, so another agent's first interval, reported
later, cannot start that much earlier.
Lines are untagged except warm-up intervals, tagged `warmup`: the tools process untagged
lines by default, so summing a log with them gives the measured window, as the summary
does. `Interval_Max` is in milliseconds (the microsecond maximum / 1000, exact to 3
decimals), the unit HdrHistogram's own loggers use for that column.

`hdrh.log.HistogramLogWriter` is not used to write: its `output_start_time` fails
(it hands milliseconds to `datetime.fromtimestamp` and calls a non-existent
`iso_format`), it floors `Interval_Max` to whole units and it declares format 1.2, which
has no tags. Its reader is what the tests read our logs back with.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import IO

from hdrh.histogram import HdrHistogram

from agents.histogram import new_histogram
from model_server.api.report_pb2 import IntervalReport

LATENCY_HLOG = "latency.hlog"
FORMAT_VERSION = "1.3"
LEGEND = '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"'
WARMUP_TAG = "warmup"
MAX_VALUE_UNIT_RATIO = 1000.0  # microseconds -> milliseconds in the Interval_Max column

# What an interval with no completed request logs: a valid empty histogram.
_EMPTY = new_histogram().encode().decode("ascii")


def header(start_unix_s: float) -> str:
    """The lines before the first interval; start and base time are both `start_unix_s`."""
    when = datetime.fromtimestamp(round(start_unix_s, 3), UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return (
        f"#[Histogram log format version {FORMAT_VERSION}]\n"
        f"#[StartTime: {start_unix_s:.3f} (seconds since epoch), {when} UTC]\n"
        f"#[BaseTime: {start_unix_s:.3f} (seconds since epoch)]\n"
        f"#[raysiege: latency in microseconds, Interval_Max in milliseconds; one line per "
        f"agent-interval in arrival order; warm-up intervals tagged {WARMUP_TAG}]\n"
        f"{LEGEND}\n"
    )


def interval_line(report: IntervalReport, latency: HdrHistogram, base_unix_s: float) -> str:
    """One interval: start (relative to the base time), length, max (ms), histogram.

    `latency` is `report.latency_hdr` decoded (for its maximum); the payload written is
    the report's own encoding. A start before the base time (only with agents' clocks
    skewed by more than an interval) is written as 0, the interval ending where it did:
    readers skip negative timestamps.
    """
    start = max(0.0, report.start_unix_s - base_unix_s)
    length = max(0.0, report.end_unix_s - base_unix_s - start)  # the end stays where it is
    max_ms = latency.get_max_value() / MAX_VALUE_UNIT_RATIO
    payload = report.latency_hdr.decode("ascii") if report.latency_hdr else _EMPTY
    tag = f"Tag={WARMUP_TAG}," if report.warmup else ""
    return f"{tag}{start:.3f},{length:.3f},{max_ms:.3f},{payload}\n"


def base_time(first: IntervalReport) -> float:
    """The log's start and base time, from the first report to arrive."""
    return first.start_unix_s - max(0.0, first.end_unix_s - first.start_unix_s)


class HlogWriter:
    """Writes the header with the first report, then a line per report, flushed each time."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.base_unix_s: float | None = None

    def write(self, report: IntervalReport, latency: HdrHistogram) -> None:
        if self.base_unix_s is None:
            self.base_unix_s = base_time(report)
            self._stream.write(header(self.base_unix_s))
        self._stream.write(interval_line(report, latency, self.base_unix_s))
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()
