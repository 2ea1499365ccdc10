"""What the model is trained on and how, and the cache key that names the result.

No TensorFlow here: the plan is plain data, so the key can be tested cheaply. The key
covers everything that changes the trained weights (the data file's bytes, the split, the
recipe, the TensorFlow version), so a different source or recipe never reuses a wrong
model from the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from model_server.data import SAMPLE_PATH, Split, load_keras_npz, load_sample, split_sample

HOLDOUT = 1000
SPLIT_SEED = 0


@dataclass(frozen=True)
class Recipe:
    """The classic Keras MNIST MLP: Dense(512, relu) -> Dense(10, softmax)."""

    epochs: int
    hidden_units: int = 512
    batch_size: int = 128
    optimizer: str = "rmsprop"
    loss: str = "sparse_categorical_crossentropy"
    seed: int = 0
    # Bump when the training code changes what a recipe produces.
    revision: int = 1


# 4,000 digits need more passes than 60,000 to pass 90% on the held-back ones; both
# train in seconds on two cores.
SAMPLE_RECIPE = Recipe(epochs=15)
FULL_MNIST_RECIPE = Recipe(epochs=3)


@dataclass(frozen=True)
class TrainingPlan:
    """The digits to train and measure on, where they came from, and the recipe."""

    source: str
    split: Split
    fingerprint: str
    recipe: Recipe


def plan_training(mnist_npz: str | Path | None = None) -> TrainingPlan:
    """The shipped sample (4,000 train / 1,000 held back), or a full Keras mnist.npz."""
    if mnist_npz is None:
        split = split_sample(load_sample(), holdout=HOLDOUT, seed=SPLIT_SEED)
        fingerprint = f"sample:{_sha256(SAMPLE_PATH)}:holdout={HOLDOUT}:seed={SPLIT_SEED}"
        return TrainingPlan("the shipped MNIST sample", split, fingerprint, SAMPLE_RECIPE)
    path = Path(mnist_npz)
    split = load_keras_npz(path)
    return TrainingPlan(f"{path}", split, f"keras-npz:{_sha256(path)}", FULL_MNIST_RECIPE)


def cache_key(plan: TrainingPlan, framework_version: str) -> str:
    """A short stable name for the model this plan trains with this framework version."""
    identity = {
        "data": plan.fingerprint,
        "recipe": dataclasses.asdict(plan.recipe),
        "framework": framework_version,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"mnist-mlp-{digest[:16]}"


def default_cache_dir() -> Path:
    """$RAYSIEGE_CACHE_DIR, else ~/.cache/raysiege."""
    configured = os.environ.get("RAYSIEGE_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "raysiege"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
