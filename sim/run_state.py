"""The machine's state during one B of a measured run, read from the run's own gates that
ran alone (:func:`traces.alone_gates.alone_gates`), and the host model with it.

Why: the state process (:mod:`sim.machine_state`: every step's wall time times a factor that
moves in spells of 0.1-1 s) builds the queue in front of the gate that makes B = 1's p99,
and ``hw profile`` measures it over 30 s of its own chains, a draw of the machine's mood in
the minute before or after the run. On blocks 22 and 23 (``benchmarks/README.md``,
"Fidelity, session 17") the runs' own alone gates spread σ_w 0.14-0.16 per 0.1 s window
within a run, while the profiles measured 0.04-0.13, and replays with the profile's state
showed half the runs' spread in their own alone gates; their B = 1 p99 was 4-18 % short.

How: the alone gates are the same measurement as the profile's (a gate woken after an idle
gap, timed in the server's threads), read by the same split-half estimate
(:func:`traces.state_windows.window_state`) over the same window lengths, within blocks of
the run's own length where it is shorter than the profile's 5 s (at 500 req/s a B of 2000
requests lasts 4 s; the run's speed, :mod:`sim.run_speed`, sets the level of the whole B),
and fitted by the same :func:`~sim.machine_state.fit_state`.

Where the moves were, too: the replay runs the run's own arrivals on its clock, so it can
run the state the run met rather than a draw of the same process (as it replays the run's
stalls where they were, :mod:`sim.run_stalls`). A drawn path of a run's (σ, ρ) is one
sample of where the slow spells fall; in block 37 (``--B 1`` at 500 req/s, run 6: σ 0.28,
ρ 0.94, its gates 530 µs in its first second and 330 µs in its last) four replays with drawn
paths read p99 5.1-10.6 ms against the run's 5.3 ms. The path is each 0.1 s window's median
alone gate about the run's (:func:`traces.state_windows.window_readings`), smoothed under
the fitted process (:func:`~sim.machine_state.smooth_state`: a window with few gates leans
on its neighbours, the warm-up, with none, on the process's mean) and scaled to mean 1, the
run's speed giving the level. What this takes from the run is how much its host's speed
moved within it, how long the moves lasted and when; the costs, the queueing, the
contention and the preemption are still the model's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from sim.machine_state import MachineState, StatePath, fit_state, smooth_state
from sim.service import ServiceTable
from traces.alone_gates import alone_gates
from traces.profile import STATE_BLOCK_S
from traces.state_windows import STATE_WINDOWS_S, window_readings, window_state

__all__ = ["MIN_STATE_WINDOWS", "RunState", "run_state", "with_state"]

MIN_STATE_WINDOWS = 10  # fewer shortest windows with enough alone gates: no state read


@dataclass(frozen=True)
class RunState:
    """The state read from a run: the fitted process (None: the run's gates show no state
    beyond their own noise), per window length the spread σ_w it was fitted to, and the
    path the state took during the run (None with no process)."""

    state: MachineState | None
    sigmas: dict[float, float]
    path: StatePath | None = None


def run_state(rows: pl.DataFrame) -> RunState | None:
    """The machine's state during the rows of one B (module docstring); None where the run
    has too few alone gates to read it (fewer than :data:`MIN_STATE_WINDOWS` windows of the
    shortest length with enough gates in them)."""
    starts, walls = alone_gates(rows)
    if len(starts) < 2:
        return None
    block = min(STATE_BLOCK_S, float(starts.max() - starts.min()))
    sigmas: dict[float, float] = {}
    for window in STATE_WINDOWS_S:
        if window > block / 2:  # at least two windows per block
            break
        got = window_state(starts, walls, window, block)
        if got is None:
            break
        if not sigmas and got[2] < MIN_STATE_WINDOWS:
            return None
        sigmas[window] = got[1]
    if not sigmas:
        return None
    fitted = fit_state(tuple(sigmas), tuple(sigmas.values()), block)
    path = None if fitted is None else state_path(rows, starts, walls, fitted)
    return RunState(fitted, sigmas, path)


def state_path(
    rows: pl.DataFrame, starts: np.ndarray, walls: np.ndarray, state: MachineState
) -> StatePath:
    """The path ``state`` took during the rows of one B, read from their alone gates
    (``starts``, ``walls``: :func:`traces.alone_gates.alone_gates` of the rows; module
    docstring): a factor per window of ``state.window_s`` from the first arrival (warm-up
    included, as the replay runs it) to the last completion, mean 1."""
    first = float(rows["arrival_s"].min())
    ends = rows["complete_s"].cast(pl.Float64).to_numpy()
    last = float(np.nanmax(ends)) if np.isfinite(ends).any() else first
    windows = max(1, int(np.ceil((last - first) / state.window_s)))
    seen, noise = window_readings(starts, walls, first, state.window_s, windows)
    factors = np.exp(smooth_state(state, seen, noise))
    return StatePath(first, state.window_s, tuple((factors / factors.mean()).tolist()))


def with_state(
    table: ServiceTable, state: MachineState | None, path: StatePath | None = None
) -> ServiceTable:
    """``table`` with its host model running ``state`` instead of the profile's: along
    ``path`` where given (the run's own), else drawn."""
    if table.host is None:
        return table
    return replace(table, host=replace(table.host, state=state, state_path=path))
