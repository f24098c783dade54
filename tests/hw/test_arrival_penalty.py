"""The load generator's per-arrival penalty (hw.profiling.arrival_penalty): the estimator
recovers a known cost from progress stamps, and on the server's real loops it reads a
known cost added to each arrival."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from hw.profiling import arrival_penalty
from hw.profiling.arrival_penalty import (
    Windows,
    arrival_penalties,
    company_penalties,
    lost_per_arrival,
)
from hw.profiling.errors import ProfilingError
from hw.profiling.model import ServedModel, model_from_spec

SPEC = {"n_experts": 4, "d_model": 8, "expert_hidden": 8, "k": 2, "seed": 0}
STEP_S = 1e-4  # one loop iteration of the synthetic loops


def _loop(
    windows: Windows,
    arrivals: np.ndarray,
    cost_s: float,
    spans: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Progress stamps of a loop that runs inside ``spans`` at STEP_S (±20 % per iteration),
    each arrival during it taking ``cost_s`` of its time."""
    stamps: list[float] = []
    pending = list(arrivals)
    for lo, hi in spans.tolist():
        t = lo
        while t < hi:
            stamps.append(t)
            t += STEP_S * rng.uniform(0.8, 1.2)
            while pending and pending[0] < lo:
                pending.pop(0)  # outside the loop's spans: costs it nothing
            while pending and pending[0] <= t:
                pending.pop(0)
                t += cost_s
    return np.asarray(stamps)


def _case(cost_s: float, seed: int, gaps: bool) -> float:
    rng = np.random.default_rng(seed)
    windows = Windows(0.0, 0.005, rng.random(2000) < 0.5)
    arrivals = windows.arrivals(rng, 1000.0)
    end = 2000 * 0.005
    if gaps:  # rounds of 7 ms with 1 ms between them (the server's reset)
        starts = np.arange(0.0, end, 0.008)
        spans = np.stack([starts, np.minimum(starts + 0.007, end)], axis=1)
    else:
        spans = np.array([[0.0, end]])
    stamps = _loop(windows, arrivals, cost_s, spans, rng)
    return lost_per_arrival(stamps, arrivals, spans, windows)


@pytest.mark.parametrize("gaps", [False, True])
def test_a_known_cost_per_arrival_is_recovered(gaps: bool) -> None:
    """40 µs per arrival (5 % of the on windows' time at 1000 req/s) read back within 4 µs,
    with the loop running all the time or in rounds with gaps the arrivals there don't cost."""
    for seed in range(3):
        assert _case(4e-5, seed, gaps) == pytest.approx(4e-5, abs=4e-6)


def test_no_cost_reads_zero_not_a_floor() -> None:
    """Arrivals that cost nothing read ~0 (either sign): the estimate is not floored, and the
    iterations' own noise does not read as penalty."""
    got = [_case(0.0, seed, gaps=True) for seed in range(3)]
    assert all(abs(g) < 4e-6 for g in got)


def test_windows_hold_poisson_arrivals_only_when_on() -> None:
    rng = np.random.default_rng(0)
    windows = Windows(1.0, 0.005, rng.random(4000) < 0.5)
    at = windows.arrivals(rng, 1000.0)
    assert np.all(windows.on[windows.index(at)])
    assert np.all(np.diff(at) > 0)
    assert len(at) / (windows.on.sum() * 0.005) == pytest.approx(1000.0, rel=0.05)


def test_nothing_to_read_is_nan() -> None:
    windows = Windows(0.0, 0.005, np.array([True, False, True, False]))
    spans = np.array([[0.0, 0.02]])
    stamps = np.arange(0.0, 0.02, STEP_S)
    assert np.isnan(lost_per_arrival(stamps, np.zeros(0), spans, windows))  # no arrival
    at = np.array([0.001, 0.011])
    assert np.isnan(lost_per_arrival(stamps[stamps < 0.005], at, spans, windows))  # no off rate


def test_a_short_run_is_one_sample_and_too_short_a_clear_error() -> None:
    served = _served()
    got = arrival_penalties(served, seconds=0.2, seed=0)  # 40 windows: one stretch
    assert all(len(v) == 1 and np.isfinite(v[0]) for v in got.values())
    with pytest.raises(ProfilingError, match="time it longer"):
        arrival_penalties(served, seconds=0.004, seed=0)  # one window: on or off, not both


def test_the_penalties_in_company_come_from_the_servers_own_run() -> None:
    """Both loops at work in ``QueuedServer.run`` on a backlog: a row per loop it could read,
    each a finite sample per stretch (their size is a timing, checked in the benchmarks)."""
    got = company_penalties(_served(), seconds=0.5, seed=0)
    assert got and set(got) <= {"arrival_penalty_gate_company", "arrival_penalty_worker_company"}
    assert all(1 <= len(v) <= 4 and np.all(np.isfinite(v)) for v in got.values())


def _served() -> ServedModel:
    return ServedModel(model_from_spec(SPEC), [torch.device("cpu")], dtype=torch.float32)


def test_the_real_loops_read_a_cost_added_to_each_arrival(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the server's own gate and worker loops: each arrival made to hold the interpreter
    lock 0.4 ms longer (a busy wait in the generator's thread) reads about 0.4 ms more per
    arrival for both loops; without it, a penalty far below that."""
    served = _served()
    base = arrival_penalties(served, seconds=1.2, seed=0)
    assert set(base) == {"arrival_penalty_gate", "arrival_penalty_worker"}
    # a stretch whose off windows all fell between the loop's rounds reads nothing (dropped)
    assert all(len(v) >= 8 and np.all(np.isfinite(v)) for v in base.values())
    real = arrival_penalty._arrive

    def slow_arrive(inbox: object, i: int) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 4e-4:
            pass
        real(inbox, i)  # type: ignore[arg-type]

    monkeypatch.setattr(arrival_penalty, "_arrive", slow_arrive)
    slowed = arrival_penalties(served, seconds=1.2, seed=0)
    for name in base:
        rise = np.median(slowed[name]) - np.median(base[name])
        # ~0.4 ms on a quiet box; a box busy with other work hides part of it (the loop
        # would have waited for a core anyway): 0.17 ms with two other processes on 2 cores
        assert 1.2e-4 < rise < 8e-4, (name, rise)
