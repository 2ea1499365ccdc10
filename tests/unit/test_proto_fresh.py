"""model_server/api/ holds exactly what proto/generate.py makes from proto/ today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "model_server" / "api"


def _generate_into(out_dir: Path) -> list[Path]:
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate(out_dir)


def test_generated_modules_match_the_committed_ones(tmp_path: Path) -> None:
    written = _generate_into(tmp_path)

    fresh = {path.name for path in tmp_path.iterdir()}
    committed = {path.name for path in COMMITTED.glob("*_pb2*.py*")}
    assert {path.name for path in written} == fresh
    assert fresh, "generate() wrote nothing"
    assert fresh == committed, (
        f"missing from model_server/api: {sorted(fresh - committed)}; "
        f"not generated any more: {sorted(committed - fresh)}; run `make proto`"
    )
    stale = [
        name
        for name in sorted(fresh)
        if (tmp_path / name).read_text() != (COMMITTED / name).read_text()
    ]
    assert not stale, f"stale generated files {stale}: run `make proto`"
