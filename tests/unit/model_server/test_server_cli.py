"""model_server/cli.py: flags are checked before anything heavy starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_server.cli import READY_FORMAT, build_parser, main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--max-batch", "0"], "max_batch must be >= 1"),
        (["serve", "--port", "70000"], "port must be 0..65535"),
        (["serve", "--grace", "-1"], "grace_s must be >= 0"),
        (["serve", "--mnist-npz", "/nonexistent/mnist.npz"], "no such file"),
        (["serve", "--port", "eighty"], "invalid int value"),
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


def test_serve_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.max_batch, args.cache_dir, args.mnist_npz) == (
        "127.0.0.1",
        8001,
        1024,
        None,
        None,
    )
    args = build_parser().parse_args(["serve", "--port", "0", "--cache-dir", "/tmp/c"])
    assert (args.port, args.cache_dir) == (0, Path("/tmp/c"))


def test_ready_line_format() -> None:
    assert READY_FORMAT.format(port=8001, accuracy=0.93712) == "READY port=8001 accuracy=0.9371"
