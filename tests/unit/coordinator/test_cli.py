"""coordinator/cli.py: bad invocations fail fast with one line naming the field, exit 2."""

import pytest

from coordinator.cli import build_parser, main, plan_from_args


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["start", "--agents", "0"], "agents"),
        (["start", "--agents", "two"], "agents"),
        (["start", "--rate", "-3"], "rate"),
        (["start", "--rate", "fast"], "rate"),
        (["start", "--concurrency", "0"], "concurrency"),
        (["start", "--rate", "10", "--concurrency", "2"], "arguments"),
        (["start", "--duration", "forever"], "duration"),
        (["start", "--timeout", "0s"], "timeout"),
        (["start", "--target", "example"], "target"),
        (["start", "--target", "127.0.0.1:99999"], "target"),
        (["start", "--metrics-port", "70000"], "metrics_port"),
        (["start", "--batch-size", "0"], "batch_size"),
        (["start", "--agents", "3", "--requests", "2"], "requests"),
        (["start", "--bogus"], "arguments"),
        ([], "arguments"),
        (["explode"], "arguments"),
    ],
)
def test_bad_invocations_exit_2_with_one_line(argv, field, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"coordinator: error: {field}: ")


def test_defaults_make_a_valid_open_loop_plan():
    plan = plan_from_args(build_parser().parse_args(["start"]))
    assert (plan.load_model, plan.rate, plan.agents, plan.duration_s, plan.target) == (
        "open",
        100.0,
        1,
        30.0,
        None,
    )


def test_flags_reach_the_plan():
    args = build_parser().parse_args(
        [
            "start",
            "--agents",
            "2",
            "--concurrency",
            "4",
            "--duration",
            "10s",
            "--requests",
            "50",
            "--target",
            "127.0.0.1:8001",
            "--batch-size",
            "8",
            "--timeout",
            "250ms",
        ]
    )
    plan = plan_from_args(args)
    assert (plan.agents, plan.concurrency, plan.rate, plan.duration_s, plan.max_requests) == (
        2,
        4,
        None,
        10.0,
        50,
    )
    assert (plan.target, plan.batch_size, plan.timeout_s) == ("127.0.0.1:8001", 8, 0.25)
