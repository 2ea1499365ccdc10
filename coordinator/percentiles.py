"""Exact HdrHistogram percentiles in one vectorised pass over the counts.

`HdrHistogram.get_value_at_percentile` walks the counts array in Python, about 1 ms per
query for our 23,552-bucket histograms; the results writer asks for several per report
on the coordinator's event loop, and the HTML report for many per time bin.
`values_at(hist, percentiles)` does one numpy cumulative sum and returns exactly what
`get_value_at_percentile` returns for each percentile (a test holds them equal).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hdrh.histogram import HdrHistogram


def values_at(hist: HdrHistogram, percentiles: Sequence[float]) -> list[int]:
    """The recorded value at each percentile (0..100), in the histogram's unit; 0s if empty."""
    if hist.get_total_count() == 0:
        return [0 for _ in percentiles]
    cumulative = np.cumsum(np.ctypeslib.as_array(hist.counts)[: hist.counts_len], dtype=np.uint64)
    targets = [hist.get_target_count_at_percentile(p) for p in percentiles]
    indexes = np.searchsorted(cumulative, np.array(targets, dtype=np.uint64), side="left")
    out = []
    for percentile, index in zip(percentiles, indexes.tolist(), strict=True):
        if index >= hist.counts_len:
            out.append(0)  # what the reference walk returns when it never gets there
            continue
        value = hist.get_value_from_index(index)
        if percentile:
            out.append(hist.get_highest_equivalent_value(value))
        else:
            out.append(hist.get_lowest_equivalent_value(value))
    return out
