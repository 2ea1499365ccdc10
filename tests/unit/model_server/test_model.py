"""model_server/model.py: one concrete function serves every batch size (no retracing),
and TensorFlow's thread pools are the ones asked for.

TensorFlow runs in a child interpreter (this process stays free of it) on the session's
model cache, so the model is trained at most once per test session.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(240)

SCRIPT = """
import json, sys
import numpy as np
from model_server import model
from model_server.recipe import default_cache_dir, plan_training
import tensorflow as tf

model.configure_threads(1, 1)
loaded = model.load_or_train(plan_training(), default_cache_dir(), warmup_batches=(1, 8))
sizes = [1, 3, 8, 257, 1024, 2]
answers = [loaded.predict(np.full((n, 784), 0.5, np.float32)) for n in sizes]
print(json.dumps({
    "shapes": [list(a.shape) for a in answers],
    "sums": [float(np.abs(a.sum(axis=1) - 1).max()) for a in answers],
    "same_row": float(np.abs(answers[3][0] - answers[4][0]).max()),
    "traced": loaded.predict.tracing_count(),
    "intra": tf.config.threading.get_intra_op_parallelism_threads(),
    "inter": tf.config.threading.get_inter_op_parallelism_threads(),
}))
"""


def test_every_batch_size_goes_through_one_concrete_function(model_cache: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=230
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shapes"] == [[1, 10], [3, 10], [8, 10], [257, 10], [1024, 10], [2, 10]]
    assert max(report["sums"]) < 1e-5  # probabilities
    assert report["same_row"] < 1e-6  # a row's answer does not depend on its batch
    assert report["traced"] == 1
    assert (report["intra"], report["inter"]) == (1, 1)
