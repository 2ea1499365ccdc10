"""The results folder: what a run leaves on disk, written as it goes.

`intervals.pb` holds every IntervalReport as it arrived, each prefixed by its length as a
protobuf varint (the "length-delimited" framing of Java's writeDelimitedTo). The same
intervals go, in the same order, to `intervals.csv` (coordinator/intervals_csv.py) and
to the HdrHistogram interval log `latency.hlog` (coordinator/hlog.py). All three are
flushed per report, so a killed coordinator loses nothing already received (a SIGKILL
between the three writes can leave the CSV and hlog one interval short of the log).
`plan.json` is the plan as run and `summary.json` the final summary. Opening a folder
starts the three interval files afresh: a results folder holds one run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from google.protobuf.message import DecodeError
from hdrh.histogram import HdrHistogram

from agents.histogram import new_histogram
from coordinator.errors import RaysiegeError
from coordinator.hlog import LATENCY_HLOG, HlogWriter
from coordinator.intervals_csv import INTERVALS_CSV, IntervalsCsvWriter
from model_server.api.report_pb2 import IntervalReport

INTERVALS_LOG = "intervals.pb"
SUMMARY = "summary.json"
PLAN = "plan.json"


class ResultsError(RaysiegeError):
    """A folder is not a readable run: a file is missing or is not what it should be."""

    exit_code = 2


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_delimited(stream: IO[bytes]) -> Iterator[bytes]:
    """Yield each length-delimited record; a truncated last record is ignored."""
    while True:
        length, shift = 0, 0
        while True:
            b = stream.read(1)
            if not b:
                return
            length |= (b[0] & 0x7F) << shift
            shift += 7
            if not b[0] & 0x80:
                break
        record = stream.read(length)
        if len(record) < length:
            return
        yield record


def read_reports(path: Path) -> list[IntervalReport]:
    with open(path, "rb") as stream:
        return [IntervalReport.FromString(record) for record in read_delimited(stream)]


@dataclass
class IntervalLog:
    """What `intervals.pb` holds: its complete records, and the bytes of a torn tail."""

    reports: list[IntervalReport]
    torn_tail_bytes: int


def scan_log(path: Path) -> IntervalLog:
    """Read every complete record; a record that does not parse is a ResultsError.

    A torn tail (a record cut short by a killed writer) is left out and measured.
    """
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            reports, consumed = [], 0
            for i, record in enumerate(read_delimited(stream)):
                try:
                    reports.append(IntervalReport.FromString(record))
                except DecodeError:
                    raise ResultsError(
                        f"{path}: record {i} (at byte {consumed}) is not an IntervalReport"
                    ) from None
                consumed = stream.tell()
    except OSError as error:
        raise ResultsError(f"{path}: cannot read the interval log: {error.strerror}") from None
    return IntervalLog(reports=reports, torn_tail_bytes=size - consumed)


def _decoded(encoded: bytes) -> HdrHistogram:
    # HdrHistogram.decode directly: a third of the cost of agents.histogram.decode's
    # decode-then-add, which only the merge needs.
    return HdrHistogram.decode(encoded) if encoded else new_histogram()


class ResultsWriter:
    """Owns the results folder of one run."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._log: IO[bytes] | None = None
        self._csv: IntervalsCsvWriter | None = None
        self._hlog: HlogWriter | None = None

    def open(self) -> None:
        """Create the folder and the interval files; fails early on an unwritable place."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.out_dir / INTERVALS_LOG, "wb")
        self._csv = IntervalsCsvWriter(open(self.out_dir / INTERVALS_CSV, "w", newline=""))
        self._hlog = HlogWriter(open(self.out_dir / LATENCY_HLOG, "w"))

    def append(self, report: IntervalReport) -> None:
        """Write one report to the log, then its CSV row and hlog line; each flushed."""
        assert self._log and self._csv and self._hlog, "open() first"
        data = report.SerializeToString()
        self._log.write(encode_varint(len(data)) + data)
        self._log.flush()
        latency = _decoded(report.latency_hdr)
        self._csv.write(report, latency, _decoded(report.send_lag_hdr))
        self._hlog.write(report, latency)

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.out_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)  # a reader never sees half a file
        return path

    def close(self) -> None:
        """Close every file, even when one fails to; then raise the first failure."""
        streams = (self._log, self._csv, self._hlog)
        self._log = self._csv = self._hlog = None
        failure: OSError | None = None
        for stream in streams:
            try:
                if stream is not None:
                    stream.close()
            except OSError as error:
                failure = failure or error
        if failure is not None:
            raise failure
