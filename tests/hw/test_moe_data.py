"""Data: MNIST-1D generated offline and cached; mixture difficulty is real by construction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hw.moe.data import gaussian_mixture, mnist1d
from hw.moe.errors import MoEConfigError


def test_mnist1d_generated_cached_and_rng_untouched(tmp_path) -> None:
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    d = mnist1d(num_samples=200, cache_dir=tmp_path)
    assert np.array_equal(np.random.get_state()[1], before)
    assert d.x_train.shape == (160, 40) and d.x_test.shape == (40, 40)
    assert set(np.unique(d.y_train)) <= set(range(10))
    files = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(files) == 1
    again = mnist1d(num_samples=200, cache_dir=tmp_path)  # from the cache
    assert np.array_equal(again.x_train, d.x_train)
    fresh = mnist1d(num_samples=200, cache_dir=None)  # regenerated: same args, same data
    assert np.array_equal(fresh.x_test, d.x_test)
    other = mnist1d(num_samples=200, seed=7, cache_dir=tmp_path)
    assert not np.array_equal(other.x_train, d.x_train)
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 2


def test_mixture_difficulty_levels_are_harder() -> None:
    d = gaussian_mixture(n_train=100, n_test=8000, n_classes=6, n_features=8, seed=0)
    assert d.difficulty_test is not None
    # the nearest class mean (estimated from plenty of low-noise data) errs more on harder levels
    means = np.stack([d.x_train[d.y_train == c].mean(0) for c in range(6)])
    pred = np.argmin(((d.x_test[:, None, :] - means[None]) ** 2).sum(2), axis=1)
    acc = [(pred == d.y_test)[d.difficulty_test == lvl].mean() for lvl in range(4)]
    assert all(a > b for a, b in itertools.pairwise(acc))


def test_mixture_is_seeded() -> None:
    a, b = gaussian_mixture(seed=5), gaussian_mixture(seed=5)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(
        a.difficulty_test, b.difficulty_test
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: mnist1d(num_samples=5, cache_dir=None),
        lambda: mnist1d(train_split=1.0, cache_dir=None),
        lambda: gaussian_mixture(noise_levels=(0.1, -1.0)),
        lambda: gaussian_mixture(n_classes=1),
    ],
)
def test_bad_data_arguments(call) -> None:
    with pytest.raises(MoEConfigError):
        call()
