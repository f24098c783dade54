"""The wake-ups of one B's ``serve-records/1`` rows: how long each thread the run woke took to
run, read the same way from a measured run and from its replay.

Why: on this machine a woken thread's wait has a long tail that ``hw profile``'s hand-off
rows do not show (a hundred or two wake-ups per level, on a quiet host: p10, median, p90). In
the server at B = 1 and 500 req/s the gate woken on an idle host starts within 27-34 µs of
its arrival at the median as profiled, but its p99 is 380-600 µs, against the replay's
80-130; woken while a worker is at work its p90 is 270-550 µs, the replay's 130-160; a worker
woken by a batch starts it 96 µs after its forming at the median, 226 at the p99, the gates
meanwhile left out (the replay's 100 and 163; block 37's run 1; counted with those gates, the
runs' p99 read 540-890 µs, much of it the gates' own doing, which the model plays out)
(``benchmarks/README.md``, "Fidelity, session 26"). A request's p99 at B = 1 is made of such
waits.

What counts as a wake-up (every request and batch, warm-up included):

- a gate's: a request that arrived after the previous request's gate was done and its loop
  over (the gate thread was waiting on its inbox; the loop's part after the done stamp is
  the median gap between a gate's done and the next one's start where it went straight
  on): arrival to gate start, split by whether a device worker was at work (an expert call
  or a combine) when it arrived;
- a worker's: a batch formed while its device's worker had no job (after the end of that
  device's previous expert call and combines): forming to the batch's start (the hand-off,
  then its gather), less the time gates ran meanwhile (the woken worker then waited for the
  lock, which the model plays out itself). Where the gate went straight on to the next
  request (that request had arrived by the end of this one's loop), the server's worker runs
  once that next gate is done: the wait counts from that gate's done instead (when
  positive).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

from traces.alone_gates import _busy_intervals, _per_request, covered_until
from traces.worker_absences import batches_after_previous

__all__ = ["RunWakes", "run_wakes", "worker_handoffs_s"]


class RunWakes(NamedTuple):
    """Wake-up waits (s) of one B's rows, by kind (module docstring)."""

    gate_idle: np.ndarray  # a gate woken with no worker at work
    gate_busy: np.ndarray  # a gate woken while a worker was at work
    worker: np.ndarray  # a worker woken by a batch, the gate then waiting
    worker_after_gate: np.ndarray  # a worker woken by a batch while the gate went straight on


def run_wakes(rows: pl.DataFrame) -> RunWakes:
    """The wake-ups of one B's ``rows`` (module docstring)."""
    none = np.zeros(0)
    if rows.height == 0:
        return RunWakes(none, none, none, none)
    reqs = _per_request(
        rows, "arrival_s", "gate_start_s", "gate_done_s", "combine_start_s", "complete_s"
    )
    gates = _Gates(
        *(reqs[c].to_numpy().astype(float) for c in ("arrival_s", "gate_start_s", "gate_done_s"))
    )
    gate_idle, gate_busy = _gate_wakes(rows, reqs, gates)
    worker, after = _worker_wakes(rows, reqs, gates)
    return RunWakes(gate_idle, gate_busy, worker, after)


class _Gates(NamedTuple):
    """Each request's arrival, gate start and gate done (s), in request order."""

    arrival: np.ndarray
    start: np.ndarray
    done: np.ndarray

    def loop_s(self) -> float:
        """The gate loop's part after its done stamp (storing, the queues): the median gap
        from a gate's done to the next one's start where that request had arrived by the done
        (the thread went straight on); an arrival within it finds the thread in its loop."""
        queued = self.arrival[1:] <= self.done[:-1]
        gaps = (self.start[1:] - self.done[:-1])[queued]
        gaps = gaps[np.isfinite(gaps) & (gaps >= 0)]
        return float(np.median(gaps)) if len(gaps) else 0.0


def _gate_wakes(
    rows: pl.DataFrame, reqs: pl.DataFrame, gates: _Gates
) -> tuple[np.ndarray, np.ndarray]:
    """(idle host, worker at work) waits of the gates woken by their request's arrival."""
    arrival, start, done = gates
    woken = np.concatenate([[True], arrival[1:] > done[:-1] + gates.loop_s()])
    woken &= np.isfinite(start)
    woken &= np.isfinite(arrival) & (start >= arrival)
    busy = _busy_intervals(rows, reqs)
    busy = busy[np.isfinite(busy).all(axis=1)]
    at_work = np.zeros(len(arrival), dtype=bool)
    if len(busy):
        latest_end = np.maximum.accumulate(busy[:, 1])  # by start: any job begun still on?
        before = np.searchsorted(busy[:, 0], arrival, side="right") - 1
        at_work = (before >= 0) & (latest_end[np.maximum(before, 0)] > arrival)
    wait = start - arrival
    return wait[woken & ~at_work], wait[woken & at_work]


