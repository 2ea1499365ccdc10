"""model_server/cli.py: flags are checked before anything heavy starts, and resolved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model_server.batching import BatchingOptions
from model_server.cli import (
    DEFAULT_METRICS_PORT,
    READY_FORMAT,
    _options,
    _worker_argv,
    build_parser,
    main,
    warmup_batches,
)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--max-request-batch", "0"], "max_request_batch must be >= 1"),
        (["serve", "--max-batch-size", "0"], "max_batch_size must be >= 1"),
        (["serve", "--batch-timeout-us", "-1"], "batch_timeout_s must be 0..10 s"),
        (["serve", "--batch-threads", "0"], "batch_threads must be >= 1"),
        (["serve", "--max-enqueued-batches", "0"], "max_enqueued_batches must be >= 1"),
        (["serve", "--workers", "0"], "workers must be >= 1"),
        (["serve", "--intra-op-threads", "-1"], "thread counts must be >= 0"),
        (["serve", "--port", "70000"], "port must be 0..65535"),
        (["serve", "--metrics-port", "70000"], "metrics_port must be 0..65535"),
        (["serve", "--grace", "-1"], "grace_s must be >= 0"),
        (["serve", "--mnist-npz", "/nonexistent/mnist.npz"], "no such file"),
        (["serve", "--port", "eighty"], "invalid int value"),
        (["serve", "--tls-cert", "/nonexistent/cert.pem"], "--tls-cert and --tls-key go together"),
        (["serve", "--tls-client-ca", "/nonexistent/ca.pem"], "--tls-client-ca needs --tls-cert"),
        (
            ["serve", "--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"],
            "--tls-cert /nonexistent/c.pem: cannot read",
        ),
        (["serve", "--auth-token-file", "/nonexistent/token"], "--auth-token-file"),
        ([], "required"),
    ],
)
def test_bad_flags_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def resolved(*argv: str):
    return _options(build_parser().parse_args(["serve", *argv]))


def test_serve_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.cache_dir, args.mnist_npz, args.workers) == (
        "127.0.0.1",
        8001,
        None,
        None,
        1,
    )
    options = resolved()
    assert options.batching == BatchingOptions()
    assert options.max_request_batch == 1024
    assert (options.metrics_host, options.metrics_port) == ("127.0.0.1", DEFAULT_METRICS_PORT)
    assert options.intra_op_threads == max(1, len(os.sched_getaffinity(0)) - 1)
    assert options.inter_op_threads == 1
    assert not options.reuse_port
    args = build_parser().parse_args(["serve", "--port", "0", "--cache-dir", "/tmp/c"])
    assert (args.port, args.cache_dir) == (0, Path("/tmp/c"))


def test_batching_flags_reach_the_options() -> None:
    options = resolved(
        "--max-batch-size",
        "64",
        "--batch-timeout-us",
        "500",
        "--batch-threads",
        "2",
        "--max-enqueued-batches",
        "3",
        "--no-batching",
    )
    assert options.batching == BatchingOptions(
        max_batch_size=64,
        batch_timeout_s=0.0005,
        batch_threads=2,
        max_enqueued_batches=3,
        enabled=False,
    )


@pytest.mark.parametrize(
    ("argv", "port"),
    [
        ([], DEFAULT_METRICS_PORT),
        (["--port", "0"], 0),  # an ephemeral server gets an ephemeral metrics port
        (["--port", "0", "--metrics-port", "9100"], 9100),
        (["--metrics-port", "0"], 0),
        (["--no-metrics"], None),
    ],
)
def test_metrics_port(argv: list[str], port: int | None) -> None:
    assert resolved(*argv).metrics_port == port


def test_tensorflow_threads_leave_a_core_to_grpc_and_are_shared_out_over_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for cores, workers, threads in [(2, 1, 1), (2, 2, 1), (9, 1, 8), (9, 2, 4), (9, 16, 1)]:
        monkeypatch.setattr(os, "sched_getaffinity", lambda _, n=cores: set(range(n)))
        assert resolved("--workers", str(workers)).intra_op_threads == threads
    assert resolved("--workers", "2", "--intra-op-threads", "0").intra_op_threads == 0


def test_workers_get_the_same_settings_and_no_metrics_endpoint_of_their_own() -> None:
    args = build_parser().parse_args(
        ["serve", "--workers", "3", "--max-batch-size", "32", "--no-batching", "--port", "0"]
    )
    argv = _worker_argv(args)
    worker = _options(build_parser().parse_args(["serve", *argv, "--worker-index", "1"]))
    parent = _options(args)
    assert worker.batching == parent.batching
    assert (worker.workers, worker.intra_op_threads) == (3, parent.intra_op_threads)
    assert worker.metrics_port is None and worker.reuse_port
    assert "--port" not in argv  # the parent adds the port it reserved


def test_warmup_covers_every_size_a_batch_can_take_up_to_64_then_powers_of_two() -> None:
    assert warmup_batches(4) == (1, 2, 3, 4)
    sizes = warmup_batches(300)
    assert sizes[:64] == tuple(range(1, 65))
    assert sizes[64:] == (128, 256, 300)


def test_ready_line_format() -> None:
    assert READY_FORMAT.format(port=8001, accuracy=0.93712) == "READY port=8001 accuracy=0.9371"


def test_security_files_reach_the_options_and_workers_get_paths_not_secrets(
    tmp_path: Path,
) -> None:
    from tests.support.certs import issue, make_ca

    ca, ca_key = make_ca()
    server = issue(ca, ca_key, "localhost", server=True)
    for name, data in {
        "cert.pem": server.cert_pem,
        "key.pem": server.key_pem,
        "ca.pem": ca.cert_pem,
    }.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "token").write_text("tok-123\n")
    flags = [
        "--tls-cert", str(tmp_path / "cert.pem"),
        "--tls-key", str(tmp_path / "key.pem"),
        "--tls-client-ca", str(tmp_path / "ca.pem"),
        "--auth-token-file", str(tmp_path / "token"),
    ]  # fmt: skip
    options = resolved(*flags)
    assert options.tls is not None and options.tls.client_ca_pem == ca.cert_pem
    assert options.auth_token == "tok-123"
    argv = _worker_argv(build_parser().parse_args(["serve", "--workers", "2", *flags]))
    assert "tok-123" not in " ".join(argv) and str(tmp_path / "token") in argv
    worker = _options(build_parser().parse_args(["serve", *argv, "--worker-index", "0"]))
    assert (worker.tls, worker.auth_token) == (options.tls, options.auth_token)
