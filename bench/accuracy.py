"""How close the engine's percentiles are to the truth: a 10 ms fake server measured by a
bare stopwatch (sequential grpc.aio calls timed with perf_counter) and by the engine
(open loop, 100/s), in alternating rounds so both see the same machine.

Goal (issue 4): reported p50 and p99 within 2% + 0.3 ms of the stopwatch's. Prints each
round and the error against that tolerance. Run with `make bench` or
`python bench/accuracy.py`. Timing-sensitive: run it on a quiet machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from tests.integration.test_load_accuracy import fake_server, measure_side_by_side  # noqa: E402


def main() -> int:
    server, target = fake_server("--delay-ms", "10")
    try:
        rounds = measure_side_by_side(target, rounds=3, seconds=5.0)
    finally:
        server.stop()
    print("10 ms server: engine (open loop 100/s) vs a bare stopwatch, alternating rounds")
    within = 0
    for k, (truth, state) in enumerate(rounds):
        reported = state.latency_s()
        cells = []
        ok = True
        for name, q in (("p50", 50), ("p99", 99)):
            true = float(np.percentile(truth, q))
            error = reported[name] - true
            tolerance = 0.02 * true + 0.0003
            ok = ok and abs(error) <= tolerance
            cells.append(
                f"{name} {reported[name] * 1e3:6.2f} vs {true * 1e3:6.2f} ms ({error * 1e3:+.2f})"
            )
        within += ok
        lag = state.send_lag_s()
        print(
            f"  round {k}: {'; '.join(cells)}; send lag p50 {lag['p50'] * 1e3:.2f} ms  "
            f"{'within' if ok else 'outside'} 2% + 0.3 ms"
        )
    print(f"  {within}/{len(rounds)} rounds within the goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
