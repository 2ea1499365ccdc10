"""The capacity search's edges without Ray: the plan's capacity section, the CLI's bad
input (exit 2, nothing started), trial plans, measurements from a summary and a
histogram, the verdict text, the curve, and the example's arithmetic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from agents.histogram import new_histogram
from coordinator.capacity import (
    CapacityResult,
    Finished,
    Probe,
    Settings,
    format_result,
    judge,
    parse_slo,
    settings_for,
)
from coordinator.capacity_plot import curve_png
from coordinator.capacity_run import check_open_loop, count_over, measurement_of, trial_plan
from coordinator.cli import main
from coordinator.errors import PlanError
from coordinator.merge import FleetState
from coordinator.plan import CapacityPlan, LoadPlan, Plan, plan_from_mapping

REPO = Path(__file__).resolve().parents[3]


# -- the plan's capacity section -----------------------------------------------------------


def test_the_capacity_section_is_read_with_units():
    plan = plan_from_mapping(
        {
            "load": {"rate": 1},
            "capacity": {
                "slo": "p99 < 20ms",
                "max_error_rate": "0.5%",
                "min_accuracy": 0.9,
                "confidence": "99%",
                "precision": "2%",
                "start_rate": 20,
                "max_rate": 5000,
                "trial_duration": "15s",
                "confirm_duration": "1m",
                "min_requests": 2000,
                "max_trials": 9,
            },
        }
    ).validate()
    assert plan.capacity == CapacityPlan(
        slo="p99 < 20ms",
        max_error_rate=0.005,
        min_accuracy=0.9,
        confidence=0.99,
        precision=0.02,
        start_rate=20.0,
        max_rate=5000.0,
        trial_duration_s=15.0,
        confirm_duration_s=60.0,
        min_requests=2000,
        max_trials=9,
    )
    s = settings_for(plan.capacity, precision=0.1)  # an override wins over the section
    assert (s.slo.bound_s, s.confidence, s.precision, s.confirm_s) == (0.02, 0.99, 0.1, 60.0)
    assert settings_for(CapacityPlan(), slo="p90<1s").confirm_s == 30.0  # 3 trial durations


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"slo": "p99 > 5ms"}, "capacity.slo"),
        ({"confidence": "40%"}, "capacity.confidence"),
        ({"precision": "nope"}, "capacity.precision"),
        ({"trial_duration": "soon"}, "capacity.trial_duration"),
        ({"min_requests": 1.5}, "capacity.min_requests"),
        ({"start_rate": 100, "max_rate": 10}, "capacity.max_rate"),
        ({"knee": 3}, "capacity.knee"),
    ],
)
def test_a_bad_capacity_section_names_its_field(section, field):
    with pytest.raises(PlanError, match=rf"^{field}"):
        plan_from_mapping({"load": {"rate": 1}, "capacity": section}).validate()


def test_a_search_needs_an_slo():
    with pytest.raises(PlanError, match=r"^capacity\.slo: give an SLO"):
        settings_for(CapacityPlan())


# -- the command line: bad input is exit 2 and starts nothing ---------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "capacity.slo: give an SLO"),
        (["--slo", "p99>5ms"], "capacity.slo"),
        (["--slo", "p99<5ms", "--rate", "100"], "--rate: a capacity search sets it per trial"),
        (["--slo", "p99<5ms", "--duration", "5s"], "use --trial-duration"),
        (["--slo", "p99<5ms", "--concurrency", "4"], "load.concurrency: capacity trials are open"),
        (["--slo", "p99<5ms", "--stage", "5s:10"], "load.stages"),
        (["--slo", "p99<5ms", "--confidence", "120%"], "capacity.confidence"),
        (["--slo", "p99<5ms", "--precision", "0"], "capacity.precision"),
        (["--slo", "p99<5ms", "--start-rate", "-1"], "capacity.start_rate"),
        (["--slo", "p99<5ms", "--server-args", "'unclosed"], "--server-args"),
    ],
)
def test_bad_capacity_input_is_exit_2_with_one_line(args, message, capsys, tmp_path):
    code = main(["capacity", "--out", str(tmp_path / "never"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert message in err[-1] and err[-1].startswith("coordinator: error:")
    assert not (tmp_path / "never").exists()


def test_closed_loops_and_stages_are_refused_for_capacity():
    with pytest.raises(PlanError, match=r"^load\.concurrency"):
        check_open_loop(Plan(load=LoadPlan(concurrency=4, rate=None)))
    with pytest.raises(PlanError, match=r"^load\.stages"):
        check_open_loop(Plan(load=LoadPlan(stages=((1.0, 10.0),))))


# -- a trial: its plan, and its measurement ----------------------------------------------------


def test_a_trial_plan_is_open_loop_poisson_at_the_probed_rate(tmp_path):
    plan = Plan(load=LoadPlan(rate=100.0, requests=500), thresholds=("p99 < 1ms",))
    trial = trial_plan(plan, Probe(250.0, "bisect", 4.5), tmp_path, seed=3, metrics_port=9999)
    ld = trial.load
    assert (ld.arrival, ld.rate, ld.duration_s, ld.requests, ld.seed) == (
        "poisson",
        250.0,
        4.5,
        None,
        3,
    )
    assert ld.warmup_s == 2.0  # the default warm-up when the plan has none
    assert trial.thresholds == () and not trial.abort_on_threshold  # the search judges
    assert trial.outputs.dir == str(tmp_path) and trial.outputs.metrics_port == 9999
    warm = trial_plan(
        Plan(load=LoadPlan(rate=1.0, warmup_s=5.0)),
        Probe(9.0, "grow", 1.0),
        tmp_path,
        seed=0,
        metrics_port=None,
    )
    assert warm.load.warmup_s == 5.0 and warm.outputs.metrics_port is None


def histogram_of(values_us: list[int]):
    hist = new_histogram()
    for v in values_us:
        hist.record_value(v)
    return hist


def test_requests_over_the_bound_are_counted_from_the_merged_histogram():
    slo = parse_slo("p99<50ms")
    hist = histogram_of([1_000] * 90 + [40_000] * 5 + [50_000] * 2 + [80_000] * 3)
    assert count_over(hist, parse_slo("p99<51ms")) == 3
    # the bucket holding 50 ms reaches past it (3 significant digits): it counts as over,
    # as the merged percentile (the bucket's highest value) would miss the bound too
    assert count_over(hist, slo) == 5
    assert count_over(hist, parse_slo("p99<=50ms")) == 5
    assert count_over(hist, parse_slo("p99<30ms")) == 10
    assert count_over(new_histogram(), slo) == 0


def test_a_measurement_comes_from_the_summary_and_the_histogram(tmp_path):
    state = FleetState()
    state.latency = histogram_of([10_000] * 995 + [60_000] * 5)
    summary = {
        "requests": 1000,
        "errors": 2,
        "sent": 1001,
        "dropped": 0,
        "throughput_rps": 199.5,
        "agents_lost": 0,
        "accuracy": {"rate": 0.93},
        "latency_s": {"p50": 0.01, "p90": 0.01, "p95": 0.01, "p99": 0.01, "p999": 0.06},
        "send_lag_s": {"p99": 0.002, "max": 0.003},
        "generator": {"send_lag_p99_s": 0.002, "max_send_lag_s": 0.05},
    }
    s = Settings(slo=parse_slo("p99<50ms"))
    m = measurement_of(summary, state, s, Probe(200.0, "grow", 5.0), tmp_path)
    assert (m.requests, m.over_bound, m.errors, m.sent, m.accuracy) == (1000, 5, 2, 1001, 0.93)
    assert m.percentile_s == 0.01 and m.rate == 200.0 and m.duration_s == 5.0
    assert (m.send_lag_p99_s, m.send_lag_max_s) == (0.002, 0.003)
    # the upper 95% bound of p99 from 1000 requests is the 996th: one of the slow ones
    assert m.percentile_upper_s == pytest.approx(0.06, rel=0.01)
    assert judge(s, 0, "grow", m).outcome == "fail"  # 5 over; at most 4 may be


# -- the verdict, the curve ------------------------------------------------------------------


def a_result() -> CapacityResult:
    from tests.unit.coordinator.test_capacity import SERVER, search, settings, simulated

    s = settings(trial_duration_s=3.0, confirm_duration_s=9.0)
    finished, trials = search(s, simulated(SERVER, seed=4))
    return CapacityResult(settings=s, finished=finished, trials=trials, facts={"elapsed_s": 61.2})


def test_the_verdict_text_names_the_answer_and_its_evidence():
    result = a_result()
    text = format_result(result)
    rate = result.max_rate_rps
    assert text.splitlines()[0] == f"capacity: {rate:g} requests/s meet p99<50ms"
    assert "confidence" in text and f"{len(result.trials)} (" in text and "in 61 s" in text
    limited = CapacityResult(
        settings=result.settings,
        finished=Finished("generator_limited", None, "the load generator fell behind"),
        trials=[],
    )
    assert format_result(limited).startswith("capacity: not found, the load generator")
    assert limited.exit_code == 3


def test_the_curve_is_a_png():
    png = curve_png(a_result())
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


# -- the example's arithmetic ----------------------------------------------------------------


def example():
    path = REPO / "examples" / "capacity_compare.py"
    spec = importlib.util.spec_from_file_location("capacity_compare", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_example_divides_the_forecast_by_each_capacity():
    ex = example()
    assert ex.replicas_needed(1000, 300, 0.0) == 4
    assert ex.replicas_needed(1000, 250, 0.0) == 4
    assert ex.replicas_needed(1000, 250, 0.2) == 5
    assert ex.replicas_needed(10, 300, 0.0) == 1
    assert ex.replicas_needed(1000, None, 0.0) is None
    a = ex.Plan("batching", 420.0, "found", ex.replicas_needed(2000, 420.0, 0))
    b = ex.Plan("no batching", 180.0, "found", ex.replicas_needed(2000, 180.0, 0))
    assert ex.verdict([a, b], 2000) == (
        "'batching' needs fewer replicas: 5 for 2000 requests/s ('no batching': 12)"
    )
    c = ex.Plan("limited", 500.0, "generator_limited", 4)
    assert "lower bound" in ex.verdict([a, c], 2000)
    assert "no configuration" in ex.verdict([ex.Plan("x", None, "no_passing_rate", None)], 1)


def test_the_python_api_checks_everything_before_it_starts(tmp_path):
    from coordinator.api import find_capacity

    # a mapping with no load section at all is a fine capacity plan: trials set the rate
    with pytest.raises(PlanError, match=r"^capacity\.slo: 'p99>1ms'"):
        find_capacity({"fleet": {"agents": 1}}, "p99>1ms", out=tmp_path / "never")
    with pytest.raises(PlanError, match=r"^capacity\.precision"):
        find_capacity({}, "p99<1ms", precision="200%", out=tmp_path / "never")
    with pytest.raises(PlanError, match=r"^capacity\.trial_duration"):
        find_capacity({}, "p99<1ms", trial_duration="later", out=tmp_path / "never")
    assert not (tmp_path / "never").exists()
