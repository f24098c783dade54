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

__all__ = [
    "MachineState",
    "StatePath",
    "average_variance_ratio",
    "fit_state",
    "smooth_state",
    "state_factors",
]

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


@dataclass(frozen=True)
class StatePath:
    """The state's factor on every step's wall time, window after window, from ``start_s``
    on a run's clock (each ``window_s`` long; 1 before the first and after the last)."""

    start_s: float
    window_s: float
    factors: tuple[float, ...]

    def at(self, times_s: np.ndarray) -> np.ndarray:
        """The factor at each of ``times_s``."""
        times = np.asarray(times_s, dtype=float)
        index = np.floor((times - self.start_s) / self.window_s)
        inside = (index >= 0) & (index < len(self.factors))
        got = np.ones(times.shape)
        if self.factors:
            got[inside] = np.asarray(self.factors)[index[inside].astype(np.int64)]
        return got


def smooth_state(state: MachineState, seen: np.ndarray, noise_var: np.ndarray) -> np.ndarray:
    """The state's log factor in each window, given what was seen of it: ``seen[i]`` the
    log deviation read in window i (nan: nothing read there) with sampling noise of variance
    ``noise_var[i]``. The posterior mean under the state's own AR(1) (a Kalman filter and
    Rauch-Tung-Striebel smoother): where a window's reading is noisy or missing, its
    neighbours' readings speak for it as far as ``state.rho`` says the state lasts, and
    what nothing reads falls back to the process's mean, 0."""
    seen = np.asarray(seen, dtype=float)
    noise_var = np.asarray(noise_var, dtype=float)
    if seen.shape != noise_var.shape or seen.ndim != 1:
        raise ValueError("machine state: one noise variance per window")
    n = len(seen)
    prior = state.sigma**2
    rho = state.rho
    ahead_mean, ahead_var = np.zeros(n), np.zeros(n)  # before window i's reading
    mean, var = np.zeros(n), np.zeros(n)  # after it
    m, v = 0.0, prior
    for i in range(n):
        if i:
            m, v = rho * mean[i - 1], rho * rho * var[i - 1] + (1 - rho * rho) * prior
        ahead_mean[i], ahead_var[i] = m, v
        if np.isfinite(seen[i]) and v > 0:
            gain = v / (v + max(noise_var[i], 0.0))
            m, v = m + gain * (seen[i] - m), (1 - gain) * v
        mean[i], var[i] = m, v
    smooth = mean.copy()
    for i in range(n - 2, -1, -1):
        if ahead_var[i + 1] > 0:
            smooth[i] = mean[i] + var[i] * rho / ahead_var[i + 1] * (
                smooth[i + 1] - ahead_mean[i + 1]
            )
    return smooth
