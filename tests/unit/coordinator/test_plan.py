"""coordinator/plan.py: plans from YAML and flags, validated field by field; exact splits."""

import pytest
import yaml

from coordinator.errors import PlanError
from coordinator.plan import (
    FleetPlan,
    LoadPlan,
    Plan,
    TargetPlan,
    load_plan_file,
    parse_duration,
    parse_percent,
    parse_stages,
    parse_target,
    plan_from_mapping,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5", 1.5),
        (" 10 s ", 10.0),
        (3, 3.0),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text, "load.duration") == seconds


@pytest.mark.parametrize(
    "text", ["", "fast", "10 parsecs", "-1s", "0s", "1e400", "nan", True, None]
)
def test_bad_durations_name_the_field(text):
    with pytest.raises(PlanError, match=r"^load\.duration: "):
        parse_duration(text, "load.duration")


def test_zero_is_a_duration_only_where_allowed():
    assert parse_duration("0s", "load.warmup", allow_zero=True) == 0.0


@pytest.mark.parametrize("text", ["127.0.0.1:8001", "localhost:1", "[::1]:65535"])
def test_targets(text):
    assert parse_target(text) == text


@pytest.mark.parametrize("text", ["127.0.0.1", ":8001", "host:0", "host:70000", "host:http"])
def test_bad_targets(text):
    with pytest.raises(PlanError, match=r"^target\.address: .*HOST:PORT"):
        parse_target(text)


@pytest.mark.parametrize(
    ("text", "value"), [("0.1%", 0.001), ("50%", 0.5), (0.25, 0.25), ("1", 1.0)]
)
def test_percentages(text, value):
    assert parse_percent(text, "x") == pytest.approx(value)


def test_stages_from_strings_and_mappings():
    assert parse_stages(["10s:100", {"duration": "1m", "target": 0}]) == (
        (10.0, 100.0),
        (60.0, 0.0),
    )


@pytest.mark.parametrize(
    ("stages", "field"),
    [
        ([], "load.stages"),
        (["10s"], "load.stages[0]"),
        (["10s:fast"], "load.stages[0].target"),
        ([{"duration": "10s"}], "load.stages[0]"),
        ([{"duration": "-1s", "target": 5}], "load.stages[0].duration"),
    ],
)
def test_bad_stages(stages, field):
    with pytest.raises(PlanError) as caught:
        parse_stages(stages)
    assert caught.value.field == field


def _plan(**sections) -> Plan:
    load = {"rate": 100.0, **sections.pop("load", {})}
    return Plan(load=LoadPlan(**load), **sections)


@pytest.mark.parametrize(
    ("plan", "field"),
    [
        (_plan(fleet=FleetPlan(agents=0)), "fleet.agents"),
        (_plan(fleet=FleetPlan(placement="RANDOM")), "fleet.placement"),
        (_plan(fleet=FleetPlan(on_agent_loss="panic")), "fleet.on_agent_loss"),
        (_plan(fleet=FleetPlan(agent_cpus=0)), "fleet.agent_cpus"),
        (_plan(load={"concurrency": 2}), "load.rate"),
        (_plan(load={"rate": None}), "load.rate"),
        (_plan(load={"rate": -5}), "load.rate"),
        (_plan(load={"rate": float("inf")}), "load.rate"),
        (_plan(load={"rate": None, "concurrency": 0}), "load.concurrency"),
        (_plan(load={"rate": None, "concurrency": 2, "arrival": "poisson"}), "load.arrival"),
        (_plan(load={"arrival": "bursty"}), "load.arrival"),
        (_plan(load={"duration_s": None}), "load.duration"),
        (_plan(load={"duration_s": 0}), "load.duration"),
        (_plan(load={"warmup_s": -1}), "load.warmup"),
        (_plan(load={"stages": ((10, 5),), "warmup_s": 10}), "load.warmup"),
        (_plan(load={"rate": None, "stages": ((10, 0),)}), "load.stages"),
        (_plan(load={"requests": 3}, fleet=FleetPlan(agents=4)), "load.requests"),
        (_plan(load={"batch_size": 0}), "load.batch_size"),
        (_plan(load={"timeout_s": 0}), "load.timeout"),
        (_plan(load={"max_send_lag_s": 0}), "load.max_send_lag"),
        (_plan(load={"max_in_flight": 0}), "load.max_in_flight"),
        (_plan(load={"digits": "sorted"}), "load.digits"),
        (_plan(load={"check_fraction": 1.5}), "load.check_fraction"),
        (_plan(target=TargetPlan(address="nowhere")), "target.address"),
        (_plan(target=TargetPlan(datatype="FP16")), "target.datatype"),
        (_plan(target=TargetPlan(contents="json")), "target.contents"),
        (_plan(target=TargetPlan(tls_cert="/x")), "target.tls_cert"),
        (_plan(target=TargetPlan(tls_ca="/no/such/ca.pem")), "target.tls_ca"),
        (_plan(target=TargetPlan(metadata={"X-Bad Key": "v"})), "target.metadata.X-Bad Key"),
        (_plan(thresholds=("p99 > fast",)), "thresholds[0]"),
    ],
)
def test_invalid_plans_name_the_field(plan, field):
    with pytest.raises(PlanError) as caught:
        plan.validate()
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_open_loop_rate_stages_and_request_count_split_exactly():
    plan = _plan(
        load={"rate": 200.0, "requests": 1000, "stages": ((10.0, 300.0),)},
        fleet=FleetPlan(agents=3),
    ).validate()
    specs = plan.agent_specs("run", "127.0.0.1:1")
    assert sum(s.rate for s in specs) == pytest.approx(200.0)
    assert sum(s.stages[0][1] for s in specs) == pytest.approx(300.0)
    assert sum(s.max_requests for s in specs) == 1000
    assert [s.agent_index for s in specs] == [0, 1, 2]
    assert len({s.seed for s in specs}) == 3  # each agent its own digits and Poisson gaps
    assert all(s.load_model == "open" and s.target == "127.0.0.1:1" for s in specs)


