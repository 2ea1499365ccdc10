"""A run's plan: what to load, how hard, for how long, with which fleet.

A plan is a YAML file (`coordinator start --plan plan.yaml`) and/or command-line flags
(flags override the file). Sections: `target`, `load`, `fleet`, `thresholds`, `outputs`,
and `capacity` (what `coordinator capacity` searches for; see coordinator/capacity.py).
It is validated completely before anything starts: every problem is a `PlanError` that
names the field by its dotted path (`load.rate`) and says what is allowed. The plan also
splits the fleet's load into per-agent `AgentSpec`s.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from agents.spec import AgentSpec, LoadModel, TlsConfig
from coordinator.errors import PlanError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
PLACEMENTS = ("SPREAD", "STRICT_SPREAD", "PACK")
ON_AGENT_LOSS = ("continue", "replace")


def parse_duration(text: Any, field_name: str, *, allow_zero: bool = False) -> float:
    """'30s', '500ms', '2m', '1h' or a number of seconds → seconds."""
    if isinstance(text, bool):
        raise PlanError(field_name, f"{text!r} is not a duration; use e.g. 500ms, 30s, 2m, 1h")
    if isinstance(text, int | float):
        seconds = float(text)
    elif isinstance(text, str) and (match := _DURATION.match(text)):
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        raise PlanError(field_name, f"{text!r} is not a duration; use e.g. 500ms, 30s, 2m, 1h")
    ok = seconds >= 0 if allow_zero else seconds > 0
    if not (ok and math.isfinite(seconds)):
        limit = ">= 0" if allow_zero else "positive"
        raise PlanError(field_name, f"must be a {limit} duration, got {text!r}")
    return seconds


def parse_target(text: str, field_name: str = "target.address") -> str:
    """HOST:PORT (IPv6 as [::1]:PORT) → the same text, checked."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PlanError(field_name, f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8001)")
    return str(text)


def parse_percent(text: Any, field_name: str) -> float:
    """'0.1%' or 0.001 → a fraction in [0, 1]."""
    try:
        value = (
            float(text[:-1]) / 100 if isinstance(text, str) and text.endswith("%") else float(text)
        )
    except (TypeError, ValueError):
        raise PlanError(field_name, f"{text!r} is not a fraction or a percentage") from None
    if not 0 <= value <= 1:
        raise PlanError(field_name, f"must be between 0 and 1 (or 0% and 100%), got {text!r}")
    return value


@dataclass(frozen=True)
class TargetPlan:
    address: str | None = None  # None: start the bundled model server
    model: str = "mnist"
    version: str = ""
    input: str = ""  # "": discovered from the model's metadata
    output: str = ""
    datatype: str = ""  # "", FP32 or UINT8
    contents: str = "raw"  # raw or typed
    tls_ca: str | None = None  # file paths, read when the run starts
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str = ""
    metadata: dict[str, str] = field(default_factory=dict)  # sent with every request
    bearer_token_file: str | None = None  # sent as "authorization: Bearer <token>"


@dataclass(frozen=True)
class LoadPlan:
    arrival: str = "constant"  # constant or poisson (open loop)
    rate: float | None = None  # the fleet's total, requests/s (open loop)
    concurrency: int | None = None  # per agent (closed loop)
    stages: tuple[tuple[float, float], ...] = ()  # (duration_s, target); rates are fleet totals
    warmup_s: float = 0.0
    duration_s: float | None = 30.0  # measured time after warm-up
    requests: int | None = None  # fleet total, split exactly over agents
    batch_size: int = 1
    timeout_s: float = 10.0
    interval_s: float = 1.0
    max_in_flight: int = 1000
    max_send_lag_s: float = 0.050
    digits: str = "cycle"  # cycle or sample
    check_fraction: float = 0.1
    seed: int = 0
    closed: bool = False  # closed loop even when only stages are given

    @property
    def model(self) -> LoadModel:
        return "closed" if self.concurrency is not None or self.closed else "open"


