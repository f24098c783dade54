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
at its start. The samples fall into blocks of :data:`~traces.profile.STATE_BLOCK_S`
(5 s): what moves slower than a block, ``hw serve``'s speed probe around each B already
gives ``sim check``, so only the state's moves within a block count. Per window length w
in :data:`STATE_WINDOWS_S`, the state's spread σ_w within a block is the split-half
estimate of :mod:`traces.state_windows` (the calls' own noise removed), which ``sim
check`` also reads a run's alone gates with. The row per w: ``latency_s`` the median of
the window medians, ``latency_p10_s`` / ``latency_p90_s`` that median times
exp(∓1.2816 σ_w) (the state's p10 and p90 over windows of that length within a block,
log-normal), ``samples`` the windows used. How σ_w falls with w tells how long the
spells last (``sim.machine_state.fit_state``).

The same chains show the machine's stalls, spells of a few ms in which every call runs
several times slower (:mod:`traces.stalls`), which window medians do not see:
:func:`stall_rows` gives the ``stall_*`` rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from hw.profiling.speed_probe import PROBE_GAP_S
from hw.timing import LatencyStats, TimingError
from traces.profile import STALL_GATE, STALL_SPAN, STALL_WATCH, STATE_BLOCK_S, Z90
from traces.stalls import find_stalls
from traces.state_windows import STATE_WINDOWS_S
from traces.state_windows import window_state as shared_window_state

__all__ = [
    "STATE_GAP_S",
    "STATE_S",
    "STATE_WINDOWS_S",
    "stall_rows",
    "state_rows",
    "state_samples",
    "window_state",
]

STATE_GAP_S = PROBE_GAP_S  # mean idle gap before each chain
# seconds of chains: twelve blocks, ~600 windows of 0.1 s, 60 of 1 s; and the stalls' watch
# (a 30 s watch found 0, 12 and 25 episodes within an hour: the machine's mood moves)
STATE_S = 60.0


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
    starts: np.ndarray,
    gates_s: np.ndarray,
    window_s: float,
    block_s: float = STATE_BLOCK_S,
) -> tuple[float, float, int] | None:
    """(median of the window medians, the state's σ in log over windows of ``window_s``
    within whole blocks of ``block_s``, the medians' sampling noise removed, windows used);
    None without two windows of at least 2·MIN_HALF samples in some whole block
    (:func:`traces.state_windows.window_state`, the estimate ``sim check`` also reads a
    run's alone gates with)."""
    try:
        return shared_window_state(starts, gates_s, window_s, block_s)
    except ValueError as e:
        raise TimingError(str(e)) from None


def state_rows(
    starts: np.ndarray,
    gates_s: np.ndarray,
    windows_s: tuple[float, ...] = STATE_WINDOWS_S,
    block_s: float = STATE_BLOCK_S,
) -> dict[float, LatencyStats]:
    """One row per window length the samples cover (module docstring): the window medians'
    median and the state's p10 / p90 over windows of that length within a block."""
    rows: dict[float, LatencyStats] = {}
    for w in windows_s:
        if w > block_s:  # no window longer than a block
            continue
        got = window_state(starts, gates_s, w, block_s)
        if got is None:
            continue
        median, sigma, n = got
        lo, hi = median * float(np.exp(-Z90 * sigma)), median * float(np.exp(Z90 * sigma))
        rows[w] = LatencyStats(median, lo, hi, median, n)
    return rows


def stall_rows(
    starts: np.ndarray, gates_s: np.ndarray, block_s: float = STATE_BLOCK_S
) -> list[tuple[str, float | None, LatencyStats]]:
    """(component, idle_s, stats) of the ``stall_*`` rows (``traces.profile``) from the
    state's chains: the watch (its gates, ``idle_s`` the seconds watched), and where any
    episode was found its spans and the watched median gate times its factors."""
    if len(starts) == 0:
        return []
    got = find_stalls(starts, gates_s, block_s)
    rows: list[tuple[str, float | None, LatencyStats]] = [
        (STALL_WATCH, got.watched_s, LatencyStats.from_samples(gates_s))
    ]
    if len(got.spans_s):
        rows.append((STALL_SPAN, None, LatencyStats.from_samples(got.spans_s)))
        rows.append((STALL_GATE, None, LatencyStats.from_samples(got.factors * got.median_s)))
    return rows
