"""Start-up costs and the demo's figures, measured on this machine in one run.

Prints: TensorFlow import, `ray.init` (embedded, loopback), the model server's first start
(training on the shipped MNIST sample) and cached start (SavedModel load), each to READY,
and the demo run (`coordinator start --agents 2 --rate 200 --duration 10s`): wall time,
throughput and p99. Run with `make bench` (or `python bench/startup.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.processes import Child, coordinator, python  # noqa: E402

ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def timed_python(code: str) -> float:
    """Seconds the snippet reports for itself (it prints one number)."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def server_to_ready(cache_dir: str) -> tuple[float, str]:
    start = time.monotonic()
    child = Child(
        python("-m", "model_server", "serve", "--port", "0", "--cache-dir", cache_dir), env=ENV
    )
    line = child.wait_for_line(r"READY port=\d+.*", timeout_s=300).group(0)
    elapsed = time.monotonic() - start
    child.stop()
    return elapsed, line


def main() -> None:
    tf_import = timed_python(
        "import time; t=time.perf_counter(); import tensorflow; print(time.perf_counter()-t)"
    )
    ray_init = timed_python(
        "import time, ray; t=time.perf_counter(); "
        "ray.init(address='local', include_dashboard=False, log_to_driver=False); "
        "print(time.perf_counter()-t)"
    )
    with tempfile.TemporaryDirectory() as cache:
        first, ready = server_to_ready(cache)
        cached, _ = server_to_ready(cache)
        with tempfile.TemporaryDirectory() as out:
            start = time.monotonic()
            run = Child(
                coordinator(
                    "start",
                    "--agents",
                    "2",
                    "--rate",
                    "200",
                    "--duration",
                    "10s",
                    "--out",
                    out,
                    "--metrics-port",
                    "0",
                ),
                env={**ENV, "RAYSIEGE_CACHE_DIR": cache},
            )
            code = run.wait(timeout_s=300)
            demo_wall = time.monotonic() - start
            summary = json.loads((Path(out) / "summary.json").read_text()) if code == 0 else {}
    print("startup costs (seconds, this machine)")
    print(f"  import tensorflow                 {tf_import:6.2f}")
    print(f"  ray.init (embedded, loopback)     {ray_init:6.2f}")
    print(f"  model server first start → READY  {first:6.2f}  (trains; {ready})")
    print(f"  model server cached start → READY {cached:6.2f}  (loads the SavedModel)")
    print(f"  cached / first start              {cached / first:6.2f}x")
    if not summary:
        print(f"demo run FAILED with exit code {code}:\n{run.text('stderr')[-2000:]}")
        sys.exit(1)
    lat = summary["latency_s"]
    print(
        "demo: coordinator start --agents 2 --rate 200 --duration 10s "
        "(bundled server, cached model)"
    )
    print(f"  wall time                         {demo_wall:6.2f} s")
    print(
        f"  throughput                        {summary['throughput_rps']:8.1f} req/s of 200 asked "
        f"({summary['throughput_rps'] / 200:.3f}x)"
    )
    print(f"  requests / errors                 {summary['requests']} / {summary['errors']}")
    print(
        f"  latency p50 / p99 / max           {lat['p50'] * 1e3:.2f} / {lat['p99'] * 1e3:.2f} / "
        f"{lat['max'] * 1e3:.2f} ms"
    )
    print(f"  accuracy under load               {summary['accuracy']['rate']:.4f}")


if __name__ == "__main__":
    main()