def test_closed_loop_concurrency_and_stages_are_per_agent():
    plan = _plan(
        load={"rate": None, "concurrency": 8, "stages": ((5.0, 16.0),)}, fleet=FleetPlan(agents=2)
    )
    specs = plan.validate().agent_specs("run", "t:1")
    assert [s.concurrency for s in specs] == [8, 8]
    assert [s.stages for s in specs] == [((5.0, 16.0),)] * 2
    assert all(s.load_model == "closed" and s.rate is None for s in specs)


EXAMPLE = """
name: smoke
target: {address: "127.0.0.1:8001", model: mnist, metadata: {x-tenant: demo}}
load:
  arrival: poisson
  rate: 300
  warmup: 5s
  duration: 1m
  timeout: 250ms
  check_fraction: 50%
fleet: {agents: 3, placement: STRICT_SPREAD}
thresholds: ["p99 < 50ms", "error_rate < 0.1%"]
outputs: {metrics_port: 0, linger: 5s}
"""


def test_a_yaml_plan_reads_into_every_section(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(EXAMPLE)
    plan = load_plan_file(path).validate()
    assert plan.name == "smoke"
    assert plan.target.address == "127.0.0.1:8001" and plan.target.metadata == {"x-tenant": "demo"}
    assert (plan.load.arrival, plan.load.rate, plan.load.warmup_s, plan.load.duration_s) == (
        "poisson",
        300,
        5,
        60,
    )
    assert plan.load.timeout_s == 0.25 and plan.load.check_fraction == 0.5
    assert (plan.fleet.agents, plan.fleet.placement) == (3, "STRICT_SPREAD")
    assert plan.thresholds == ("p99 < 50ms", "error_rate < 0.1%")
    assert (plan.outputs.metrics_port, plan.outputs.linger_s) == (0, 5.0)


def test_secrets_are_redacted_from_the_plan_as_run():
    plan = _plan(target=TargetPlan(metadata={"authorization": "Bearer s3cret"}))
    assert "s3cret" not in repr(plan.to_dict())


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("- just a list", "plan"),
        ("loadd: {rate: 5}", "loadd"),
        ("load: {rat: 5}", "load.rat"),
        ("load: 5", "load"),
        ("load: {rate: fast}", "load.rate"),
        ("load: {concurrency: 2.5}", "load.concurrency"),
        ("load: {duration: forever}", "load.duration"),
        ("fleet: {agents: many}", "fleet.agents"),
        ("target: {address: 5}", "target.address"),
        ("target: {tls: {ca: x, pin: y}}", "target.tls"),
        ("thresholds: p99", "thresholds"),
        ("outputs: {linger: -1s}", "outputs.linger"),
    ],
)
def test_malformed_yaml_plans_name_the_field(raw, field):
    with pytest.raises(PlanError) as caught:
        plan_from_mapping(yaml.safe_load(raw), source="plan")
    assert caught.value.field == field


def test_an_unreadable_or_broken_plan_file_is_a_plan_error(tmp_path):
    with pytest.raises(PlanError, match=r"^plan: cannot read"):
        load_plan_file(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("load: {rate: [1,\n")
    with pytest.raises(PlanError, match=r"^plan: .* is not valid YAML"):
        load_plan_file(broken)
