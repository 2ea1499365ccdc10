"""coordinator/cli.py: bad invocations fail fast with one line naming the field, exit 2."""

import pytest

from coordinator.cli import build_parser, exit_code, main, plan_from_args


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["start", "--agents", "0"], "fleet.agents"),
        (["start", "--agents", "two"], "fleet.agents"),
        (["start", "--rate", "-3"], "load.rate"),
        (["start", "--rate", "fast"], "load.rate"),
        (["start", "--concurrency", "0"], "load.concurrency"),
        (["start", "--rate", "10", "--concurrency", "2"], "arguments"),
        (["start", "--duration", "forever"], "load.duration"),
        (["start", "--warmup=-5s"], "load.warmup"),
        (["start", "--timeout", "0s"], "load.timeout"),
        (["start", "--max-send-lag", "soon"], "load.max_send_lag"),
        (["start", "--target", "example"], "target.address"),
        (["start", "--target", "127.0.0.1:99999"], "target.address"),
        (["start", "--metrics-port", "70000"], "outputs.metrics_port"),
        (["start", "--batch-size", "0"], "load.batch_size"),
        (["start", "--agents", "3", "--requests", "2"], "load.requests"),
        (["start", "--stage", "10s"], "load.stages[0]"),
        (["start", "--stage", "10s:lots"], "load.stages[0].target"),
        (["start", "--concurrency", "2", "--arrival", "poisson"], "load.arrival"),
        (["start", "--check-fraction", "150%"], "load.check_fraction"),
        (["start", "--header", "novalue"], "target.metadata"),
        (["start", "--tls-ca", "/no/such/file.pem"], "target.tls_ca"),
        (["start", "--tls-cert", "/no/such/cert.pem"], "target.tls_cert"),
        (["start", "--threshold", "p99 fast"], "thresholds[0]"),
        (["start", "--threshold", "latency < 5ms"], "thresholds[0]"),
        (["start", "--plan", "/no/such/plan.yaml"], "plan"),
        (["start", "--arrival", "bursty"], "arguments"),
        (["start", "--bogus"], "arguments"),
        (["validate", "--agents", "-1"], "fleet.agents"),
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
    assert (plan.load_model, plan.load.rate, plan.fleet.agents, plan.load.duration_s) == (
        "open",
        100.0,
        1,
        30.0,
    )
    assert plan.target.address is None


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
            "--warmup",
            "2s",
            "--header",
            "X-Tenant=demo",
            "--threshold",
            "p99 < 5ms",
            "--placement",
            "STRICT_SPREAD",
        ]
    )
    plan = plan_from_args(args)
    assert (plan.fleet.agents, plan.load.concurrency, plan.load.rate) == (2, 4, None)
    assert (plan.load.duration_s, plan.load.requests, plan.load.warmup_s) == (10.0, 50, 2.0)
    assert (plan.target.address, plan.load.batch_size, plan.load.timeout_s) == (
        "127.0.0.1:8001",
        8,
        0.25,
    )
    assert plan.target.metadata == {"x-tenant": "demo"}
    assert plan.thresholds == ("p99 < 5ms",)
    assert plan.fleet.placement == "STRICT_SPREAD"


def test_flags_override_the_plan_file(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("name: p\nload: {concurrency: 3, duration: 1m}\nfleet: {agents: 4}\n")
    plan = plan_from_args(build_parser().parse_args(["start", "--plan", str(path), "--rate", "50"]))
    assert (plan.load.rate, plan.load.concurrency, plan.load.duration_s, plan.fleet.agents) == (
        50,
        None,
        60,
        4,
    )


def test_validate_prints_a_verdict_and_starts_nothing(tmp_path, capsys):
    path = tmp_path / "plan.yaml"
    path.write_text("name: p\nload: {rate: 10, duration: 1m}\n")
    assert main(["validate", "--plan", str(path)]) == 0
    assert "plan 'p' is valid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("summary", "code"),
    [
        ({"interrupted": False, "valid": True, "passed": True, "agents_lost": 0}, 0),
        ({"interrupted": False, "valid": True, "passed": False, "agents_lost": 0}, 1),
        ({"interrupted": False, "valid": True, "passed": True, "agents_lost": 1}, 0),
        (
            {
                "interrupted": False,
                "valid": True,
                "passed": False,
                "agents_lost": 0,
                "aborted": "x",
            },
            1,
        ),
        ({"interrupted": False, "valid": False, "passed": True, "agents_lost": 0}, 3),
        ({"interrupted": True, "valid": True, "passed": True, "agents_lost": 0}, 130),
    ],
)
def test_exit_codes(summary, code):
    assert exit_code(summary) == code
