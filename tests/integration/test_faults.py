"""Faults the load tester must survive: the target dying and coming back, and a results
folder that cannot be written (before the run, or when the disk fills during it)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from coordinator.plan import FleetPlan, LoadPlan, OutputPlan, Plan, TargetPlan
from coordinator.run import Run, RunOptions
from tests.support.processes import Child, coordinator, fake_server, free_port

pytestmark = pytest.mark.integration


def fake_server_on(port: int) -> Child:
    """A fake server on a given port, so that it can come back on the same one."""
    return fake_server("--port", str(port), "--delay-ms", "1")[0]


def test_the_target_restarting_mid_run_shows_as_one_outage_window(tmp_path, ray_address):
    port = free_port()
    server = fake_server_on(port)
    plan = Plan(
        target=TargetPlan(address=f"127.0.0.1:{port}"),
        load=LoadPlan(rate=100.0, duration_s=10.0, timeout_s=1.0),
        fleet=FleetPlan(agents=1, agent_cpus=0.5),
        outputs=OutputPlan(dir=str(tmp_path), metrics_port=None),
    )

    async def scenario():
        nonlocal server
        run = Run(plan, RunOptions())
        task = asyncio.ensure_future(run.execute())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120

        async def until(condition, what):
            while not condition():
                assert not task.done(), task.exception()
                assert loop.time() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.05)  # polling period

        await until(lambda: run.state.ok >= 150, "requests before the outage")
        server.stop(signal.SIGKILL)  # the server crashes
        await until(lambda: run.state.status_counts.get("UNAVAILABLE", 0) > 0, "errors")
        server = fake_server_on(port)  # and comes back on the same port
        result = await task
        return run, result.summary

    try:
        _, summary = asyncio.run(scenario())
    finally:
        server.stop()
    codes = summary["status_counts"]
    assert codes["UNAVAILABLE"] > 0 and codes["OK"] >= 150
    assert summary["requests"] == 1000 == sum(codes.values())  # every arrival is an outcome
    (window,) = summary["error_windows"]
    assert window["status_counts"].keys() <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    start, end = summary["window"]["start_unix_s"], summary["window"]["end_unix_s"]
    assert start < window["from_unix_s"] < window["to_unix_s"] < end  # it ended: load resumed


def test_an_unwritable_results_folder_is_refused_before_anything_starts(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    run = Child(
        coordinator("start", "--out", str(blocker / "run"), "--duration", "1s", "--no-metrics")
    )
    assert run.wait(timeout_s=60) == 2
    (line,) = run.text("stderr").strip().splitlines()[-1:]
    assert (
        line.startswith("coordinator: error: outputs.dir: cannot write results to")
        and "Not a directory" in line
    )
    assert "Ray" not in run.text("stderr") and "model server" not in run.text("stderr")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_disk_filling_up_mid_run_stops_the_run_with_a_clear_error(tmp_path, ray_address):
    port = free_port()
    server = fake_server_on(port)
    out = tmp_path / "run"
    out.mkdir()
    (out / "intervals.pb").symlink_to("/dev/full")  # every write: No space left on device
    try:
        run = Child(
            coordinator(
                "start",
                "--address",
                ray_address,
                "--target",
                f"127.0.0.1:{port}",
                "--rate",
                "50",
                "--duration",
                "1m",
                "--out",
                str(out),
                "--no-metrics",
                "--agent-cpus",
                "0.5",
            )
        )
        assert run.wait(timeout_s=120) == 3
    finally:
        server.stop()
    last = run.text("stderr").strip().splitlines()[-1]
    assert last.startswith("coordinator: error: results could not be written to")
    assert "No space left on device" in last and "the run was stopped" in last


def test_a_ray_address_with_nothing_behind_it_fails_fast(tmp_path):
    server, target = fake_server("--delay-ms", "1")
    port = free_port()
    try:
        run = Child(
            coordinator(
                "start",
                "--address",
                f"127.0.0.1:{port}",
                "--target",
                target,
                "--out",
                str(tmp_path),
                "--no-metrics",
            )
        )
        assert run.wait(timeout_s=60) == 3
    finally:
        server.stop()
    last = run.text("stderr").strip().splitlines()[-1]
    assert last.startswith(f"coordinator: error: no Ray cluster answers at 127.0.0.1:{port}")
