"""The long tail of a measured run's own wake-ups, added to the model's hand-offs in the
replay of that run (``sim check``).

Why: the host model's hand-offs are the profile's: a median per idle time for a thread woken
on an idle host, and a two-piece log-normal through the p10, median and p90 for a gate woken
while a worker is at work. ``hw profile`` measures them a hundred or two at a time on a quiet
host, and the server's wake-ups have a tail that those never show: at B = 1 and 500 req/s the
run's gate woken on an idle host waits 380-600 µs at its p99, the replay's 80-130, and a gate
woken while a worker is at work 270-550 µs at its p90, the replay's 130-160
(:mod:`traces.run_wakes`, ``benchmarks/README.md``, "Fidelity, session 26"). A request's p99
at B = 1 is made of such waits, so the replay fell short of the run's p99.

How: per kind of wake-up (:class:`traces.run_wakes.RunWakes`), the part of each of the run's
waits above the run's own :data:`EXCESS_QUANTILE` of them (zero below it) is a sample; every
wake-up of that kind in the replay adds one drawn from it to its modelled hand-off. The
model's median stays the profile's, the run's tail is added on top: the part of a wait the
profile's hand-off cannot know (the machine's scheduler that minute). A worker's wait is read
without the gates that ran meanwhile (the model plays those out itself).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl

from sim.service import ServiceTable
from sim.wake_tails import WakeTails
from traces.run_wakes import run_wakes

__all__ = ["EXCESS_QUANTILE", "MIN_WAKES", "run_wake_tails", "with_wake_tails"]

EXCESS_QUANTILE = 0.5  # a wait's excess over the run's own median of its kind
MIN_WAKES = 50  # fewer wake-ups of a kind in the run: no tail read for it


def _excess(waits: np.ndarray) -> tuple[float, ...]:
    """Each wait's part above the waits' :data:`EXCESS_QUANTILE` (none: too few waits)."""
    waits = waits[np.isfinite(waits) & (waits >= 0)]
    if len(waits) < MIN_WAKES:
        return ()
    return tuple(np.maximum(0.0, waits - np.quantile(waits, EXCESS_QUANTILE)).tolist())


def run_wake_tails(rows: pl.DataFrame) -> WakeTails | None:
    """The tails of one B's measured ``rows``' wake-ups (module docstring); None where no
    kind has :data:`MIN_WAKES` of them."""
    waits = run_wakes(rows)
    tails = WakeTails(*(_excess(w) for w in waits))
    if not any((tails.gate_idle, tails.gate_busy, tails.worker, tails.worker_after_gate)):
        return None
    return tails


def with_wake_tails(table: ServiceTable, tails: WakeTails | None) -> ServiceTable:
    """``table`` whose host model adds ``tails`` to its hand-offs (host terms only)."""
    if table.host is None:
        return table
    return replace(table, host=replace(table.host, wake_tails=tails))
