"""The gates of one B's ``serve-records/1`` rows that ran alone on the host: the run's own
measure of how fast its host was, read the same way from a measured run and from its replay.

Why: a shared machine's speed drifts from minute to minute, and at B = 1 a request's latency
is a chain of host steps, so a replay at the profile's speed misses the run by as much as
the machine's speed moved in between (``benchmarks/README.md``, "Fidelity, session 16": per
run, the B = 1 p50 error follows this median with a correlation of −0.89 to −0.98, the
speed probes around the run's with −0.54 to −0.78). A gate that ran alone — woken by its
request's arrival (the gate thread had been waiting), with no batch and no combine running
anywhere while it ran — is the one step in the records whose wall time is the host's speed
and nothing else: no contention, no queue.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

__all__ = [
    "alone_combines_s",
    "alone_expert_calls_s",
    "alone_gates",
    "alone_gates_s",
    "covered_until",
    "gate_company",
    "worker_steps",
]


def alone_gates_s(rows: pl.DataFrame, warm_within_s: float | None = None) -> np.ndarray:
    """Wall times (gate start to gate done) of the counted (not warm-up) requests' gates
    that ran alone (module docstring), in request order, for the rows of one B.
    ``warm_within_s``: only those that started within this long after the host's last work
    (a gate, a batch or a combine ending): the host still warm."""
    return alone_gates(rows, warm_within_s)[1]


def alone_gates(
    rows: pl.DataFrame, warm_within_s: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(start times, wall times) of the gates :func:`alone_gates_s` keeps, in request order:
    when each ran, for reading how the host's speed moved during the run."""
    if rows.height == 0:
        return np.zeros(0), np.zeros(0)
    reqs = _per_request(
        rows, "arrival_s", "gate_start_s", "gate_done_s", "combine_start_s", "complete_s", "warmup"
    )
    busy = _busy_intervals(rows, reqs)
    arrival, start, done = (
        reqs[c].to_numpy().astype(float) for c in ("arrival_s", "gate_start_s", "gate_done_s")
    )
    warmup = reqs["warmup"].to_numpy().astype(bool)
    previous_done = np.concatenate([[-np.inf], done[:-1]])
    woken = arrival > previous_done  # the gate was waiting on its inbox when it came
    # some busy interval overlaps [start, done]: of those starting before done, the latest end
    overlaps = np.zeros(len(start), dtype=bool)
    if len(busy):
        latest_end = np.maximum.accumulate(busy[:, 1])
        before = np.searchsorted(busy[:, 0], done, side="left") - 1
        overlaps = (before >= 0) & (latest_end[np.maximum(before, 0)] > start)
    keep = woken & ~overlaps & ~warmup & np.isfinite(start) & np.isfinite(done)
    if warm_within_s is not None:
        last = previous_done.copy()
        if len(busy):
            ended = np.searchsorted(busy[:, 0], start, side="left") - 1
            last_busy = np.where(ended >= 0, latest_end[np.maximum(ended, 0)], -np.inf)
            last = np.maximum(last, np.minimum(last_busy, start))
        keep &= start - last <= warm_within_s
    return start[keep], (done - start)[keep]


