"""The state process fitted to hw profile's ``state_window`` rows (``sim.machine_state``):
the variance of its window averages against a simulated process, and the fit's inversion."""

from __future__ import annotations

import numpy as np
import pytest

from sim.machine_state import (
    MachineState,
    StatePath,
    average_variance_ratio,
    fit_state,
    smooth_state,
    state_factors,
)

WINDOWS = (0.1, 0.25, 0.5, 1.0)


def _ar1(n: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    z = np.empty(n)
    z[0] = rng.standard_normal()
    noise = np.sqrt(1 - rho * rho) * rng.standard_normal(n)
    for i in range(1, n):
        z[i] = rho * z[i - 1] + noise[i]
    return z


@pytest.mark.parametrize("rho", [0.0, 0.6, 0.9])
@pytest.mark.parametrize("m", [1.0, 2.5, 5.0])
def test_the_window_variance_matches_a_simulated_process(rho: float, m: float) -> None:
    """Averages of a piecewise-constant AR(1) over windows m steps long, placed at random:
    their variance over the steps' is the ratio, within the simulation's error."""
    rng = np.random.default_rng(7)
    z = _ar1(200_000, rho, rng)
    area = np.concatenate([[0.0], np.cumsum(z)])  # the integral at whole steps

    def integral(t: np.ndarray) -> np.ndarray:
        whole = np.floor(t).astype(np.int64)
        return area[whole] + (t - whole) * z[np.minimum(whole, len(z) - 1)]

    starts = rng.uniform(0, len(z) - m - 1, 40_000)
    averages = (integral(starts + m) - integral(starts)) / m
    assert np.var(averages) / np.var(z) == pytest.approx(average_variance_ratio(m, rho), rel=0.06)


def test_the_ratio_has_its_closed_forms() -> None:
    for m in (1, 2, 3, 6):  # independent steps: each window's overlaps squared
        assert average_variance_ratio(m, 0.0) == pytest.approx((m - 1 / 3) / m**2, rel=2e-3)
    assert average_variance_ratio(4.0, 0.999) == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError):
        average_variance_ratio(0.0, 0.5)


@pytest.mark.parametrize(("sigma", "rho"), [(0.2, 0.7), (0.1, 0.0), (0.35, 0.9)])
@pytest.mark.parametrize("block_s", [None, 5.0])
def test_the_fit_inverts_the_window_spreads(
    sigma: float, rho: float, block_s: float | None
) -> None:
    """Spreads made from a process (within blocks: less the block's own variance) give
    that process back."""
    cut = 0.0 if block_s is None else average_variance_ratio(block_s / 0.1, rho)
    spreads = tuple(sigma * np.sqrt(average_variance_ratio(w / 0.1, rho) - cut) for w in WINDOWS)
    got = fit_state(WINDOWS, spreads, block_s)
    assert got is not None and got.window_s == 0.1
    assert got.sigma == pytest.approx(sigma, rel=0.02)
    assert got.rho == pytest.approx(rho, abs=0.011)


def test_state_factors_move_about_each_blocks_level() -> None:
    """The factors per step: mean exactly 1 over each block (the level is the run's
    speed), the log spread and lag-one correlation within a block the process's; without
    blocks, mean 1 over time and the process's own spread."""
    state = MachineState(0.3, 0.8, 0.01)
    rng = np.random.default_rng(5)
    gen = state_factors(state, rng, block_s=5.0)
    blocks = np.array([[next(gen) for _ in range(500)] for _ in range(60)])
    np.testing.assert_allclose(blocks.mean(axis=1), 1.0)
    logs = np.log(blocks)
    inner = logs - logs.mean(axis=1, keepdims=True)
    assert np.sqrt(np.mean(inner**2)) == pytest.approx(0.3, rel=0.08)
    lag = np.mean(inner[:, :-1] * inner[:, 1:]) / np.mean(inner**2)
    assert lag == pytest.approx(0.8, abs=0.05)
    free = state_factors(state, np.random.default_rng(5))
    steps = np.array([next(free) for _ in range(30_000)])
    assert np.std(np.log(steps)) == pytest.approx(0.3, rel=0.08)
    assert steps.mean() == pytest.approx(1.0, abs=0.03)


