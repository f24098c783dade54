"""Batch service times: the latency profile turned once into lookup tables (system-model §4).

``ServiceTable.median[e, b]`` is expert e's median latency at batch size b,
interpolated between measured sizes by :meth:`traces.profile.LatencyProfile.table`;
the hot loop only indexes precomputed per-batch arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config import ServiceModel
from sim.errors import SimConfigError
from sim.host_terms import HostTerms
from traces.profile import LatencyProfile

__all__ = ["ServiceTable", "draw_service", "two_piece_lognormal", "two_piece_normal"]

# Standard normal quantile of 0.9: p90 = median + Z90 * sigma_hi for a normal upper half.
Z90 = 1.2815515655446004


@dataclass(frozen=True, eq=False)
class ServiceTable:
    """Dense ``[expert, batch size]`` latency tables; column 0 unused.

    ``host``: the shared-host terms of system-model §8 when the profile has them.
    """

    median: np.ndarray
    p10: np.ndarray | None = None
    p90: np.ndarray | None = None
    host: HostTerms | None = None

    @property
    def n_experts(self) -> int:
        return self.median.shape[0]

    @property
    def max_batch(self) -> int:
        return self.median.shape[1] - 1

    @classmethod
    def from_profile(cls, profile: LatencyProfile, n_experts: int, max_batch: int) -> ServiceTable:
        """Look every expert 0..M-1 up in ``profile`` (an expert missing there is an error)."""
        experts = range(n_experts)
        median = profile.table(experts, max_batch)
        p10 = p90 = None
        if profile.spread(0) is not None:
            p10 = np.full_like(median, np.nan)
            p90 = np.full_like(median, np.nan)
            b = np.arange(1, max_batch + 1, dtype=float)
            for e in experts:
                xs, lo, hi = profile.spread(e)  # type: ignore[misc]
                if np.isnan(lo).any() or np.isnan(hi).any():
                    p10 = p90 = None
                    break
                p10[e, 1:] = np.interp(b, xs, lo)
                p90[e, 1:] = np.interp(b, xs, hi)
        return cls(median, p10, p90, HostTerms.from_profile(profile, max_batch))

    @classmethod
    def constant(cls, latency_s: list[list[float]] | np.ndarray) -> ServiceTable:
        """Hand-written table ``latency_s[e][b-1]`` (tests and closed-form checks)."""
        arr = np.asarray(latency_s, dtype=float)
        out = np.full((arr.shape[0], arr.shape[1] + 1), np.nan)
        out[:, 1:] = arr
        return cls(out)


def draw_service(
    table: ServiceTable,
    expert: np.ndarray,
    size: np.ndarray,
    model: ServiceModel,
    rng: np.random.Generator,
) -> np.ndarray:
    """Service time of each batch (vectorized, one draw per batch)."""
    if len(size) and int(size.max()) > table.max_batch:
        raise SimConfigError(f"batch of {int(size.max())} exceeds the table's {table.max_batch}")
    med = table.median[expert, size]
    if model is ServiceModel.MEDIAN:
        return med
    if model is ServiceModel.EXPONENTIAL:
        return rng.exponential(med)
    if table.p10 is None or table.p90 is None:
        raise SimConfigError("service model 'spread' needs latency_p10_s/latency_p90_s columns")
    return two_piece_normal(rng, med, table.p10[expert, size], table.p90[expert, size])


def two_piece_normal(
    rng: np.random.Generator,
    median: np.ndarray | float,
    p10: np.ndarray | float,
    p90: np.ndarray | float,
) -> np.ndarray:
    """Draws with the given median, p10 and p90: a normal's halves scaled to hit each
    quantile (measured spreads are skewed), never below 10% of the median."""
    med = np.asarray(median, dtype=float)
    z = rng.standard_normal(med.shape)
    hi = (np.asarray(p90) - med) / Z90
    lo = (med - np.asarray(p10)) / Z90
    return np.maximum(med + z * np.where(z > 0, hi, lo), 0.1 * med)


def two_piece_lognormal(rng: np.random.Generator, p10: float, median: float, p90: float) -> float:
    """One draw with the given p10, median and p90, each half a lognormal's scaled to hit its
    quantile: the right tail of a wait that is sometimes far longer than usual (a woken
    thread left waiting on a busy core) reaches past p90 as a log scale does."""
    z = float(rng.standard_normal())
    ratio = p90 / median if z > 0 else median / p10
    return median * float(np.exp(z * np.log(ratio) / Z90))
