"""Latency recording into HdrHistograms, and the exact merge of encoded deltas.

Values are recorded in integer microseconds from 1 µs to one hour with 3 significant
digits (0.1% relative precision), in constant memory. `record_value` of the `hdrhistogram`
package returns False for a value out of range; `Recorder` clamps such values to the
range and counts them, so none is silently lost.
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_FIGURES = 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


class Recorder:
    """Records seconds as microseconds; `take()` hands over the interval's delta, encoded."""

    def __init__(self) -> None:
        self._hist = new_histogram()
        self.clamped = 0

    def record_s(self, seconds: float) -> None:
        us = round(seconds * 1e6)
        if us < LOWEST_US:
            us = LOWEST_US
            self.clamped += 1
        elif us > HIGHEST_US:
            us = HIGHEST_US
            self.clamped += 1
        self._hist.record_value(us)

    @property
    def count(self) -> int:
        return self._hist.get_total_count()

    def percentile_s(self, percentile: float) -> float:
        """The value at `percentile` of what was recorded since the last take, seconds."""
        return self._hist.get_value_at_percentile(percentile) / 1e6

    def take(self) -> bytes:
        """The encoded histogram of everything recorded since the last take, then reset.

        An empty interval is b"": adding an encoded empty histogram would set the
        receiver's minimum to 0.
        """
        if self._hist.get_total_count() == 0:
            return b""
        encoded = self._hist.encode()
        self._hist.reset()
        return encoded


def decode(encoded: bytes) -> HdrHistogram:
    hist = new_histogram()
    merge_into(hist, encoded)
    return hist


def merge_into(target: HdrHistogram, encoded: bytes) -> None:
    """Add an encoded delta to `target`: exact, counts add bucket by bucket.

    Empty histograms are skipped: `decode_and_add` of one resets the minimum to 0.
    """
    if not encoded:
        return
    delta = HdrHistogram.decode(encoded)
    if delta.get_total_count():
        target.add(delta)
