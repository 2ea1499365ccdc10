"""`coordinator`: the command line. Only `main()` turns errors into exit codes.

Exit codes: 0 the run completed and every threshold held; 1 a threshold failed or aborted
the run (lost agents are reported as degraded windows, not failures); 2 usage or plan
error, nothing started; 3 the run was invalid (the generator could not keep up, or more
than half the agents were lost) or the target or the cluster could not be used; 130
interrupted (the summary of what was received is still written).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from coordinator.errors import PlanError, RaysiegeError
from coordinator.plan import (
    Plan,
    load_plan_file,
    override,
    parse_duration,
    parse_percent,
    parse_stages,
    parse_target,
)
from coordinator.progress import make_progress
from coordinator.run import Run, RunOptions
from coordinator.summary import format_summary

log = logging.getLogger("coordinator")


class _Parser(argparse.ArgumentParser):
    """argparse that raises PlanError (exit 2, one line) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise PlanError("arguments", message)


def _positive_int(field: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise PlanError(field, f"{text!r} is not a whole number") from None
        if value < 1:
            raise PlanError(field, f"must be >= 1, got {value}")
        return value

    return parse


def _positive_float(field: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise PlanError(field, f"{text!r} is not a number") from None
        if not value > 0 or value == float("inf"):
            raise PlanError(field, f"must be a positive number, got {text}")
        return value

    return parse


def _port(field: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not 0 <= int(text) < 65536:
            raise PlanError(field, f"{text!r} is not a port number (0-65535; 0 picks a free one)")
        return int(text)

    return parse


def _header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise PlanError("target.metadata", f"{text!r} is not KEY=VALUE")
    return key.strip().lower(), value


def _add_plan_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan", type=Path, help="a YAML plan; the flags below override its fields")
    t = p.add_argument_group("target")
    t.add_argument(
        "--target",
        type=lambda s: parse_target(s, "target.address"),
        help="HOST:PORT of an Open Inference Protocol gRPC server "
        "(default: start the bundled MNIST model server on a free loopback port)",
    )
    t.add_argument("--model", help="model name (default mnist)")
    t.add_argument("--model-version", help="model version (default: the server's choice)")
    t.add_argument("--input-name", help="input tensor (default: discovered from ModelMetadata)")
    t.add_argument("--output-name", help="output tensor (default: the model's first)")
    t.add_argument(
        "--datatype", choices=["FP32", "UINT8"], help="input datatype (default: the model's)"
    )
    t.add_argument(
        "--contents",
        choices=["raw", "typed"],
        help="raw_input_contents (default) or typed contents",
    )
    t.add_argument(
        "--tls-ca", help="PEM file of the CA that signed the server's certificate (enables TLS)"
    )
    t.add_argument("--tls-cert", help="client certificate PEM file, for mutual TLS")
    t.add_argument("--tls-key", help="client key PEM file, for mutual TLS")
    t.add_argument("--tls-server-name", help="the name to check the server's certificate against")
    t.add_argument(
        "--header",
        type=_header,
        action="append",
        metavar="KEY=VALUE",
        help="metadata sent with every request (repeatable)",
    )
    t.add_argument("--bearer-token-file", help="send 'authorization: Bearer <file contents>'")
    ld = p.add_argument_group("load")
    mode = ld.add_mutually_exclusive_group()
    mode.add_argument(
        "--rate",
        type=_positive_float("load.rate"),
        help="open loop: the fleet's total requests/s (default 100)",
    )
    mode.add_argument(
        "--concurrency",
        type=_positive_int("load.concurrency"),
        help="closed loop: requests in flight per agent",
    )
    ld.add_argument(
        "--arrival", choices=["constant", "poisson"], help="open-loop arrivals (default constant)"
    )
    ld.add_argument(
        "--stage",
        action="append",
        metavar="DURATION:TARGET",
        help="a ramping stage, e.g. 30s:200 (repeatable; a rate, or a concurrency with --closed)",
    )
    ld.add_argument("--closed", action="store_true", help="stages ramp a closed loop's concurrency")
    ld.add_argument(
        "--warmup", help="a warm-up before the measured duration, left out of the figures"
    )
    ld.add_argument("--duration", help="measured time, e.g. 30s, 2m (default 30s)")
    ld.add_argument(
        "--requests", type=_positive_int("load.requests"), help="stop after this many requests"
    )
    ld.add_argument(
        "--batch-size", type=_positive_int("load.batch_size"), help="digits per request (default 1)"
    )
    ld.add_argument("--timeout", help="per-request deadline (default 10s)")
    ld.add_argument(
        "--max-in-flight",
        type=_positive_int("load.max_in_flight"),
        help="per agent; arrivals beyond it are dropped and counted (default 1000)",
    )
    ld.add_argument(
        "--max-send-lag", help="send-lag p99 above which the generator fell behind (default 50ms)"
    )
    ld.add_argument(
        "--digits",
        choices=["cycle", "sample"],
        help="digits in a shuffled cycle or sampled (default cycle)",
    )
    ld.add_argument(
        "--check-fraction", help="fraction of responses checked against labels (default 0.1)"
    )
    ld.add_argument("--seed", type=int, help="seeds digit order and Poisson gaps (default 0)")
    fl = p.add_argument_group("fleet")
    fl.add_argument(
        "--agents", type=_positive_int("fleet.agents"), help="number of agents (default 1)"
    )
    fl.add_argument(
        "--agent-cpus",
        type=_positive_float("fleet.agent_cpus"),
        help="CPUs reserved per agent (default 1)",
    )
    fl.add_argument(
        "--placement", choices=["SPREAD", "STRICT_SPREAD", "PACK"], help="default SPREAD"
    )
    fl.add_argument("--avoid-head", action="store_true", help="keep agents off the Ray head node")
    fl.add_argument("--node-resource", help="place agents only on nodes with this custom resource")
    fl.add_argument("--address", help="an existing Ray cluster (default: an embedded local Ray)")
    out = p.add_argument_group("outputs")
    out.add_argument(
        "--threshold",
        action="append",
        metavar="RULE",
        help="e.g. 'p99 < 50ms', 'error_rate < 0.1%%' (repeatable)",
    )
    out.add_argument("--out", help="results folder (default results/<run-id>)")
    out.add_argument(
        "--metrics-port",
        type=_port("outputs.metrics_port"),
        help="/metrics port (default 9464; 0 picks a free one)",
    )
    out.add_argument("--metrics-host", help="/metrics bind address (default 127.0.0.1)")
    out.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    out.add_argument("--linger", help="keep /metrics up this long after the run (default 0s)")
    out.add_argument("--name", help="the plan's name, in /metrics and the summary")


def _add_capacity_flags(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group("capacity search (also the plan's capacity: section)")
    c.add_argument("--slo", help="the latency SLO, e.g. 'p99<50ms' (p50, p90, p95, p99, p999)")
    c.add_argument("--max-error-rate", help="errors allowed in a passing trial (default 0.1%%)")
    c.add_argument("--min-accuracy", help="checked predictions' accuracy at least (default: none)")
    c.add_argument(
        "--confidence", help="that the percentile is under the bound, binomial (default 95%%)"
    )
    c.add_argument(
        "--precision", help="stop bisecting within this of the lowest failing rate (default 5%%)"
    )
    c.add_argument("--start-rate", type=_positive_float("capacity.start_rate"), help="default 50")
    c.add_argument("--max-rate", type=_positive_float("capacity.max_rate"), help="default: none")
    c.add_argument("--trial-duration", help="measured time per trial (default 10s)")
    c.add_argument("--confirm-duration", help="the confirmation run (default 3 trial durations)")
    c.add_argument(
        "--min-requests",
        type=_positive_int("capacity.min_requests"),
        help="requests per trial at least; low rates run longer (default: from the binomial, "
        "1,200 for p99 at 95%%)",
    )
    c.add_argument(
        "--max-trials",
        type=_positive_int("capacity.max_trials"),
        help="give up after this many trials (default 25)",
    )
    c.add_argument(
        "--server-args",
        help="extra arguments for the bundled model server, e.g. '--workers 2 --no-batching'",
    )
    c.add_argument(
        "--connect-timeout", default="30s", help="wait this long for the target (default 30s)"
    )
    c.add_argument("--json", action="store_true", help="print capacity.json instead")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="coordinator",
        description="raysiege: distributed load tests for gRPC inference servers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    start = commands.add_parser("start", help="run a load test")
    _add_plan_flags(start)
    start.add_argument(
        "--connect-timeout", default="30s", help="wait this long for the target (default 30s)"
    )
    start.add_argument("--run-id", help="the run's id (default: time and a random suffix)")
    start.add_argument(
        "--json", action="store_true", help="print summary.json instead of the short summary"
    )
    validate = commands.add_parser(
        "validate", help="check a plan (and flags) without running anything"
    )
    _add_plan_flags(validate)
    capacity = commands.add_parser(
        "capacity",
        help="find the highest rate that meets a latency SLO (trials on the same fleet)",
        description="Grow the rate until a trial fails, bisect to --precision, confirm with a "
        "longer run. Each trial is an open-loop Poisson run; the load section's batch size, "
        "timeout, digits, checks, send-lag limit and warm-up (2 s if none) apply to it. "
        "Exit codes: 0 an answer, 1 none, 2 bad input, 3 the generator limited the search "
        "(or the target or the cluster could not be used), 130 interrupted.",
    )
    _add_plan_flags(capacity)
    _add_capacity_flags(capacity)
    report = commands.add_parser(
        "report", help="re-render a run's summary from its results folder (even a killed run's)"
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a results folder")
    report.add_argument(
        "--html", action="store_true", help="also write RUN_DIR/report.html, with plots"
    )
    report.add_argument(
        "--json", action="store_true", help="print summary.json instead of the short summary"
    )
    return parser


def _given(args: argparse.Namespace, **names: str) -> dict[str, Any]:
    """{plan field: value} for the flags that were given (attribute -> field name)."""
    return {
        field: getattr(args, attr)
        for attr, field in names.items()
        if getattr(args, attr) is not None
    }


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The plan file (if any) with the flags laid over it, validated."""
    plan = load_plan_file(args.plan) if args.plan else Plan()
    target = _given(
        args,
        target="address",
        model="model",
        model_version="version",
        input_name="input",
        output_name="output",
        datatype="datatype",
        contents="contents",
        tls_ca="tls_ca",
        tls_cert="tls_cert",
        tls_key="tls_key",
        tls_server_name="tls_server_name",
        bearer_token_file="bearer_token_file",
    )
    if args.header:
        target["metadata"] = {**plan.target.metadata, **dict(args.header)}
    load = _given(
        args,
        rate="rate",
        concurrency="concurrency",
        arrival="arrival",
        requests="requests",
        batch_size="batch_size",
        max_in_flight="max_in_flight",
        digits="digits",
        seed="seed",
    )
    if args.rate is not None:
        load["concurrency"] = None
    if args.concurrency is not None:
        load["rate"] = None
    if args.closed:
        load["closed"] = True
    if args.stage:
        load["stages"] = parse_stages(args.stage, "load.stages")
    for flag in ("warmup", "duration", "timeout", "max_send_lag"):
        if getattr(args, flag) is not None:
            load[f"{flag}_s"] = parse_duration(
                getattr(args, flag), f"load.{flag}", allow_zero=flag == "warmup"
            )
    if args.check_fraction is not None:
        load["check_fraction"] = parse_percent(args.check_fraction, "load.check_fraction")
    fleet = _given(
        args,
        agents="agents",
        agent_cpus="agent_cpus",
        placement="placement",
        node_resource="node_resource",
    )
    if args.avoid_head:
        fleet["avoid_head"] = True
    outputs = _given(args, out="dir", metrics_port="metrics_port", metrics_host="metrics_host")
    if args.no_metrics:
        outputs["metrics_port"] = None
    if args.linger is not None:
        outputs["linger_s"] = parse_duration(args.linger, "outputs.linger", allow_zero=True)

    plan = override(plan, "target", **target)
    plan = override(plan, "load", **load)
    plan = override(plan, "fleet", **fleet)
    plan = override(plan, "outputs", **outputs)
    if plan.load.rate is None and plan.load.concurrency is None and not plan.load.stages:
        plan = override(plan, "load", rate=100.0)
    if args.threshold:
        plan = replace(plan, thresholds=(*plan.thresholds, *args.threshold))
    if args.name:
        plan = replace(plan, name=args.name)
    return plan.validate()


def exit_code(summary: dict[str, Any]) -> int:
    if summary.get("interrupted"):
        return 130
    if not summary["valid"]:
        return 3
    if not summary["passed"] or summary.get("aborted"):
        return 1
    return 0


def start(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    options = RunOptions(
        address=args.address,
        run_id=args.run_id,
        target_timeout_s=parse_duration(args.connect_timeout, "connect_timeout"),
        handle_signals=True,
    )
    run = Run(plan, options, progress=make_progress(sys.stderr))
    result = asyncio.run(run.execute())
    if args.json:
        print(json.dumps(result.summary, indent=2))
    else:
        print(format_summary(result.summary))
        print(f"results in {result.out_dir}/")
    code = exit_code(result.summary)
    if result.agents_lost:
        log.error("%d agent(s) lost during the run", result.agents_lost)
    return code


def capacity(args: argparse.Namespace) -> int:
    """A capacity search: exit 0 with an answer, 3 when the generator limited it."""
    import shlex

    from coordinator.capacity import format_result, settings_for
    from coordinator.capacity_run import CapacitySearch, SearchOptions

    for flag, instead in (
        ("rate", "--start-rate"),
        ("duration", "--trial-duration"),
        ("requests", "--min-requests"),
        ("threshold", "--slo, --max-error-rate, --min-accuracy"),
    ):
        if getattr(args, flag) is not None:
            raise PlanError(f"--{flag}", f"a capacity search sets it per trial; use {instead}")
    plan = plan_from_args(args)

    def percent(name: str) -> float | None:
        value = getattr(args, name)
        return None if value is None else parse_percent(value, f"capacity.{name}")

    def duration(name: str) -> float | None:
        value = getattr(args, name)
        return None if value is None else parse_duration(value, f"capacity.{name}")

    settings = settings_for(
        plan.capacity,
        slo=args.slo,
        max_error_rate=percent("max_error_rate"),
        min_accuracy=percent("min_accuracy"),
        confidence=percent("confidence"),
        precision=percent("precision"),
        start_rate=args.start_rate,
        max_rate=args.max_rate,
        trial_duration_s=duration("trial_duration"),
        confirm_duration_s=duration("confirm_duration"),
        min_requests=args.min_requests,
        max_trials=args.max_trials,
    )
    try:
        server_args = shlex.split(args.server_args or "")
    except ValueError as error:
        raise PlanError("--server-args", str(error)) from None
    options = SearchOptions(
        address=args.address,
        target_timeout_s=parse_duration(args.connect_timeout, "connect_timeout"),
        server_args=server_args,
        handle_signals=True,
    )
    search = CapacitySearch(plan, settings, options, stream=sys.stderr)
    result = asyncio.run(search.execute())
    if args.json:
        print((search.out_dir / "capacity.json").read_text(), end="")
    else:
        print(format_result(result))
        print(f"results in {search.out_dir}/ (capacity.json, trials.csv, capacity.png)")
    return result.exit_code


def validate(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    ld = plan.load
    how = f"rate {ld.rate}/s" if ld.rate else f"concurrency {ld.concurrency}"
    if ld.stages:
        how += f", {len(ld.stages)} stages"
    print(
        f"plan {plan.name!r} is valid: {plan.fleet.agents} agent(s), {plan.load_model} loop, {how}"
    )
    return 0


def report(args: argparse.Namespace) -> int:
    """Re-render summary.json (and report.html) from intervals.pb and plan.json.

    Exit codes as for `start`, judged on the re-rendered figures; never 130, which says
    that a command was interrupted, not that the run it reports on was.
    """
    from coordinator import report as rendering

    folder = rendering.load_run(args.run_dir)
    if folder.log.torn_tail_bytes:
        log.warning(
            "%s ends with %d bytes of a record cut short (a killed writer); left out",
            args.run_dir / "intervals.pb",
            folder.log.torn_tail_bytes,
        )
    summary, state = rendering.rerender(folder)
    path = rendering.write_summary(folder, summary)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
        print(f"summary rewritten in {path}")
    if args.html:
        from coordinator.html_report import write_html_report

        html = write_html_report(folder, summary, state)
        if not args.json:
            print(f"report in {html}")
    return exit_code({**summary, "interrupted": False})


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        args = build_parser().parse_args(argv)
        if args.command == "validate":
            return validate(args)
        if args.command == "report":
            return report(args)
        if args.command == "capacity":
            return capacity(args)
        return start(args)
    except RaysiegeError as error:
        print(f"coordinator: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("coordinator: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