class _Formed(NamedTuple):
    """Every batch of one B's rows (:func:`~traces.worker_absences.batches_after_previous`:
    by start, with ``batch_kind``) and, per batch, where the gate thread stood."""

    batches: pl.DataFrame
    last: np.ndarray  # its last request's place among the gates (-1: not among them)
    goes_on: np.ndarray  # an exact batch whose gate went straight on to the next request


def _formed(rows: pl.DataFrame, reqs: pl.DataFrame, gates: _Gates) -> _Formed:
    """The batches of ``rows`` with their last request and whether the gate went on: an
    exact batch forms at its last request's gate done, and the gate goes straight on when
    the next request had arrived by the end of its loop (flushed and drained: by a timer)."""
    batches = batches_after_previous(
        rows, pl.col("batch_kind").first(), pl.col("request").max().alias("last")
    )
    index = {r: i for i, r in enumerate(reqs["request"].to_list())}
    last = np.array([index.get(r, -1) for r in batches["last"].to_list()], dtype=int)
    i, n = np.maximum(last, 0), len(gates.arrival)
    following = np.minimum(i + 1, n - 1)
    goes_on = (batches["batch_kind"].to_numpy() == "exact") & (last >= 0) & (i + 1 < n)
    goes_on &= gates.arrival[following] <= gates.done[i] + gates.loop_s()
    return _Formed(batches, last, goes_on)


def _worker_wakes(
    rows: pl.DataFrame, reqs: pl.DataFrame, gates: _Gates
) -> tuple[np.ndarray, np.ndarray]:
    """(gate waiting, gate gone on) waits of the workers woken by a batch."""
    formed_at = _formed(rows, reqs, gates)
    _, gate_start, gate_done = gates
    gate_until = covered_until(np.column_stack([gate_start, gate_done]))

    def gated(a: float, b: float) -> float:
        """The time gates ran between a and b."""
        return float(gate_until(np.array(b)) - gate_until(np.array(a)))

    plain: list[float] = []
    after: list[float] = []
    # each batch against its own worker's previous job (batches_after_previous: per device)
    formed, start, previous = (
        formed_at.batches[c].to_numpy().astype(float)
        for c in ("batch_formed_s", "batch_start_s", "previous_s")
    )
    waiting = (formed >= previous) & (start >= formed)
    for f, s, i, on, w in zip(
        formed, start, formed_at.last, formed_at.goes_on, waiting, strict=True
    ):
        if not w:
            continue
        if on:  # the worker runs once the next gate is done
            nxt = i + 1
            if s > gate_done[nxt] and gate_start[nxt] >= f:
                after.append(s - gate_done[nxt] - gated(gate_done[nxt], s))
        else:
            plain.append(s - f - gated(f, s))
    return np.asarray(plain), np.asarray(after)


def worker_handoffs_s(rows: pl.DataFrame) -> np.ndarray:
    """The worker's way from a gate to the batch it formed, alone: for each counted exact
    batch whose device's worker had no job when the batch's last request's gate was done,
    the gate thread then waiting (its next request had not arrived by the end of its loop)
    and no gate running until the batch started, that gate's done to the batch's start (the
    gate's loop after its stamp, the worker's wake, its gather); in batch-start order.

    Why from the gate's done and not the batch's forming: the server stamps the forming a
    few µs into the gate's loop, under the queues' lock, where the model stamps it at the
    gate's done; both stamp the gate's done at the same place (``sim.run_speed``'s
    ``run_handoff_factor`` reads the replay's the same way)."""
    if rows.height == 0:
        return np.zeros(0)
    reqs = _per_request(rows, "arrival_s", "gate_start_s", "gate_done_s", "warmup")
    gates = _Gates(
        *(reqs[c].to_numpy().astype(float) for c in ("arrival_s", "gate_start_s", "gate_done_s"))
    )
    batches, last, goes_on = _formed(rows, reqs, gates)
    exact, known = batches["batch_kind"].to_numpy() == "exact", last >= 0
    i = np.maximum(last, 0)
    done = np.where(known, gates.done[i], np.nan)
    start, previous = (batches[c].to_numpy().astype(float) for c in ("batch_start_s", "previous_s"))
    counted = ~reqs["warmup"].to_numpy().astype(bool)[i]
    keep = exact & known & counted & ~goes_on & (done >= previous) & (start >= done)
    keep &= np.isfinite(done) & np.isfinite(start)
    done, start = done[keep], start[keep]
    gate_until = covered_until(np.column_stack([gates.start, gates.done]))
    alone = gate_until(start) - gate_until(done) <= 0.0
    return (start - done)[alone]
