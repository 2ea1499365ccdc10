"""`coordinator`: the command line. Only `main()` turns errors into exit codes.

Exit codes: 0 the run completed; 1 it completed but agents were lost (or another run
failure); 2 usage or plan error, nothing started; 3 the target or the cluster could not be
used; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from coordinator.errors import PlanError, RaysiegeError
from coordinator.plan import Plan, parse_duration, parse_target
from coordinator.progress import make_progress
from coordinator.run import Run, RunOptions
from coordinator.summary import format_summary

log = logging.getLogger("coordinator")


class _Parser(argparse.ArgumentParser):
    """argparse that raises PlanError (exit 2, one line) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise PlanError("arguments", message)


def _positive_int(field: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise PlanError(field, f"{text!r} is not a whole number") from None
        if value < 1:
            raise PlanError(field, f"must be >= 1, got {value}")
        return value

    return parse


def _positive_float(field: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise PlanError(field, f"{text!r} is not a number") from None
        if not value > 0 or value == float("inf"):
            raise PlanError(field, f"must be a positive number, got {text}")
        return value

    return parse


def _port(field: str):
    def parse(text: str) -> int:
        if not text.isdigit() or not 0 <= int(text) < 65536:
            raise PlanError(field, f"{text!r} is not a port number (0-65535; 0 picks a free one)")
        return int(text)

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="coordinator",
        description="raysiege: distributed load tests for gRPC inference servers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    start = commands.add_parser("start", help="run a load test")
    start.add_argument(
        "--target",
        type=lambda t: parse_target(t, "target"),
        help="HOST:PORT of an Open Inference Protocol gRPC server "
        "(default: start the bundled MNIST model server on a free loopback port)",
    )
    start.add_argument("--model", default="mnist", help="model name (default mnist)")
    start.add_argument(
        "--agents", type=_positive_int("agents"), default=1, help="number of agents (Ray actors)"
    )
    load = start.add_mutually_exclusive_group()
    load.add_argument(
        "--rate", type=_positive_float("rate"), help="open loop: the fleet's total requests/s"
    )
    load.add_argument(
        "--concurrency",
        type=_positive_int("concurrency"),
        help="closed loop: requests in flight per agent",
    )
    start.add_argument(
        "--duration", default="30s", help="how long to send, e.g. 30s, 2m (default 30s)"
    )
    start.add_argument(
        "--requests",
        type=_positive_int("requests"),
        help="stop after this many requests (fleet total)",
    )
    start.add_argument(
        "--batch-size", type=_positive_int("batch_size"), default=1, help="digits per request"
    )
    start.add_argument("--timeout", default="10s", help="per-request deadline (default 10s)")
    start.add_argument("--out", type=Path, help="results folder (default results/<run-id>)")
    start.add_argument(
        "--metrics-port",
        type=_port("metrics_port"),
        default=9464,
        help="/metrics port on 127.0.0.1 (default 9464; 0 picks a free one)",
    )
    start.add_argument(
        "--metrics-host", default="127.0.0.1", help="/metrics bind address (default 127.0.0.1)"
    )
    start.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    start.add_argument(
        "--linger", default="0s", help="keep /metrics up this long after the run (default 0s)"
    )
    start.add_argument("--address", help="an existing Ray cluster (default: an embedded local Ray)")
    start.add_argument(
        "--agent-cpus",
        type=_positive_float("agent_cpus"),
        default=1.0,
        help="CPUs reserved per agent in its placement-group bundle (default 1)",
    )
    start.add_argument(
        "--connect-timeout",
        default="30s",
        help="how long to wait for the target to be ready (default 30s)",
    )
    start.add_argument("--run-id", help="the run's id (default: time and a random suffix)")
    start.add_argument(
        "--json", action="store_true", help="print summary.json instead of the short summary"
    )
    return parser


def plan_from_args(args: argparse.Namespace) -> Plan:
    rate, concurrency = args.rate, args.concurrency
    if rate is None and concurrency is None:
        rate = 100.0
    duration = (
        None if args.duration in ("", "0", "none") else parse_duration(args.duration, "duration")
    )
    return Plan(
        agents=args.agents,
        rate=rate,
        concurrency=concurrency,
        duration_s=duration,
        max_requests=args.requests,
        target=args.target,
        model_name=args.model,
        batch_size=args.batch_size,
        timeout_s=parse_duration(args.timeout, "timeout"),
    ).validate()


def start(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    options = RunOptions(
        out_dir=args.out,
        metrics_port=None if args.no_metrics else args.metrics_port,
        metrics_host=args.metrics_host,
        address=args.address,
        agent_cpus=args.agent_cpus,
        linger_s=0.0 if args.linger in ("0", "0s") else parse_duration(args.linger, "linger"),
        run_id=args.run_id,
        target_timeout_s=parse_duration(args.connect_timeout, "connect_timeout"),
    )
    run = Run(plan, options, progress=make_progress(sys.stderr))
    result = asyncio.run(run.execute())
    if args.json:
        print(json.dumps(result.summary, indent=2))
    else:
        print(format_summary(result.summary))
        print(f"results in {result.out_dir}/")
    if result.agents_lost:
        log.error("%d agent(s) lost during the run", result.agents_lost)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        args = build_parser().parse_args(argv)
        if args.command == "start":
            return start(args)
        raise PlanError("command", f"unknown command {args.command!r}")
    except RaysiegeError as error:
        print(f"coordinator: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("coordinator: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