@dataclass(frozen=True)
class FleetPlan:
    agents: int = 1
    agent_cpus: float = 1.0
    placement: str = "SPREAD"
    avoid_head: bool = False  # keep agents off the Ray head node
    node_resource: str | None = None  # only nodes that carry this custom resource
    on_agent_loss: str = "continue"  # continue without it, or replace it for the rest of the run


@dataclass(frozen=True)
class OutputPlan:
    dir: str | None = None  # None: results/<run-id>
    metrics_port: int | None = 9464  # None: no /metrics
    metrics_host: str = "127.0.0.1"
    linger_s: float = 0.0


@dataclass(frozen=True)
class CapacityPlan:
    """The `capacity:` section; None leaves a setting to the search's default."""

    slo: str | None = None  # e.g. 'p99<50ms'
    max_error_rate: float | None = None
    min_accuracy: float | None = None
    confidence: float | None = None
    precision: float | None = None  # relative
    start_rate: float | None = None
    max_rate: float | None = None
    trial_duration_s: float | None = None
    confirm_duration_s: float | None = None
    min_requests: int | None = None
    max_trials: int | None = None


@dataclass(frozen=True)
class Plan:
    name: str = "adhoc"
    target: TargetPlan = field(default_factory=TargetPlan)
    load: LoadPlan = field(default_factory=LoadPlan)
    fleet: FleetPlan = field(default_factory=FleetPlan)
    thresholds: tuple[str, ...] = ()
    abort_on_threshold: bool = False
    outputs: OutputPlan = field(default_factory=OutputPlan)
    capacity: CapacityPlan = field(default_factory=CapacityPlan)

    @property
    def load_model(self) -> LoadModel:
        return self.load.model

    def validate(self) -> Plan:
        """Raise PlanError for the first invalid field; return self when all is well."""
        t, ld, fl, out = self.target, self.load, self.fleet, self.outputs
        if t.address is not None:
            parse_target(t.address)
        if not t.model:
            raise PlanError("target.model", "must name a model")
        if t.datatype not in ("", "FP32", "UINT8"):
            raise PlanError("target.datatype", f"must be FP32 or UINT8, got {t.datatype!r}")
        if t.contents not in ("raw", "typed"):
            raise PlanError("target.contents", f"must be raw or typed, got {t.contents!r}")
        if (t.tls_cert is None) != (t.tls_key is None):
            raise PlanError(
                "target.tls_cert", "a client certificate needs its key (tls_key), and back"
            )
        for name in ("tls_ca", "tls_cert", "tls_key", "bearer_token_file"):
            path = getattr(t, name)
            if path is not None and not Path(path).is_file():
                raise PlanError(f"target.{name}", f"no such file: {path}")
        for key in t.metadata:
            if not re.fullmatch(r"[0-9a-z_.\-]+", key):
                raise PlanError(f"target.metadata.{key}", "keys are lowercase ASCII: 0-9 a-z _ . -")

        if ld.arrival not in ("constant", "poisson"):
            raise PlanError("load.arrival", f"must be constant or poisson, got {ld.arrival!r}")
        if ld.rate is not None and ld.concurrency is not None:
            raise PlanError(
                "load.rate", "give one of rate (open loop) or concurrency (closed loop)"
            )
        if ld.rate is None and ld.concurrency is None and not ld.stages:
            raise PlanError(
                "load.rate", "give a rate (open loop), a concurrency (closed loop) or stages"
            )
        if ld.rate is not None and not (ld.rate > 0 and math.isfinite(ld.rate)):
            raise PlanError("load.rate", f"must be a positive number of requests/s, got {ld.rate}")
        if ld.concurrency is not None and ld.concurrency < 1:
            raise PlanError("load.concurrency", f"must be >= 1, got {ld.concurrency}")
        if ld.model == "closed" and ld.arrival == "poisson":
            raise PlanError(
                "load.arrival", "poisson arrivals are open loop; give a rate, not a concurrency"
            )
        for i, (duration, target) in enumerate(ld.stages):
            if not (duration > 0 and math.isfinite(duration)):
                raise PlanError(f"load.stages[{i}].duration", f"must be > 0, got {duration}")
            if not (target >= 0 and math.isfinite(target)):
                raise PlanError(f"load.stages[{i}].target", f"must be >= 0, got {target}")
        if (
            ld.stages
            and ld.model == "open"
            and (ld.rate or 0) == 0
            and not any(t for _, t in ld.stages)
        ):
            raise PlanError("load.stages", "every target is 0: the stages never send a request")
        if ld.stages and ld.warmup_s >= sum(d for d, _ in ld.stages):
            raise PlanError(
                "load.warmup", "with stages, the warm-up must end before the last stage does"
            )
        if not ld.stages and ld.duration_s is None and ld.requests is None:
            raise PlanError("load.duration", "give a duration or a request count (or both)")
        if ld.duration_s is not None and not ld.duration_s > 0:
            raise PlanError("load.duration", f"must be > 0, got {ld.duration_s}")
        if ld.warmup_s < 0:
            raise PlanError("load.warmup", f"must be >= 0, got {ld.warmup_s}")
        if ld.requests is not None and ld.requests < fl.agents:
            raise PlanError(
                "load.requests", f"must be >= the number of agents ({fl.agents}), got {ld.requests}"
            )
        for name, value, low in (
            ("batch_size", ld.batch_size, 1),
            ("max_in_flight", ld.max_in_flight, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise PlanError(f"load.{name}", f"must be a whole number >= {low}, got {value!r}")
        for name, value in (
            ("timeout", ld.timeout_s),
            ("interval", ld.interval_s),
            ("max_send_lag", ld.max_send_lag_s),
        ):
            if not (value > 0 and math.isfinite(value)):
                raise PlanError(f"load.{name}", f"must be > 0, got {value}")
        if ld.digits not in ("cycle", "sample"):
            raise PlanError("load.digits", f"must be cycle or sample, got {ld.digits!r}")
        if not 0 <= ld.check_fraction <= 1:
            raise PlanError(
                "load.check_fraction", f"must be between 0 and 1, got {ld.check_fraction}"
            )

        if not isinstance(fl.agents, int) or fl.agents < 1:
            raise PlanError("fleet.agents", f"must be a whole number >= 1, got {fl.agents!r}")
        if not fl.agent_cpus > 0:
            raise PlanError("fleet.agent_cpus", f"must be > 0, got {fl.agent_cpus}")
        if fl.placement not in PLACEMENTS:
            raise PlanError(
                "fleet.placement", f"must be one of {', '.join(PLACEMENTS)}, got {fl.placement!r}"
            )
        if fl.on_agent_loss not in ON_AGENT_LOSS:
            raise PlanError(
                "fleet.on_agent_loss",
                f"must be one of {', '.join(ON_AGENT_LOSS)}, got {fl.on_agent_loss!r}",
            )

        if out.metrics_port is not None and not 0 <= out.metrics_port < 65536:
            raise PlanError(
                "outputs.metrics_port", f"must be a port number 0-65535, got {out.metrics_port}"
            )
        if out.linger_s < 0:
            raise PlanError("outputs.linger", f"must be >= 0, got {out.linger_s}")
        from coordinator.thresholds import parse_thresholds

        parse_thresholds(self.thresholds)
        if self.capacity != CapacityPlan():
            from coordinator.capacity import settings_for

            settings_for(self.capacity, slo_required=False)
        return self

    # -- what the agents get -------------------------------------------------------------

    def tls(self) -> TlsConfig | None:
        t = self.target
        if t.tls_ca is None and t.tls_cert is None:
            return None

        def read(path: str | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return TlsConfig(
            ca_pem=read(t.tls_ca),
            cert_pem=read(t.tls_cert),
            key_pem=read(t.tls_key),
            server_name=t.tls_server_name,
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        pairs = dict(self.target.metadata)
        if self.target.bearer_token_file:
            token = Path(self.target.bearer_token_file).read_text().strip()
            pairs["authorization"] = f"Bearer {token}"
        return tuple(pairs.items())

    def agent_specs(self, run_id: str, target: str, agents: int | None = None) -> list[AgentSpec]:
        """Split the fleet's load over `agents` (default: the plan's): rates (and open-loop
        stage targets) and the request count evenly, concurrency per agent."""
        n = agents or self.fleet.agents
        ld, t = self.load, self.target
        tls, metadata = self.tls(), self.metadata()
        is_open = ld.model == "open"
        specs = []
        for i in range(n):
            requests = None
            if ld.requests is not None:
                # The first (requests % n) agents take one more, so the sum is exact.
                requests = ld.requests // n + (i < ld.requests % n)
            stages = tuple((d, tgt / n if is_open else tgt) for d, tgt in ld.stages)
            specs.append(
                AgentSpec(
                    run_id=run_id,
                    agent_index=i,
                    target=target,
                    model_name=t.model,
                    model_version=t.version,
                    load_model=ld.model,
                    arrival=ld.arrival,  # type: ignore[arg-type]
                    rate=None if ld.rate is None else ld.rate / n,
                    concurrency=ld.concurrency,
                    stages=stages,
                    warmup_s=ld.warmup_s,
                    duration_s=ld.duration_s,
                    max_requests=requests,
                    interval_s=ld.interval_s,
                    timeout_s=ld.timeout_s,
                    batch_size=ld.batch_size,
                    max_in_flight=ld.max_in_flight,
                    max_send_lag_s=ld.max_send_lag_s,
                    check_fraction=ld.check_fraction,
                    seed=ld.seed * 1000 + i,
                    digits=ld.digits,  # type: ignore[arg-type]
                    datatype=t.datatype,
                    contents=t.contents,  # type: ignore[arg-type]
                    input_name=t.input,
                    output_name=t.output,
                    tls=tls,
                    metadata=metadata,
                )
            )
        return specs

    def to_dict(self) -> dict[str, Any]:
        """The plan as run, secrets redacted (metadata values, token file contents)."""
        data = asdict(self)
        data["target"]["metadata"] = {k: "<redacted>" for k in self.target.metadata}
        return data


# -- loading from YAML and flags ----------------------------------------------------------

_SECTION_KEYS = {
    "target": {
        "address",
        "model",
        "version",
        "input",
        "output",
        "datatype",
        "contents",
        "tls",
        "metadata",
        "bearer_token_file",
    },
    "load": {
        "arrival",
        "rate",
        "concurrency",
        "stages",
        "warmup",
        "duration",
        "requests",
        "batch_size",
        "timeout",
        "interval",
        "max_in_flight",
        "max_send_lag",
        "digits",
        "check_fraction",
        "seed",
        "closed",
    },
    "fleet": {"agents", "agent_cpus", "placement", "avoid_head", "node_resource", "on_agent_loss"},
    "outputs": {"dir", "metrics_port", "metrics_host", "linger"},
    "capacity": {
        "slo",
        "max_error_rate",
        "min_accuracy",
        "confidence",
        "precision",
        "start_rate",
        "max_rate",
        "trial_duration",
        "confirm_duration",
        "min_requests",
        "max_trials",
    },
}
_TOP_KEYS = {"name", "target", "load", "fleet", "thresholds", "outputs", "capacity"}


def _number(value: Any, name: str, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlanError(name, f"must be a number, got {value!r}")
    if kind is int and (not float(value).is_integer()):
        raise PlanError(name, f"must be a whole number, got {value!r}")
    return kind(value)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise PlanError(name, f"must be text, got {value!r}")
    return value


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise PlanError(key, f"must be a mapping of settings, got {type(value).__name__}")
    unknown = set(value) - _SECTION_KEYS[key]
    if unknown:
        allowed = ", ".join(sorted(_SECTION_KEYS[key]))
        raise PlanError(f"{key}.{sorted(unknown)[0]}", f"unknown setting; allowed: {allowed}")
    return value


def plan_from_mapping(raw: Any, *, source: str = "plan") -> Plan:
    """Build (not yet validate) a Plan from a parsed YAML mapping."""
    if not isinstance(raw, dict):
        raise PlanError(
            source,
            "a plan is a YAML mapping with sections target, load, fleet, thresholds, outputs",
        )
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise PlanError(
            sorted(unknown)[0], f"unknown section; allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    t, ld, fl, out = (_section(raw, k) for k in ("target", "load", "fleet", "outputs"))

    target: dict[str, Any] = {}
    for key in ("model", "version", "input", "output", "datatype", "contents", "bearer_token_file"):
        if key in t:
            target[key] = _text(t[key], f"target.{key}")
    if "address" in t and t["address"] is not None:
        target["address"] = parse_target(_text(t["address"], "target.address"))
    if "tls" in t:
        tls = t["tls"] or {}
        if not isinstance(tls, dict) or set(tls) - {"ca", "cert", "key", "server_name"}:
            raise PlanError("target.tls", "a mapping with ca, cert, key, server_name")
        for key in ("ca", "cert", "key"):
            if key in tls:
                target[f"tls_{key}"] = _text(tls[key], f"target.tls.{key}")
        if "server_name" in tls:
            target["tls_server_name"] = _text(tls["server_name"], "target.tls.server_name")
    if "metadata" in t:
        if not isinstance(t["metadata"], dict):
            raise PlanError("target.metadata", "a mapping of header names to values")
        target["metadata"] = {
            str(k): _text(v, f"target.metadata.{k}") for k, v in t["metadata"].items()
        }

    load: dict[str, Any] = {}
    for key in ("arrival", "digits"):
        if key in ld:
            load[key] = _text(ld[key], f"load.{key}")
    if ld.get("rate") is not None:
        load["rate"] = _number(ld["rate"], "load.rate")
    for key, name in (
        ("concurrency", "concurrency"),
        ("requests", "requests"),
        ("batch_size", "batch_size"),
        ("max_in_flight", "max_in_flight"),
        ("seed", "seed"),
    ):
        if ld.get(key) is not None:
            load[name] = _number(ld[key], f"load.{key}", int)
    for key in ("warmup", "duration", "timeout", "interval", "max_send_lag"):
        if key in ld:
            load[f"{key}_s"] = (
                None
                if ld[key] is None
                else parse_duration(ld[key], f"load.{key}", allow_zero=key == "warmup")
            )
    if "check_fraction" in ld:
        load["check_fraction"] = parse_percent(ld["check_fraction"], "load.check_fraction")
    if "closed" in ld:
        load["closed"] = bool(ld["closed"])
    if "stages" in ld:
        load["stages"] = parse_stages(ld["stages"])

    fleet: dict[str, Any] = {}
    if "agents" in fl:
        fleet["agents"] = _number(fl["agents"], "fleet.agents", int)
    if "agent_cpus" in fl:
        fleet["agent_cpus"] = _number(fl["agent_cpus"], "fleet.agent_cpus")
    for key in ("placement", "on_agent_loss"):
        if key in fl:
            fleet[key] = _text(fl[key], f"fleet.{key}")
    if "avoid_head" in fl:
        fleet["avoid_head"] = bool(fl["avoid_head"])
    if fl.get("node_resource") is not None:
        fleet["node_resource"] = _text(fl["node_resource"], "fleet.node_resource")

    outputs: dict[str, Any] = {}
    if "dir" in out:
        outputs["dir"] = _text(out["dir"], "outputs.dir")
    if "metrics_port" in out:
        outputs["metrics_port"] = (
            None
            if out["metrics_port"] is None
            else _number(out["metrics_port"], "outputs.metrics_port", int)
        )
    if "metrics_host" in out:
        outputs["metrics_host"] = _text(out["metrics_host"], "outputs.metrics_host")
    if "linger" in out:
        outputs["linger_s"] = parse_duration(out["linger"], "outputs.linger", allow_zero=True)

    cap = _section(raw, "capacity")
    capacity: dict[str, Any] = {}
    if cap.get("slo") is not None:
        capacity["slo"] = _text(cap["slo"], "capacity.slo")
    for key in ("max_error_rate", "min_accuracy", "confidence", "precision"):
        if cap.get(key) is not None:
            capacity[key] = parse_percent(cap[key], f"capacity.{key}")
    for key in ("start_rate", "max_rate"):
        if cap.get(key) is not None:
            capacity[key] = _number(cap[key], f"capacity.{key}")
    for key in ("trial_duration", "confirm_duration"):
        if cap.get(key) is not None:
            capacity[f"{key}_s"] = parse_duration(cap[key], f"capacity.{key}")
    for key in ("min_requests", "max_trials"):
        if cap.get(key) is not None:
            capacity[key] = _number(cap[key], f"capacity.{key}", int)

    thresholds = raw.get("thresholds") or []
    abort = False
    if isinstance(thresholds, dict):
        abort = bool(thresholds.get("abort_on_fail", False))
        thresholds = thresholds.get("rules") or []
    if not isinstance(thresholds, list) or not all(isinstance(x, str) for x in thresholds):
        raise PlanError(
            "thresholds",
            "a list of rules such as 'p99 < 50ms', or {rules: [...], abort_on_fail: true}",
        )

    return Plan(
        name=_text(raw.get("name", "adhoc"), "name"),
        target=TargetPlan(**target),
        load=LoadPlan(**load),
        fleet=FleetPlan(**fleet),
        thresholds=tuple(thresholds),
        abort_on_threshold=abort,
        outputs=OutputPlan(**outputs),
        capacity=CapacityPlan(**capacity),
    )


def parse_stages(value: Any, field_name: str = "load.stages") -> tuple[tuple[float, float], ...]:
    """A list of {duration, target} mappings, or 'duration:target' strings (30s:200)."""
    if not isinstance(value, list) or not value:
        raise PlanError(field_name, "a list of stages such as {duration: 30s, target: 200}")
    stages = []
    for i, item in enumerate(value):
        name = f"{field_name}[{i}]"
        if isinstance(item, str):
            duration, sep, target = item.partition(":")
            if not sep:
                raise PlanError(name, f"{item!r} is not DURATION:TARGET (e.g. 30s:200)")
            try:
                target_value = float(target)
            except ValueError:
                raise PlanError(f"{name}.target", f"{target!r} is not a number") from None
            item = {"duration": duration, "target": target_value}
        if not isinstance(item, dict) or set(item) != {"duration", "target"}:
            raise PlanError(name, "a stage is {duration: 30s, target: 200}")
        stages.append(
            (
                parse_duration(item["duration"], f"{name}.duration"),
                _number(item["target"], f"{name}.target"),
            )
        )
    return tuple(stages)


def load_plan_file(path: str | Path) -> Plan:
    """Read a YAML plan; errors name the file or the field."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise PlanError("plan", f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise PlanError("plan", f"{path} is not valid YAML: {error}".splitlines()[0]) from None
    return plan_from_mapping(raw, source=str(path))


def override(plan: Plan, section: str, **changes: Any) -> Plan:
    """A copy of the plan with some fields of one section replaced (flags over the file)."""
    if not changes:
        return plan
    current = getattr(plan, section)
    names = {f.name for f in fields(current)}
    unknown = set(changes) - names
    if unknown:
        raise ValueError(f"{section} has no field {sorted(unknown)}")
    return replace(plan, **{section: replace(current, **changes)})
