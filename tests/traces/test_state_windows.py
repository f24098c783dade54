"""Where the machine's state moved during a run, window by window
(``traces.state_windows.window_readings``): each window's log median about the run's,
with the noise of a median of that many calls."""

from __future__ import annotations

import numpy as np
import pytest

from traces.state_windows import MIN_READING, window_readings


def _calls(levels: list[float], per_window: int, spread: float, seed: int = 0) -> tuple:
    """``per_window`` calls per 0.1 s window, log-normal about each window's level."""
    rng = np.random.default_rng(seed)
    starts = np.concatenate(
        [i * 0.1 + np.sort(rng.uniform(0, 0.1, per_window)) for i in range(len(levels))]
    )
    walls = np.repeat(levels, per_window) * np.exp(spread * rng.standard_normal(len(starts)))
    return starts, walls


def test_the_readings_follow_the_levels_about_their_mean() -> None:
    """20 windows at a level, then 20 at twice it, 400 calls each: the readings are log 2
    apart, about 0, and each one's noise is that of a median of 400 calls of spread 0.3
    (π/2 · 0.09 / 400), as their own scatter about their level says too."""
    starts, walls = _calls([1e-3] * 20 + [2e-3] * 20, 400, 0.3)
    seen, noise = window_readings(starts, walls, 0.0, 0.1, 40)
    assert seen.mean() == pytest.approx(0.0, abs=1e-12)
    assert seen[20:].mean() - seen[:20].mean() == pytest.approx(np.log(2), abs=0.02)
    assert noise == pytest.approx(np.full(40, np.pi / 2 * 0.09 / 400), rel=0.3)
    scatter = np.concatenate([seen[:20] - seen[:20].mean(), seen[20:] - seen[20:].mean()])
    assert np.var(scatter) == pytest.approx(noise[0], rel=0.5)


def test_a_window_with_too_few_calls_reads_nothing() -> None:
    """A window with fewer than MIN_READING calls has no reading (nan) and one outside the
    calls infinite noise; calls outside the windows asked for are left out."""
    starts, walls = _calls([1e-3, 1e-3], 50, 0.2)
    starts = np.concatenate([starts, [0.25, 0.26][: MIN_READING - 1], [5.0]])
    walls = np.concatenate([walls, [9e-3, 9e-3][: MIN_READING - 1], [1.0]])
    seen, noise = window_readings(starts, walls, 0.0, 0.1, 4)
    assert np.isfinite(seen[:2]).all() and np.isnan(seen[2:]).all()
    assert np.isfinite(noise[:3]).all() and noise[3] == np.inf
    assert noise[2] > noise[0]  # fewer calls: a noisier median
    with pytest.raises(ValueError, match="window"):
        window_readings(starts, walls, 0.0, 0.0, 4)
