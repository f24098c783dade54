"""The machine's state over time: how much slower or faster every step runs for a while,
measured by ``hw profile`` as ``state_window`` rows for the simulator's state process
(``docs/system-model.md`` §8, ``sim.machine_state``).

Why: on this 2-core VM the same step's time drifts in spells of ~0.1–1 s (the
hypervisor, the other tenants, the clock). Drawn independently per step, the step
times of a B = 1 run reproduce its medians but leave its p99 13–27 % low, all of it in
the queue before the gate: a queue builds only behind slow steps that come together
(``benchmarks/README.md``, "Fidelity, session 13"). The speed probe gives one speed per
B; this gives how the speed moves within a run.

How: the server's two-thread chain (:func:`hw.profiling.host._server_chain`) after
exponential idle gaps of mean :data:`STATE_GAP_S` (the speed probe's, a duty like the
server's at B = 1) for ``seconds``; each chain's gate time is one sample of the state
at its start. Per window length w in :data:`STATE_WINDOWS_S` the samples fall into
consecutive windows; each window's state is its log median gate. The spread of those
medians over windows mixes the state's spread with the medians' own sampling noise,
so each window's samples are split in two interleaved halves (even and odd positions):
the halves share the state but not the noise, and the covariance of their log medians
over windows is the state's variance alone (a split-half estimate; 0 when negative).
The row per w: ``latency_s`` the median over windows of the window medians, ``latency_p10_s``
/ ``latency_p90_s`` that median times exp(∓1.2816 σ_w) (the state's p10 and p90 over
windows of that length, log-normal), ``samples`` the windows used. How σ_w falls with
w tells how long the spells last (``sim.machine_state.fit_state``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from hw.profiling.speed_probe import PROBE_GAP_S
from hw.timing import LatencyStats, TimingError
from traces.profile import Z90

__all__ = [
    "STATE_GAP_S",
    "STATE_S",
    "STATE_WINDOWS_S",
    "state_rows",
    "state_samples",
    "window_state",
]

STATE_GAP_S = PROBE_GAP_S  # mean idle gap before each chain
STATE_S = 30.0  # seconds of chains: ~300 windows of 0.1 s, 30 of 1 s
STATE_WINDOWS_S = (0.1, 0.25, 0.5, 1.0)  # window lengths of the rows
MIN_HALF = 3  # samples per half a window needs to count


def state_samples(
    chain: Callable[[], tuple[float, float]], seconds: float, mean_gap_s: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(start, gate seconds) of each ``chain()`` call made after exponential idle gaps of mean
    ``mean_gap_s`` for ``seconds``; ``chain`` returns its gate's start and wall time."""
    rng = np.random.default_rng(seed)
    starts: list[float] = []
    gates: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if mean_gap_s > 0:
            time.sleep(float(rng.exponential(mean_gap_s)))
        start, gate_s = chain()
        starts.append(start)
        gates.append(gate_s)
    return np.asarray(starts), np.asarray(gates)


def window_state(
    starts: np.ndarray, gates_s: np.ndarray, window_s: float
) -> tuple[float, float, int] | None:
    """(median over windows of the window's median gate, the state's σ in log over windows
    of ``window_s`` with the medians' sampling noise removed, windows used); None with
    fewer than 3 windows of at least 2·:data:`MIN_HALF` samples (module docstring)."""
    if not window_s > 0:
        raise TimingError(f"machine state: window must be > 0 s, got {window_s}")
    if len(starts) == 0:
        return None
    index = ((starts - starts[0]) // window_s).astype(np.int64)
    log_gate = np.log(np.maximum(gates_s, 1e-9))
    order = np.argsort(starts, kind="stable")
    index, log_gate = index[order], log_gate[order]
    cuts = np.flatnonzero(np.diff(index)) + 1
    whole, even, odd = [], [], []
    for part in np.split(log_gate, cuts):
        if len(part) >= 2 * MIN_HALF:
            whole.append(np.median(part))
            even.append(np.median(part[0::2]))
            odd.append(np.median(part[1::2]))
    if len(whole) < 3:
        return None
    cov = float(np.cov(even, odd)[0, 1])
    return float(np.exp(np.median(whole))), float(np.sqrt(max(cov, 0.0))), len(whole)


def state_rows(
    starts: np.ndarray, gates_s: np.ndarray, windows_s: tuple[float, ...] = STATE_WINDOWS_S
) -> dict[float, LatencyStats]:
    """One row per window length the samples cover (module docstring): the window medians'
    median and the state's p10 / p90 over windows of that length."""
    rows: dict[float, LatencyStats] = {}
    for w in windows_s:
        got = window_state(starts, gates_s, w)
        if got is None:
            continue
        median, sigma, n = got
        lo, hi = median * float(np.exp(-Z90 * sigma)), median * float(np.exp(Z90 * sigma))
        rows[w] = LatencyStats(median, lo, hi, median, n)
    return rows
