"""Small statistics for the MoE experiments: t confidence intervals, load balance, windows.

Kept apart from the experiment runner so each formula is tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = [
    "Interval",
    "coefficient_of_variation",
    "correlation_ci",
    "linear_fit",
    "mean_ci",
    "pareto_front",
    "spearman",
    "window_loads",
]


@dataclass(frozen=True)
class Interval:
    """Mean with a two-sided Student-t confidence interval (nan bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """``mean ± t_{(1+c)/2, n-1} * s / sqrt(n)`` over independent runs (e.g. seeds)."""
    a = np.asarray(values, dtype=np.float64)
    n = len(a)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(a.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(sps.t.ppf((1 + confidence) / 2, n - 1) * a.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def correlation_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean correlation over runs with a t interval on Fisher's z = atanh(r), mapped back.

    A plain t interval on correlations can leave [-1, 1]; on the z scale it cannot.
    The reported mean is tanh of the mean z.
    """
    r = np.clip(np.asarray(values, dtype=np.float64), -0.999999, 0.999999)
    z = mean_ci(np.arctanh(r), confidence)
    if z.n == 0:
        return z
    back = (math.tanh(x) if not math.isnan(x) else math.nan for x in (z.mean, z.low, z.high))
    mean, low, high = back
    return Interval(mean, low, high, z.n)


def coefficient_of_variation(counts: Sequence[float] | np.ndarray) -> float:
    """Population standard deviation over mean; 0 is perfectly even load."""
    a = np.asarray(counts, dtype=np.float64)
    m = a.mean() if len(a) else 0.0
    return float(a.std() / m) if m > 0 else math.nan


def window_loads(experts: np.ndarray, n_experts: int, window: int) -> np.ndarray:
    """Samples per second routed to each expert in consecutive windows of ``window`` arrivals.

    ``experts`` is ``[N, S]`` with ``-1`` on unused slots, rows in arrival order
    at one arrival per second; returns ``[n_windows, n_experts]`` (a final
    partial window is dropped so every window has the same length).
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    n_windows = len(experts) // window
    out = np.zeros((n_windows, n_experts))
    for w in range(n_windows):
        chunk = experts[w * window : (w + 1) * window]
        out[w] = np.bincount(chunk[chunk >= 0], minlength=n_experts)[:n_experts] / window
    return out


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (nan when either side is constant)."""
    a, b = np.asarray(a), np.asarray(b)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(sps.spearmanr(a, b).statistic)


def linear_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares ``y = slope * x + intercept``; returns (slope, intercept, r^2)."""
    res = sps.linregress(np.asarray(x, float), np.asarray(y, float))
    return float(res.slope), float(res.intercept), float(res.rvalue**2)


def pareto_front(cost: Sequence[float], value: Sequence[float]) -> list[int]:
    """Indices of points no other point beats (lower-or-equal cost and higher-or-equal value,
    one strictly), sorted by cost."""
    c, v = np.asarray(cost, float), np.asarray(value, float)
    keep = []
    for i in range(len(c)):
        dominated = np.any((c <= c[i]) & (v >= v[i]) & ((c < c[i]) | (v > v[i])))
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: (c[i], -v[i]))
