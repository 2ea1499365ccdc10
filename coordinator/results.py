"""The results folder: what a run leaves on disk, written as it goes.

`intervals.pb` holds every IntervalReport as it arrived, each prefixed by its length as a
protobuf varint (the "length-delimited" framing of Java's writeDelimitedTo), flushed per
report so a killed coordinator loses nothing already received. `plan.json` is the plan
as run and `summary.json` the final summary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from model_server.api.report_pb2 import IntervalReport

INTERVALS_LOG = "intervals.pb"
SUMMARY = "summary.json"
PLAN = "plan.json"


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


class ResultsWriter:
    """Owns the results folder of one run."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._log: IO[bytes] | None = None

    def open(self) -> None:
        """Create the folder and the interval log; fails early on an unwritable place."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.out_dir / INTERVALS_LOG, "ab")

    def append(self, report: IntervalReport) -> None:
        assert self._log is not None, "open() first"
        data = report.SerializeToString()
        self._log.write(encode_varint(len(data)) + data)
        self._log.flush()

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.out_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)  # a reader never sees half a file
        return path

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
