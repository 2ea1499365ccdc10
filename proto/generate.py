"""Generate the Python modules for proto/ into model_server/api/ (or another folder).

`make proto` runs this; tests/unit/test_proto_fresh.py runs it into a temporary folder and
compares, so a change to a .proto that was not regenerated fails the suite. protoc's
Python plugin writes absolute imports (``import grpc_predict_v2_pb2``); they are rewritten
to package imports so the modules live inside ``model_server.api``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_DIR.parent / "model_server" / "api"
PACKAGE = "model_server.api"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every .proto here, write into out_dir, return the files written."""
    from grpc_tools import protoc  # only needed here, a test extra

    protos = sorted(PROTO_DIR.glob("*.proto"))
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {[p.name for p in protos]}")
    modules = {p.stem + "_pb2" for p in protos}
    for proto in protos:  # protoc writes an empty _grpc module for files with no service
        if not re.search(r"^service ", proto.read_text(), flags=re.M):
            (out_dir / f"{proto.stem}_pb2_grpc.py").unlink(missing_ok=True)
    written = []
    for path in sorted(out_dir.glob("*_pb2*.py*")):
        text = path.read_text()
        for mod in modules:
            text = re.sub(
                rf"^import {mod} as ", f"from {PACKAGE} import {mod} as ", text, flags=re.M
            )
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in generate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
