"""The machine's state process of the host model, fitted to what ``hw profile`` measured.

The host model multiplies every step's wall time by a factor exp(σ·z − σ²/2) (mean 1)
held for a window of w0 seconds, z an AR(1) over windows with lag-one correlation ρ
(``sim.host``, ``SimConfig.state_sigma``). ``hw profile`` measures the state's spread σ_w
over windows of several lengths w within blocks of T seconds, about each block's own
level (``state_window`` rows, ``hw.profiling.host_state``): a spread that falls slowly
with w means spells that last. :func:`fit_state` finds the (σ, ρ) at w0 = the shortest
window whose process has that spread over windows of every measured length within such
blocks (σ_w² = σ²·(g(w / w0) − g(T / w0)), g the :func:`average_variance_ratio`; least
squares in log σ_w), so that the model's spells last as long as the machine's. What moves
slower than a block, the per-B speed probe gives ``sim check`` (``sim.host_speed``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["MachineState", "average_variance_ratio", "fit_state", "state_factors"]

_OFFSETS = 16  # placements of a window on the process's grid, averaged
_RHOS = np.linspace(0.0, 0.98, 99)  # the fit's grid of lag-one correlations


@dataclass(frozen=True)
class MachineState:
    """The state process: spread ``sigma`` (log) per window of ``window_s``, lag-one ``rho``."""

    sigma: float
    rho: float
    window_s: float


def average_variance_ratio(m: float, rho: float) -> float:
    """Var of the time average of the process's log factor over a window m·w0 long, placed
    uniformly at random on its grid of w0-long steps, over Var of one step: towards 1 as
    rho goes to 1; for rho = 0 the window's overlaps squared, 2/3 at m = 1 (it straddles
    two steps) and (m − 1/3)/m² for integer m >= 1."""
    if not m > 0:
        raise ValueError(f"window ratio must be > 0, got {m}")
    cells = int(np.ceil(m)) + 1
    edges = np.arange(cells + 1, dtype=float)
    lag = np.abs(np.subtract.outer(np.arange(cells), np.arange(cells)))
    corr = rho**lag
    total = 0.0
    for u in (np.arange(_OFFSETS) + 0.5) / _OFFSETS:
        weight = np.clip(np.minimum(u + m, edges[1:]) - np.maximum(u, edges[:-1]), 0.0, None)
        weight /= m
        total += float(weight @ corr @ weight)
    return total / _OFFSETS


@lru_cache(maxsize=64)
def fit_state(
    windows_s: tuple[float, ...], sigmas: tuple[float, ...], block_s: float | None = None
) -> MachineState | None:
    """(σ, ρ) at the shortest window whose process spreads as measured over every window
    length within blocks of ``block_s`` (None: unbounded; module docstring); None where
    the shortest window shows no spread. Windows with no spread left after the noise
    (σ_w = 0) are left out of the fit; with one window left, ρ = 0 (nothing says how long
    the spells last)."""
    if len(windows_s) != len(sigmas) or not windows_s:
        raise ValueError("one spread per window length")
    order = np.argsort(windows_s)
    w = np.asarray(windows_s, dtype=float)[order]
    s = np.asarray(sigmas, dtype=float)[order]
    if block_s is not None and not block_s > w[-1]:
        raise ValueError(f"the block ({block_s} s) must be longer than every window")
    if not s[0] > 0:
        return None
    keep = s > 0
    w, s = w[keep], s[keep]
    w0 = float(w[0])

    def within(m: float, rho: float) -> float:
        """The within-block part of a window's variance, over one step's."""
        whole = average_variance_ratio(m, rho)
        return whole if block_s is None else whole - average_variance_ratio(block_s / w0, rho)

    if len(w) == 1:
        return MachineState(float(s[0] / np.sqrt(within(1.0, 0.0))), 0.0, w0)
    ratio = w / w0
    best: tuple[float, float, float] | None = None
    for rho in _RHOS:
        g = np.array([within(m, float(rho)) for m in ratio])
        if not (g > 0).all():
            continue
        half_log_g = 0.5 * np.log(g)
        log_sigma = float(np.mean(np.log(s) - half_log_g))
        err = float(np.sum((np.log(s) - log_sigma - half_log_g) ** 2))
        if best is None or err < best[0]:
            best = (err, float(np.exp(log_sigma)), float(rho))
    if best is None:
        return None
    return MachineState(best[1], best[2], w0)


def state_factors(
    state: MachineState, rng: np.random.Generator, block_s: float | None = None
) -> Iterator[float]:
    """The factor on every step's wall time for each ``state.window_s`` step, forever: the
    AR(1) exp(σ·z), in blocks of ``block_s`` (None: one endless block) each scaled to mean
    1 over its steps, so that a block moves about its own level as hw profile measured
    it, and the level is what the run's speed gives (sim.host_speed); without blocks each
    step's factor is exp(σ·z − σ²/2), mean 1 over time."""
    sigma, rho = state.sigma, state.rho
    step = np.sqrt(1.0 - rho * rho)
    z = float(rng.standard_normal())
    if block_s is None:
        while True:
            yield float(np.exp(sigma * z - sigma * sigma / 2))
            z = rho * z + step * float(rng.standard_normal())
    cells = max(1, round(block_s / state.window_s))
    while True:
        path = np.empty(cells)
        for i in range(cells):
            path[i] = z
            z = rho * z + step * float(rng.standard_normal())
        factors = np.exp(sigma * (path - path.mean()))
        yield from (factors / factors.mean()).tolist()
