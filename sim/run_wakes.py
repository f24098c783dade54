"""The long tail of a measured run's own wake-ups, added to the model's hand-offs in the
replay of that run (``sim check``: the gates' by default, ``--host-wakes gates``; the
workers' too with ``--host-wakes run``). Session 26 kept it off: on blocks 36-37 it raised
B = 1's p50 by up to 4 points and left block 37's p99 at 500 req/s 16 % short. Session 31
found the worker's wake then too long (the profile's hand-off; it is now read from the run
as a factor, ``sim.run_speed.run_handoff_factor``), which had hidden that the replay's gates
woke too fast in the tail; a tail on top of the worker's factor ran its way long at the
median, so the workers' stays off (``docs/system-model.md`` §8).

Why: the host model's hand-offs are the profile's: a median per idle time for a thread woken
on an idle host, and a two-piece log-normal through the p10, median and p90 for a gate woken
while a worker is at work. ``hw profile`` measures them a hundred or two at a time on a quiet
host, and the server's wake-ups have a tail that those never show: at B = 1 and 500 req/s the
run's gate woken on an idle host waits 380-600 µs at its p99, the replay's 80-130, and a gate
woken while a worker is at work 270-550 µs at its p90, the replay's 130-160
(:mod:`traces.run_wakes`, ``benchmarks/README.md``, "Fidelity, session 26"). A request's p99
at B = 1 is made of such waits (yet adding them did not bring block 37's p99 to the run's).

How: per kind of wake-up (:class:`traces.run_wakes.RunWakes`), the replay of the run as the
model stands (at the run's speed, without tails) is read the same way, and at each quantile u
of the upper half, the run's wait at u less the replay's, where positive, is one of
:data:`TAIL_POINTS` excesses (zero below the median); every wake-up of that kind in the replay
then adds one drawn from them to its modelled hand-off. A hand-off the model makes the same
every time (a thread woken on an idle host after a long wait) so takes the run's upper half
exactly; the body stays the profile's (its median is the run's within a few µs), and only the
part of the tail the model lacks is added: what the profile's hand-off cannot know (the
machine's scheduler that minute). A worker's wait is read without the gates that ran
meanwhile (the model plays those out itself). Added as excess over the run's own median
instead, the tail raised B = 1's p50 by 2-5 points on blocks 36-37 where the model's body
already spread; over its p90, it left the part between the p90s out.
"""

from __future__ import annotations

from dataclasses import astuple, replace

import numpy as np
import polars as pl

from sim.config import SimConfig
from sim.engine import simulate
from sim.output import records_of
from sim.service import ServiceTable
from sim.wake_tails import WakeTails
from sim.workload import Workload
from traces.run_wakes import run_wakes

__all__ = ["MIN_WAKES", "TAIL_POINTS", "run_wake_tails", "wake_tails", "with_wake_tails"]

MIN_WAKES = 50  # fewer wake-ups of a kind in the run or its replay: no tail for it
TAIL_POINTS = 400  # quantiles (k + 0.5) / TAIL_POINTS the excesses are taken at


def _excess(run: np.ndarray, replay: np.ndarray) -> tuple[float, ...]:
    """At each of :data:`TAIL_POINTS` quantiles, the run's wait less the replay's where
    positive, in the upper half (zero below the median); none with too few waits."""
    run, replay = (w[np.isfinite(w) & (w >= 0)] for w in (run, replay))
    if min(len(run), len(replay)) < MIN_WAKES:
        return ()
    u = (np.arange(TAIL_POINTS) + 0.5) / TAIL_POINTS
    gap = np.maximum(0.0, np.quantile(run, u) - np.quantile(replay, u))
    return tuple(np.where(u >= 0.5, gap, 0.0).tolist())


def wake_tails(run_rows: pl.DataFrame, replay_rows: pl.DataFrame) -> WakeTails | None:
    """The tails one B's measured ``run_rows`` have over its replay's ``replay_rows``, per
    kind of wake-up (module docstring); None where no kind has any."""
    tails = WakeTails(
        *(_excess(a, b) for a, b in zip(run_wakes(run_rows), run_wakes(replay_rows), strict=True))
    )
    return _any(tails)


def _any(tails: WakeTails) -> WakeTails | None:
    """``tails``, or None where no kind adds anything."""
    return tails if any(x > 0 for kind in astuple(tails) for x in kind) else None


def run_wake_tails(
    rows: pl.DataFrame,
    sim_cfg: SimConfig,
    table: ServiceTable,
    work: Workload,
    workers: bool = True,
) -> WakeTails | None:
    """:func:`wake_tails` of one B's measured ``rows`` over a replay of them (``sim_cfg``,
    ``table`` as the check has it, at the run's speed; ``work``: the run's arrivals and
    routing) with no tails; None without host terms. ``workers=False``: the gates' tails
    only (the worker's wake then comes from the run as a factor, ``sim.run_speed``)."""
    if table.host is None:
        return None
    bare = with_wake_tails(table, None)
    tails = wake_tails(rows, records_of(simulate(sim_cfg, bare, work)))
    if tails is None or workers:
        return tails
    return _any(replace(tails, worker=(), worker_after_gate=()))


def with_wake_tails(table: ServiceTable, tails: WakeTails | None) -> ServiceTable:
    """``table`` whose host model adds ``tails`` to its hand-offs (host terms only)."""
    if table.host is None:
        return table
    return replace(table, host=replace(table.host, wake_tails=tails))
