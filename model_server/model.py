"""The MNIST model: trained on first start, loaded from the cache after, warmed, measured.

The only module in raysiege that imports TensorFlow. A freshly trained model is exported
as a SavedModel and loaded back, so a first start and a cached start serve through the
same code path: one restored `tf.function` with the input signature float32 [None, 784],
which never retraces across batch sizes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# TensorFlow reads this at import; keep its informational chatter out of the log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from model_server.data import Digits
from model_server.recipe import Recipe, TrainingPlan, cache_key
from model_server.tensors import CLASSES, PIXELS

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

MIN_ACCURACY = 0.90
ENDPOINT = "predict"
_SIGNATURE = [tf.TensorSpec([None, PIXELS], tf.float32, name="input")]


class ModelError(RuntimeError):
    """The model could not be built or is not good enough to serve."""


@dataclass(frozen=True)
class LoadedModel:
    """A ready model: `predict` maps float32 [N, 784] in 0..1 to probabilities [N, 10]."""

    predict: Callable[[np.ndarray], np.ndarray]
    accuracy: float
    holdout: int
    trained: bool
    path: Path


def load_or_train(
    plan: TrainingPlan, cache_dir: Path, *, warmup_batches: tuple[int, ...] = (1,)
) -> LoadedModel:
    """Load the plan's model from `cache_dir`, training and saving it first if absent."""
    path = Path(cache_dir) / cache_key(plan, tf.__version__)
    trained = False
    saved = _try_load(path)
    if saved is None:
        _train_and_save(plan, path)
        trained = True
        saved = tf.saved_model.load(str(path))
    predict = _Predictor(saved)
    _warm_up(predict, warmup_batches)
    accuracy = holdout_accuracy(predict, plan.split.test)
    log.info("holdout accuracy %.4f on %d held-back digits", accuracy, len(plan.split.test))
    if accuracy < MIN_ACCURACY:
        raise ModelError(
            f"holdout accuracy {accuracy:.4f} is below the required {MIN_ACCURACY:.2f}; "
            f"delete {path} or train on more data (--mnist-npz)"
        )
    return LoadedModel(predict, accuracy, len(plan.split.test), trained, path)


class _Predictor:
    """Calls the SavedModel's endpoint. It holds the loaded object, not only the function:
    the variables are freed with the object, and the function would then fail."""

    def __init__(self, saved: object) -> None:
        self._saved = saved
        self._endpoint = getattr(saved, ENDPOINT)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self._endpoint(pixels).numpy()


def holdout_accuracy(
    predict: Callable[[np.ndarray], np.ndarray], digits: Digits, chunk: int = 1024
) -> float:
    """Fraction of `digits` whose most probable class is their label."""
    pixels = digits.flat_fp32()
    predicted = np.concatenate(
        [predict(pixels[i : i + chunk]).argmax(axis=1) for i in range(0, len(pixels), chunk)]
    )
    return float((predicted == digits.labels).mean())


def build_model(recipe: Recipe) -> keras.Model:
    """The classic Keras MNIST MLP, compiled."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((PIXELS,), name="input"),
            keras.layers.Dense(recipe.hidden_units, activation="relu"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    model.compile(optimizer=recipe.optimizer, loss=recipe.loss, metrics=["accuracy"])
    return model


def _try_load(path: Path) -> object | None:
    if not (path / "saved_model.pb").exists():
        log.info("no cached model at %s: training one", path)
        return None
    started = time.perf_counter()
    try:
        saved = tf.saved_model.load(str(path))
        getattr(saved, ENDPOINT)
    except (OSError, ValueError, AttributeError, tf.errors.OpError) as error:
        log.warning("cached model at %s is unreadable (%s): training a new one", path, error)
        shutil.rmtree(path, ignore_errors=True)
        return None
    log.info("loaded cached model from %s in %.2f s", path, time.perf_counter() - started)
    return saved


def _train_and_save(plan: TrainingPlan, path: Path) -> None:
    import keras

    recipe = plan.recipe
    keras.utils.set_random_seed(recipe.seed)
    started = time.perf_counter()
    model = build_model(recipe)
    model.fit(
        plan.split.train.flat_fp32(),
        plan.split.train.labels,
        batch_size=recipe.batch_size,
        epochs=recipe.epochs,
        verbose=0,
    )
    trained_s = time.perf_counter() - started
    log.info(
        "trained model on %d digits from %s (%d epochs) in %.2f s",
        len(plan.split.train),
        plan.source,
        recipe.epochs,
        trained_s,
    )
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=ENDPOINT, fn=lambda pixels: model(pixels, training=False), input_signature=_SIGNATURE
    )
    # Write beside the destination and rename: a crash or a concurrent start never
    # leaves a half-written model under the final name.
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        archive.write_out(str(staging), verbose=False)
        staging.rename(path)
    except OSError:
        if not (path / "saved_model.pb").exists():
            raise
        log.info("another process saved %s first; using that one", path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("saved model to %s", path)


def _warm_up(predict: Callable[[np.ndarray], np.ndarray], batches: tuple[int, ...]) -> None:
    started = time.perf_counter()
    for batch in batches:
        predict(np.zeros((batch, PIXELS), dtype=np.float32))
    log.info(
        "warmed up at batch sizes %s in %.1f ms", batches, (time.perf_counter() - started) * 1e3
    )
