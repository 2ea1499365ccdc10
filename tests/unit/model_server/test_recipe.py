"""model_server/recipe.py: what is trained, and a cache key that never reuses a wrong model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from model_server.data import load_sample
from model_server.recipe import (
    FULL_MNIST_RECIPE,
    SAMPLE_RECIPE,
    cache_key,
    default_cache_dir,
    plan_training,
)


def write_keras_npz(path: Path, *, flip_one_label: bool = False) -> Path:
    sample = load_sample()
    labels = sample.labels.copy()
    if flip_one_label:
        labels[0] = (labels[0] + 1) % 10
    np.savez(
        path,
        x_train=sample.images[:4000],
        y_train=labels[:4000],
        x_test=sample.images[4000:],
        y_test=labels[4000:],
    )
    return path


def test_default_plan_is_the_sample_split_4000_to_1000() -> None:
    plan = plan_training()
    assert (len(plan.split.train), len(plan.split.test)) == (4000, 1000)
    assert plan.recipe == SAMPLE_RECIPE
    assert plan.recipe.hidden_units == 512 and plan.recipe.optimizer == "rmsprop"


def test_key_is_stable_for_the_same_plan() -> None:
    assert cache_key(plan_training(), "2.21.0") == cache_key(plan_training(), "2.21.0")


def test_key_changes_with_data_source_recipe_and_framework(tmp_path: Path) -> None:
    sample = plan_training()
    full = plan_training(write_keras_npz(tmp_path / "a.npz"))
    other_full = plan_training(write_keras_npz(tmp_path / "b.npz", flip_one_label=True))
    more_epochs = dataclasses.replace(
        sample, recipe=dataclasses.replace(SAMPLE_RECIPE, epochs=SAMPLE_RECIPE.epochs + 1)
    )
    keys = {
        cache_key(sample, "2.21.0"),
        cache_key(full, "2.21.0"),
        cache_key(other_full, "2.21.0"),
        cache_key(more_epochs, "2.21.0"),
        cache_key(sample, "2.22.0"),
    }
    assert len(keys) == 5
    assert full.recipe == FULL_MNIST_RECIPE


def test_same_file_contents_at_another_path_share_a_key(tmp_path: Path) -> None:
    first = plan_training(write_keras_npz(tmp_path / "first.npz"))
    second = plan_training(write_keras_npz(tmp_path / "second.npz"))
    assert cache_key(first, "x") == cache_key(second, "x")


def test_a_file_that_is_not_keras_mnist_is_rejected(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", images=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="missing arrays"):
        plan_training(tmp_path / "bad.npz")


def test_cache_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYSIEGE_CACHE_DIR", "/srv/cache")
    assert default_cache_dir() == Path("/srv/cache")
    monkeypatch.delenv("RAYSIEGE_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "raysiege"
