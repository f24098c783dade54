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
and fitted by the same :func:`~sim.machine_state.fit_state`. What this takes from the run is
how much its host's speed moved within it and how long the moves lasted; the costs, the
queueing, the contention and the preemption are still the model's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import polars as pl

from sim.machine_state import MachineState, fit_state
from sim.service import ServiceTable
from traces.alone_gates import alone_gates
from traces.profile import STATE_BLOCK_S
from traces.state_windows import STATE_WINDOWS_S, window_state

__all__ = ["MIN_STATE_WINDOWS", "RunState", "run_state", "with_state"]

MIN_STATE_WINDOWS = 10  # fewer shortest windows with enough alone gates: no state read


@dataclass(frozen=True)
class RunState:
    """The state read from a run: the fitted process (None: the run's gates show no state
    beyond their own noise) and, per window length, the spread σ_w it was fitted to."""

    state: MachineState | None
    sigmas: dict[float, float]


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
    return RunState(fitted, sigmas)


def with_state(table: ServiceTable, state: MachineState | None) -> ServiceTable:
    """``table`` with its host model running ``state`` instead of the profile's."""
    if table.host is None:
        return table
    return replace(table, host=replace(table.host, state=state))