def _per_request(rows: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """One row per request, in request order, with the first value of each of ``columns``
    (a request's gate and combine times repeat on each of its k rows)."""
    return rows.group_by("request").agg(pl.col(c).first() for c in columns).sort("request")


def _per_batch(rows: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """One row per batch with ``columns`` (a batch's times repeat on each of its rows),
    batches with a missing value left out, in no set order."""
    return rows.select("batch", *columns).unique("batch").drop_nulls()


def _busy_intervals(rows: pl.DataFrame, reqs: pl.DataFrame) -> np.ndarray:
    """(start, end) of every batch's expert call and every request's combine (``reqs``:
    one row per request with ``combine_start_s`` and ``complete_s``), by start: when a
    device worker was at work."""
    batches = _per_batch(rows, "batch_start_s", "batch_end_s")
    busy = np.concatenate(
        [
            batches.select("batch_start_s", "batch_end_s").to_numpy().reshape(-1, 2),
            reqs.select("combine_start_s", "complete_s").drop_nulls().to_numpy().reshape(-1, 2),
        ]
    ).astype(float)
    return busy[np.argsort(busy[:, 0], kind="stable")]


def covered_until(intervals: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function of times ``t``: the seconds before each that some of the (start, end)
    ``intervals`` (any order, overlapping or not; non-finite or empty ones dropped) cover."""
    spans = intervals[np.isfinite(intervals).all(axis=1) & (intervals[:, 1] > intervals[:, 0])]
    spans = spans[np.argsort(spans[:, 0], kind="stable")]
    union: list[list[float]] = []  # the covered time as disjoint intervals
    for lo, hi in spans.tolist():
        if union and lo <= union[-1][1]:
            union[-1][1] = max(union[-1][1], hi)
        else:
            union.append([lo, hi])
    merged = np.array(union).reshape(-1, 2)
    before = np.concatenate([[0.0], np.cumsum(merged[:, 1] - merged[:, 0])])

    def until(t: np.ndarray) -> np.ndarray:
        i = np.searchsorted(merged[:, 0], t, side="right") - 1  # the last interval begun
        j = np.maximum(i, 0)
        inside = np.clip(t - merged[j, 0], 0.0, merged[j, 1] - merged[j, 0]) if len(merged) else 0.0
        return np.where(i >= 0, before[j] + inside, 0.0)

    return until


def gate_company(rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start times, wall times, busy shares) of every gate of one B's rows (warm-up
    included), in request order; a gate's busy share is the part of its wall time during
    which a device worker was at work (an expert call or a combine): its company. A gate
    in company runs up to several times slower than one alone (``hw profile``'s gate
    alone/contended), so what is slow for a gate depends on it (:mod:`sim.run_stalls`)."""
    if rows.height == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    reqs = _per_request(rows, "gate_start_s", "gate_done_s", "combine_start_s", "complete_s")
    start, done = (reqs[c].to_numpy().astype(float) for c in ("gate_start_s", "gate_done_s"))
    ok = np.isfinite(start) & np.isfinite(done) & (done > start)
    start, done = start[ok], done[ok]
    busy_until = covered_until(_busy_intervals(rows, reqs))
    share = (busy_until(done) - busy_until(start)) / (done - start)
    return start, done - start, np.clip(share, 0.0, 1.0)


def alone_expert_calls_s(rows: pl.DataFrame) -> np.ndarray:
    """Wall times (batch start to batch end) of the counted batches whose expert call ran
    with no gate running anywhere, in batch-start order, for the rows of one B: the worker's
    own measure of the host's speed, read the same way from a measured run and its replay
    (``sim.run_speed.run_expert_factor``). A gate in company would add its contention."""
    if rows.height == 0:
        return np.zeros(0)
    batches = _per_batch(rows.filter(~pl.col("warmup")), "batch_start_s", "batch_end_s").sort(
        "batch_start_s"
    )
    start, end = (batches[c].to_numpy().astype(float) for c in ("batch_start_s", "batch_end_s"))
    return _without_gates(rows, start, end)


def alone_combines_s(rows: pl.DataFrame) -> np.ndarray:
    """Wall times (combine start to completion) of the counted requests' combines that ran
    with no gate running anywhere, in request order, for the rows of one B: the worker's
    measure of its speed on its own Python work (collect, combine, the loop around them),
    read the same way from a measured run and its replay
    (``sim.run_speed.run_combine_factor``).

    Why apart from the expert calls: on this box the run's combines ran slower against
    their profile than its alone gates did, and not by the expert calls' factor
    (``benchmarks/README.md``, "Fidelity, session 22")."""
    if rows.height == 0:
        return np.zeros(0)
    reqs = _per_request(rows, "combine_start_s", "complete_s", "warmup")
    reqs = reqs.filter(~pl.col("warmup")).drop_nulls(["combine_start_s", "complete_s"])
    start, end = (reqs[c].to_numpy().astype(float) for c in ("combine_start_s", "complete_s"))
    return _without_gates(rows, start, end)


def _without_gates(rows: pl.DataFrame, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """``end - start`` of the finite intervals [start, end] during which no gate of
    ``rows`` (warm-up included) ran."""
    gates = _per_request(rows, "gate_start_s", "gate_done_s").drop_nulls().sort("gate_start_s")
    g_start, g_done = (gates[c].to_numpy().astype(float) for c in ("gate_start_s", "gate_done_s"))
    overlaps = np.zeros(len(start), dtype=bool)
    if len(g_start):
        latest_done = np.maximum.accumulate(g_done)
        before = np.searchsorted(g_start, end, side="left") - 1
        overlaps = (before >= 0) & (latest_done[np.maximum(before, 0)] > start)
    keep = ~overlaps & np.isfinite(start) & np.isfinite(end)
    return (end - start)[keep]


def worker_steps(rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """((start, end) rows, ratios) of every expert call (a batch's start to end) and every
    combine (combine start to completion) of one B's rows, warm-up included: each one's
    wall time over the median of its kind's (expert calls of its batch size; combines).
    The device worker's record of its own speed, beside the gates' (:func:`gate_company`),
    for where a stall the gates show began and ended (``sim.run_stalls``)."""
    if rows.height == 0:
        return np.zeros((0, 2)), np.zeros(0)
    calls = (
        _per_batch(rows, "batch_size", "batch_start_s", "batch_end_s")
        .with_columns((pl.col("batch_end_s") - pl.col("batch_start_s")).alias("wall"))
        .filter(pl.col("wall") > 0)
        .with_columns((pl.col("wall") / pl.col("wall").median().over("batch_size")).alias("ratio"))
    )
    combines = (
        _per_request(rows, "combine_start_s", "complete_s")
        .drop_nulls()
        .with_columns((pl.col("complete_s") - pl.col("combine_start_s")).alias("wall"))
        .filter(pl.col("wall") > 0)
        .with_columns((pl.col("wall") / pl.col("wall").median()).alias("ratio"))
    )
    spans = np.concatenate(
        [
            calls.select("batch_start_s", "batch_end_s").to_numpy().reshape(-1, 2),
            combines.select("combine_start_s", "complete_s").to_numpy().reshape(-1, 2),
        ]
    ).astype(float)
    ratios = np.concatenate([calls["ratio"].to_numpy(), combines["ratio"].to_numpy()])
    return spans, ratios.astype(float)
