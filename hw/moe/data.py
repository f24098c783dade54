"""Data sets for delta-MoE: MNIST-1D generated offline, and Gaussian mixtures of known difficulty.

MNIST-1D is generated with the ``mnist1d`` package's ``make_dataset`` (never its
download path) and cached as ``.npz`` under a cache folder, keyed by a hash of
the generation arguments, because generating it takes seconds. The Gaussian
mixture gives every sample a difficulty level that is known by construction
(its noise scale), so "harder samples get more experts" can be checked directly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.moe.errors import MoEConfigError
from traces.atomic import atomic_path

__all__ = [
    "DEFAULT_CACHE_DIR",
    "Dataset",
    "gaussian_mixture",
    "mnist1d",
]

DEFAULT_CACHE_DIR = Path(".cache") / "mnist1d"


@dataclass(frozen=True)
class Dataset:
    """Train/test arrays; ``difficulty_test`` is an int level per test sample, or None."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    difficulty_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise MoEConfigError(f"data set {self.name}: features and labels differ in length")

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def mnist1d(
    num_samples: int = 5000,
    seed: int = 42,
    train_split: float = 0.8,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
) -> Dataset:
    """MNIST-1D with the published default arguments (5000 samples -> 4000 train, 1000 test).

    ``num_samples=40000`` gives the larger generated version. The package reseeds
    numpy's global generator; its state is restored afterwards.
    """
    if num_samples < 10:
        raise MoEConfigError(f"MNIST-1D needs at least 10 samples, got {num_samples}")
    if not 0.0 < train_split < 1.0:
        raise MoEConfigError(f"train split must be in (0, 1), got {train_split}")
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.update(num_samples=num_samples, seed=seed, train_split=train_split)
    args.pop("url", None)  # not a generation argument; keeps the download path out of reach
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    cached = None if cache_dir is None else Path(cache_dir) / f"mnist1d-{key}.npz"
    if cached is not None and cached.exists():
        with np.load(cached) as z:
            arrays = {k: z[k] for k in ("x", "y", "x_test", "y_test")}
    else:
        arrays = _generate_mnist1d(args)
        if cached is not None:
            with atomic_path(cached) as tmp, tmp.open("wb") as fh:
                np.savez(fh, **arrays)
    return Dataset(
        name=f"mnist1d-{num_samples}",
        x_train=arrays["x"].astype(np.float32),
        y_train=arrays["y"].astype(np.int64),
        x_test=arrays["x_test"].astype(np.float32),
        y_test=arrays["y_test"].astype(np.int64),
        n_classes=10,
    )


def _generate_mnist1d(args: dict) -> dict[str, np.ndarray]:
    import random

    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def gaussian_mixture(
    n_train: int = 4000,
    n_test: int = 2000,
    n_classes: int = 8,
    n_features: int = 16,
    noise_levels: tuple[float, ...] = (0.3, 0.6, 0.9, 1.2),
    seed: int = 0,
) -> Dataset:
    """Classes are unit-norm random means; a sample of level ``j`` adds N(0, noise_levels[j]^2 I).

    The level is drawn uniformly per sample and is the sample's difficulty by
    construction: a larger noise scale means more overlap with other classes.
    """
    if n_classes < 2 or n_features < 1 or n_train < 1 or n_test < 1:
        raise MoEConfigError("gaussian mixture needs >= 2 classes, >= 1 feature and samples")
    if not noise_levels or any(s <= 0 for s in noise_levels):
        raise MoEConfigError(f"noise levels must be positive, got {noise_levels}")
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((n_classes, n_features))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    scales = np.asarray(noise_levels, dtype=np.float64)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = rng.integers(0, n_classes, n)
        level = rng.integers(0, len(scales), n)
        x = means[y] + rng.standard_normal((n, n_features)) * scales[level, None]
        return x.astype(np.float32), y.astype(np.int64), level.astype(np.int64)

    x_tr, y_tr, _ = draw(n_train)
    x_te, y_te, lvl_te = draw(n_test)
    return Dataset(
        name=f"gmm-{n_classes}c-{n_features}d",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        n_classes=n_classes,
        difficulty_test=lvl_te,
    )
