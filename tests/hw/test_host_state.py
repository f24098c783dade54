"""The machine's state as hw profile measures it (``hw.profiling.host_state``): the split-half
spread of window medians within 5 s blocks against a known process under heavy per-call
noise, and the round trip through sim's fit (``sim.machine_state``)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hw.profiling.host_state import state_rows, state_samples, window_state
from hw.timing import TimingError
from sim.machine_state import fit_state
from traces.profile import STATE_BLOCK_S, Z90


def _samples(
    seconds: float, sigma: float, rho: float, noise: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Calls every ~3 ms whose log time is an AR(1) state per 0.1 s cell (sigma, rho) plus
    independent per-call noise (log sd ``noise``), around 100 µs."""
    rng = np.random.default_rng(seed)
    starts = np.cumsum(rng.exponential(3e-3, int(seconds / 3e-3)))
    starts = starts[starts < seconds]
    cells = int(seconds / 0.1) + 1
    z = np.empty(cells)
    z[0] = rng.standard_normal()
    for i in range(1, cells):
        z[i] = rho * z[i - 1] + np.sqrt(1 - rho * rho) * rng.standard_normal()
    log_t = np.log(1e-4) + sigma * z[(starts // 0.1).astype(int)]
    return starts, np.exp(log_t + noise * rng.standard_normal(len(starts)))


def test_the_split_halves_remove_the_medians_noise() -> None:
    """With per-call noise four times the state's spread, the window medians' plain spread
    is far above the state's; the covariance of the two halves' medians is the state's
    alone (within 5 s blocks: of a process this quick, nearly all of it)."""
    starts, gates = _samples(60.0, sigma=0.15, rho=0.5, noise=0.6)
    got = window_state(starts, gates, 0.1)
    assert got is not None
    median, sigma, windows = got
    assert windows > 500
    assert median == pytest.approx(1e-4, rel=0.1)
    assert sigma == pytest.approx(0.15, rel=0.15)
    index = (starts // 0.1).astype(int)
    plain = np.std([np.log(np.median(gates[index == i])) for i in np.unique(index)])
    assert plain > 1.3 * 0.15  # what the noise would have added


def test_moves_slower_than_a_block_are_left_to_the_speed_probe() -> None:
    """A level that changes only between 5 s blocks (×1.5 up and down) is no state within
    them; measured over one endless block it would be."""
    starts, gates = _samples(60.0, sigma=0.0, rho=0.0, noise=0.2)
    gates = gates * np.where((starts // 5.0) % 2 == 0, 1.0, 1.5)
    got = window_state(starts, gates, 0.25)
    assert got is not None and got[1] < 0.03
    whole = window_state(starts, gates, 0.25, block_s=60.0)
    assert whole is not None and whole[1] > 0.15


def test_no_state_is_measured_as_none() -> None:
    starts, gates = _samples(30.0, sigma=0.0, rho=0.0, noise=0.3)
    got = window_state(starts, gates, 0.1)
    assert got is not None and got[1] < 0.03  # noise alone: (nearly) no state left
    assert window_state(starts[:200], gates[:200], 0.1) is None  # no whole 5 s block
    assert window_state(np.array([]), np.array([]), 0.1) is None
    with pytest.raises(TimingError, match="window"):
        window_state(starts, gates, 0.0)
    with pytest.raises(TimingError, match="block"):
        window_state(starts, gates, 6.0)


def test_rows_round_trip_through_the_fit() -> None:
    """hw's rows (p10 / p90 = median exp(∓Z90 σ_w)) read back by sim's fit give the process
    that made the samples: its spread per 0.1 s and how long its spells last."""
    starts, gates = _samples(120.0, sigma=0.2, rho=0.7, noise=0.4, seed=3)
    rows = state_rows(starts, gates)
    assert sorted(rows) == [0.1, 0.25, 0.5, 1.0]
    for st in rows.values():
        assert st.p10_s <= st.median_s <= st.p90_s
    spreads = tuple(float(np.log(st.p90_s / st.p10_s) / (2 * Z90)) for st in rows.values())
    assert list(spreads) == sorted(spreads, reverse=True)  # longer windows average spells out
    fitted = fit_state(tuple(rows), spreads, STATE_BLOCK_S)
    assert fitted is not None
    assert fitted.sigma == pytest.approx(0.2, rel=0.2)
    assert fitted.rho == pytest.approx(0.7, abs=0.15)
    assert state_rows(starts[starts < 4.0], gates[starts < 4.0]) == {}  # under one block
    short = state_rows(starts[starts < 0.45], gates[starts < 0.45], block_s=0.2)
    assert sorted(short) == [0.1]  # a length needs two windows in a block


def test_state_samples_time_calls_after_idle_gaps() -> None:
    calls: list[float] = []

    def chain() -> tuple[float, float]:
        now = time.perf_counter()
        calls.append(now)
        return now, 1e-4

    t0 = time.perf_counter()
    starts, gates = state_samples(chain, 0.2, 2e-3, seed=1)
    assert time.perf_counter() - t0 >= 0.2
    assert len(starts) == len(calls) >= 5 and np.all(gates == 1e-4)
    assert np.all(np.diff(starts) > 0)
    assert np.mean(np.diff(starts)) > 1e-3  # sleeps of 2 ms on average (never shorter)
    back_to_back, _ = state_samples(chain, 0.05, 0.0, seed=1)
    assert len(back_to_back) > len(starts)
