"""Importing the package, its protocol modules, data and server never imports TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT_MODULES = [
    "model_server",
    "model_server.api",
    "model_server.api.grpc_predict_v2_pb2",
    "model_server.api.grpc_predict_v2_pb2_grpc",
    "model_server.api.report_pb2",
    "model_server.data",
    "model_server.tensors",
    "model_server.recipe",
    "model_server.server",
    "model_server.service",
    "model_server.batching",
    "model_server.metrics",
    "model_server.workers",
    "model_server.cli",
]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_import_does_not_load_tensorflow(module: str) -> None:
    # A fresh interpreter: this test process may already hold TensorFlow.
    probe = (
        f"import sys, {module}\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "", f"importing {module} loaded {result.stdout.strip()}"
