"""The MNIST model: trained on first start, loaded from the cache after, warmed, measured.

The only module in raysiege that imports TensorFlow. A freshly trained model is exported
as a SavedModel and loaded back, so a first start and a cached start serve through the
same code path: one restored `tf.function` with the input signature float32 [None, 784],
called through its single concrete function, so it never retraces across batch sizes
(and skips the tf.function dispatch, half the cost of a small batch here). Training is
done under a file lock, so workers started together train once and the others load it.
`configure_threads` sets TensorFlow's thread pools; call it before anything else here.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
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


def configure_threads(intra_op: int, inter_op: int) -> None:
    """TensorFlow's thread pools (0: TensorFlow's default, one thread per core).

    Must run before TensorFlow executes anything: the pools are fixed at first use.
    """
    tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    log.info(
        "TensorFlow threads: intra-op %s, inter-op %s",
        intra_op or "default",
        inter_op or "default",
    )


def load_or_train(
    plan: TrainingPlan, cache_dir: Path, *, warmup_batches: tuple[int, ...] = (1,)
) -> LoadedModel:
    """Load the plan's model from `cache_dir`, training and saving it first if absent."""
    path = Path(cache_dir) / cache_key(plan, tf.__version__)
    trained = False
    saved = _try_load(path)
    if saved is None:
        with _training_lock(path):
            saved = _try_load(path)  # another process may have trained it meanwhile
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
    """Calls the SavedModel endpoint's one concrete function. It holds the loaded object,
    not only the function: the variables are freed with the object, and the function
    would then fail."""

    def __init__(self, saved: object) -> None:
        self._saved = saved
        self._function = getattr(saved, ENDPOINT).get_concrete_function(*_SIGNATURE)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self._function(tf.convert_to_tensor(pixels, tf.float32)).numpy()

    def tracing_count(self) -> int:
        """Concrete functions of the endpoint: stays 1 whatever the batch sizes served."""
        return len(getattr(self._saved, ENDPOINT)._list_all_concrete_functions())


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


@contextlib.contextmanager
def _training_lock(path: Path) -> Iterator[None]:
    """Held while one process trains `path`; the others wait, then load what it saved."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
        "warmed up at %d batch sizes from %d to %d in %.1f ms",
        len(batches),
        min(batches),
        max(batches),
        (time.perf_counter() - started) * 1e3,
    )
