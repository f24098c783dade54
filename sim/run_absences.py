"""The spells a measured run's device workers sat out with a batch ready, read from the run's
own records, and the host model that replays them where they were.

Why: at B = 1 and 500 req/s the server's worker sits out bursts: the gate thread, going
straight on from one request to the next, keeps the interpreter lock from the waiting worker
until it next waits on its inbox (:mod:`traces.worker_absences`). The model's own worker
waits at most for the one gate going on, so its replays of block 40's runs 1 and 6 had 5-10
such gaps over 1 ms per 4 s run where the runs had 39 and 45, and the requests queued behind
them set B = 1's p99 (``benchmarks/README.md``, "Fidelity, session 28"). When the gate
thread lets go is not in any profile: it depends on the torch calls' timing against the
waiting thread's interval and the cores' scheduling of the moment, as the machine's stalls
do; a run's records hold its own.

How: each absence (device, start on the run's clock, span) is replayed as a spell in which
that device's worker starts no job (``HostTerms.absence_times``, :mod:`sim.host`): a job
under way at its start ends as the model has it, a batch ready meanwhile waits for its end,
and the gate runs on as it would. What this takes from the run is when its workers sat out
and for how long; the queues behind them and the latencies are the model's.

On by default since session 29 (``sim check --worker-absences run|off``). Alone, on blocks
36-40 it brought within the two B = 1 p99 cells at 500 req/s that were short (−16.6 → −4.6 %,
−18.5 → +0.6 %) and took three that were within past +10 % (``benchmarks/README.md``,
"Fidelity, session 28"): the replay then charged the worker catching up after an absence for
company the run's worker did not pay. With the run's own price of company
(:mod:`sim.run_contention`, also on by default) those three came back within
(``benchmarks/README.md``, "Fidelity, session 29").
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl

from sim.service import ServiceTable
from traces.worker_absences import Absences, worker_absences

__all__ = ["MIN_ABSENCE_BATCHES", "run_absences", "with_absences"]

MIN_ABSENCE_BATCHES = 100  # fewer batches in a B: its absences are not read


def run_absences(rows: pl.DataFrame) -> Absences | None:
    """The absences in one B's rows (warm-up included: the replay runs it too); None where
    the B has fewer than :data:`MIN_ABSENCE_BATCHES` batches."""
    if rows.height == 0 or rows["batch"].n_unique() < MIN_ABSENCE_BATCHES:
        return None
    return worker_absences(rows)


def with_absences(table: ServiceTable, absences: Absences) -> ServiceTable:
    """``table`` with its host model replaying ``absences`` (none: none at all)."""
    if table.host is None:
        return table
    times = tuple(
        (int(d), float(t), float(span))
        for d, t, span in zip(absences.devices, absences.starts_s, absences.spans_s, strict=True)
    )
    return replace(table, host=replace(table.host, absence_times=times))