def test_the_fit_of_what_this_machine_showed() -> None:
    """Session 13's spreads (0.196 / 0.149 / 0.135 / 0.117 over 0.1 / 0.25 / 0.5 / 1 s, the
    medians' noise not removed) fall more slowly than independent windows would: spells."""
    got = fit_state(WINDOWS, (0.196, 0.149, 0.135, 0.117))
    assert got is not None and 0.4 < got.rho < 0.8 and 0.17 < got.sigma < 0.25


def test_the_fit_without_spread() -> None:
    assert fit_state(WINDOWS, (0.0, 0.1, 0.1, 0.1)) is None  # the shortest shows none
    # longer windows whose spread the noise removal zeroed are left out; one left: rho 0,
    # and the steps' sigma such that a window as long as one step (straddling two) has it
    alone = fit_state(WINDOWS, (0.2, 0.0, 0.0, 0.0))
    assert alone == MachineState(pytest.approx(0.2 / np.sqrt(2 / 3), rel=1e-3), 0.0, 0.1)
    with pytest.raises(ValueError, match="block"):
        fit_state(WINDOWS, (0.2, 0.1, 0.1, 0.1), 1.0)
    # the windows in any order
    assert fit_state((1.0, 0.1), (0.1, 0.2)) == fit_state((0.1, 1.0), (0.2, 0.1))
    with pytest.raises(ValueError):
        fit_state(WINDOWS, (0.1,))


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.94])
def test_the_smoothed_path_is_the_gaussian_posterior_mean(rho: float) -> None:
    """Against brute force: for a prior N(0, σ² ρ^|i-j|) over 12 windows, readings in some
    of them with their own noise, the posterior mean Σ Hᵀ (H Σ Hᵀ + R)⁻¹ y."""
    rng = np.random.default_rng(5)
    state = MachineState(0.2, rho, 0.1)
    n = 12
    seen = 0.2 * rng.standard_normal(n)
    seen[[0, 4, 5, 11]] = np.nan  # nothing read there
    noise = rng.uniform(0.001, 0.05, n)
    lag = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    prior = state.sigma**2 * rho**lag
    read = np.isfinite(seen)
    gain = prior[:, read] @ np.linalg.inv(prior[np.ix_(read, read)] + np.diag(noise[read]))
    assert smooth_state(state, seen, noise) == pytest.approx(gain @ seen[read], abs=1e-12)


def test_the_smoothed_path_leans_on_the_readings_as_their_noise_allows() -> None:
    """Exact readings are kept; readings lost in noise, or none, leave the mean, 0."""
    state = MachineState(0.3, 0.5, 0.1)
    seen = np.array([0.2, -0.1, 0.4])
    assert smooth_state(state, seen, np.zeros(3)) == pytest.approx(seen)
    assert smooth_state(state, seen, np.full(3, 1e12)) == pytest.approx(np.zeros(3), abs=1e-9)
    assert smooth_state(state, np.full(3, np.nan), np.ones(3)) == pytest.approx(np.zeros(3))
    with pytest.raises(ValueError, match="one noise variance per window"):
        smooth_state(state, seen, np.ones(2))


def test_a_state_path_gives_each_moment_its_windows_factor() -> None:
    path = StatePath(1.0, 0.1, (2.0, 0.5, 1.5))
    times = np.array([0.5, 1.0, 1.05, 1.1, 1.29, 1.3, 9.0])
    assert path.at(times) == pytest.approx([1.0, 2.0, 2.0, 0.5, 1.5, 1.0, 1.0])
    assert StatePath(0.0, 0.1, ()).at(times) == pytest.approx(np.ones(7))
