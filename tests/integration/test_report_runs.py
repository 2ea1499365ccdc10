"""`coordinator report` on real runs: the folder of a SIGKILLed coordinator, a finished run
re-rendered exactly as it ran, and report.html as headless Chromium draws it.

The runs join the session's Ray and load the fake server: the model is not the point.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hdrh.log import HistogramLogReader
from PIL import Image, ImageStat

from agents.histogram import new_histogram
from coordinator.cli import exit_code
from coordinator.hlog import LATENCY_HLOG
from coordinator.html_report import REPORT_HTML
from coordinator.intervals_csv import INTERVALS_CSV
from coordinator.results import INTERVALS_LOG, SUMMARY, scan_log
from tests.support.processes import Child, coordinator

pytestmark = pytest.mark.integration

# What the live run knew of its own course and the log does not hold: when it started,
# whether it was interrupted or aborted by a threshold.
TIMING = ("started_unix_s", "interrupted", "aborted")


def start(ray_address: str, target: str, out: Path, *flags: str) -> Child:
    return Child(
        coordinator(
            "start",
            "--address",
            ray_address,
            "--target",
            target,
            "--agents",
            "2",
            "--agent-cpus",
            "0.5",
            "--warmup",
            "1s",
            "--out",
            str(out),
            "--no-metrics",
            *flags,
        )
    )


def report(run_dir: Path, *flags: str) -> tuple[int, str]:
    child = Child(coordinator("report", str(run_dir), *flags))
    code = child.wait(timeout_s=120)
    return code, child.text("stdout")


def poll(condition, *, timeout_s: float, what: str):
    """Call `condition` until it returns a truthy value, within a deadline."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)  # polling period, not synchronisation
    return value


def requests_in(reports, *, warmup: bool = False) -> int:
    return sum(sum(r.status_counts.values()) for r in reports if r.warmup == warmup)


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / INTERVALS_CSV, newline="") as stream:
        return list(csv.DictReader(stream))


def hlog_intervals(run_dir: Path) -> list:
    reader = HistogramLogReader(str(run_dir / LATENCY_HLOG), new_histogram())
    out = []
    while (hist := reader.get_next_interval_histogram()) is not None:
        out.append(hist)
    reader.close()
    return out


def check_csv_and_hlog_hold_the_logs_intervals(run_dir: Path, reports, *, tail_slack: int):
    """Same intervals in the same order: (agent, seq) and counts; the CSV and the hlog are
    written just after the log, so a kill between the writes leaves them `tail_slack`
    short at most."""
    keys = [(r.agent_index, r.seq) for r in reports]
    rows = csv_rows(run_dir)
    assert len(keys) - tail_slack <= len(rows) <= len(keys)
    assert [(int(r["agent"]), int(r["seq"])) for r in rows] == keys[: len(rows)]
    assert [int(r["requests"]) for r in rows] == [
        sum(r.status_counts.values()) for r in reports[: len(rows)]
    ]
    hists = hlog_intervals(run_dir)
    assert len(keys) - tail_slack <= len(hists) <= len(keys)
    assert [h.get_total_count() for h in hists] == [
        sum(r.status_counts.values()) for r in reports[: len(hists)]
    ]
    assert [h.get_tag() == "warmup" for h in hists] == [r.warmup for r in reports[: len(hists)]]


