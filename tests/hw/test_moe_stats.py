"""Statistics against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hw.moe.stats import (
    coefficient_of_variation,
    linear_fit,
    mean_ci,
    pareto_front,
    spearman,
    window_loads,
)


def test_mean_ci_closed_form_for_three_values() -> None:
    iv = mean_ci([1.0, 2.0, 3.0])
    # s = 1, n = 3, t_{0.975, 2} = 4.302652729...
    half = 4.302652729911275 / math.sqrt(3)
    assert (
        iv.mean == 2.0 and iv.low == pytest.approx(2 - half) and iv.high == pytest.approx(2 + half)
    )
    assert math.isnan(mean_ci([1.0]).low) and mean_ci([]).n == 0


def test_coefficient_of_variation() -> None:
    assert coefficient_of_variation([5, 5, 5]) == 0.0
    assert coefficient_of_variation([0, 2]) == pytest.approx(1.0)


def test_window_loads_counts_per_window() -> None:
    experts = np.array([[0, 1], [0, -1], [2, -1], [1, 2]])
    rates = window_loads(experts, 3, window=2)
    assert rates.tolist() == [[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]]
    assert window_loads(experts, 3, window=3).shape == (1, 3)  # partial window dropped


def test_pareto_front() -> None:
    cost, value = [1, 2, 3, 2.5], [0.5, 0.7, 0.69, 0.8]
    assert pareto_front(cost, value) == [0, 1, 3]


def test_spearman_and_fit() -> None:
    assert spearman([1, 2, 3], [10, 20, 35]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    slope, intercept, r2 = linear_fit([1, 2, 3], [2, 4, 6])
    assert (slope, intercept, r2) == pytest.approx((2.0, 0.0, 1.0))


def test_correlation_interval_stays_inside_minus_one_one() -> None:
    from hw.moe.stats import correlation_ci

    iv = correlation_ci([-0.9, 0.2, -0.8])  # a plain t interval here spans beyond [-1, 1]
    assert -1 < iv.low < iv.mean < iv.high < 1
    same = correlation_ci([0.5, 0.5, 0.5])
    assert same.mean == pytest.approx(0.5) and same.low == pytest.approx(0.5)