def test_a_sigkilled_coordinator_leaves_a_folder_that_reports(tmp_path, ray_address, fake_target):
    out = tmp_path / "killed"
    run = start(ray_address, fake_target, out, "--rate", "40", "--duration", "10m")
    log = out / INTERVALS_LOG

    def measured_on_disk() -> int:
        if not log.exists():
            return 0
        return sum(not r.warmup for r in scan_log(log).reports)

    try:
        seen = poll(lambda: (n := measured_on_disk()) >= 4 and n, timeout_s=240, what="4 intervals")
    finally:
        run.process.kill()  # SIGKILL: no handler, no summary, nothing written after this
        run.wait(timeout_s=60)
    assert run.process.returncode == -signal.SIGKILL
    assert not (out / SUMMARY).exists()

    scanned = scan_log(log)
    reports = scanned.reports
    assert sum(not r.warmup for r in reports) >= seen  # nothing already on disk was lost
    for agent in (0, 1):  # and no interval is missing before the tail
        seqs = [r.seq for r in reports if r.agent_index == agent]
        assert seqs == list(range(len(seqs)))
    # a torn tail is at most the one record being written when the kill came
    assert scanned.torn_tail_bytes < 2 * max(r.ByteSize() for r in reports) + 10
    check_csv_and_hlog_hold_the_logs_intervals(out, reports, tail_slack=1)

    code, stdout = report(out, "--json")
    summary = json.loads(stdout)
    assert summary["requests"] == requests_in(reports) > 0
    assert summary["warmup"]["requests"] == requests_in(reports, warmup=True)
    assert summary["rendered_from"]["records"] == len(reports)
    assert summary["rendered_from"]["unfinished_agents"] == [0, 1]  # killed before the end
    assert "interrupted" not in summary
    assert code == exit_code({**summary, "interrupted": False})
    assert json.loads((out / SUMMARY).read_text()) == summary


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, ray_address, fake_target):
    out = tmp_path_factory.mktemp("finished") / "run"
    run = start(ray_address, fake_target, out, "--rate", "60", "--duration", "4s")
    run.wait(timeout_s=240)
    assert (out / SUMMARY).exists(), run.text("stderr")[-3000:]
    return out, run.process.returncode


def test_a_finished_run_rerenders_as_it_ran(finished_run, tmp_path):
    out, start_code = finished_run
    live = json.loads((out / SUMMARY).read_text())
    assert start_code == exit_code(live)
    reports = scan_log(out / INTERVALS_LOG).reports
    check_csv_and_hlog_hold_the_logs_intervals(out, reports, tail_slack=0)
    assert live["requests"] == requests_in(reports)
    assert live["warmup"]["requests"] == requests_in(reports, warmup=True)
    # 60/s for 1 + 4 s: 300 arrivals, each in the warm-up or the measured window by when
    # it completed (under load, some sent in the warm-up complete after it)
    assert requests_in(reports) + requests_in(reports, warmup=True) + live["dropped"] == 300

    # from the log and the plan alone: the live summary but for timing and node IPs
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in (INTERVALS_LOG, "plan.json"):
        shutil.copy(out / name, bare / name)
    code, stdout = report(bare, "--json")
    alone = json.loads(stdout)
    assert code == exit_code({**live, "interrupted": False})

    def comparable(summary: dict) -> dict:
        out = {k: v for k, v in summary.items() if k not in (*TIMING, "rendered_from")}
        out["agents"] = [{k: v for k, v in a.items() if k != "node_ip"} for a in out["agents"]]
        return out

    assert comparable(alone) == comparable(live)

    # in the run's own folder, the facts only the live run knew are kept as well
    code, stdout = report(out, "--json")
    again = json.loads(stdout)
    assert {k: v for k, v in again.items() if k != "rendered_from"} == live
    assert json.loads((out / SUMMARY).read_text()) == again


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def screenshot(chromium: str, page: Path, png: Path, profile: Path) -> subprocess.CompletedProcess:
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        "--window-size=1280,2000",
        page.as_uri(),
    ]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # chromium's own children with it
        stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def test_report_html_renders_in_headless_chromium(finished_run, tmp_path):
    chromium = find_chromium()
    out, _ = finished_run
    _, stdout = report(out, "--html")
    page = out / REPORT_HTML
    assert f"report in {page}" in stdout and page.exists()

    png = tmp_path / "report.png"
    done = screenshot(chromium, page, png, tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-3000:]
    assert png.exists()
    with Image.open(png) as image:
        assert image.size == (1280, 2000)
        rgb = image.convert("RGB")
        # not blank: ink on much of the page, in many colours (text, tables, plots)
        gray = rgb.convert("L")
        inked = sum(gray.histogram()[:200]) / (rgb.width * rgb.height)
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        assert inked > 0.02, f"only {inked:.1%} of the page is drawn on"
        assert len(colours) > 200
        assert max(ImageStat.Stat(rgb).stddev) > 20
