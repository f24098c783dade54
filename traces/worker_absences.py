"""The spells in one B's ``serve-records/1`` rows in which a device worker, with a batch
ready and its previous job done, did not start it: the worker kept off the host while the
gate went on.

Why: at B = 1 and 500 req/s the server's worker often sits out a burst. In block 40's run 6
a batch formed at 1869.65 ms waited, after the worker's last expert call ended at 1870.75,
until 1873.71, while the gate thread went straight on through six requests at its speed
alone (0.42 ms each, nothing contending); the eight requests behind it took 8.4-9.9 ms. On
block 40 the runs held 7-45 such gaps over 1 ms each (10-60 ms in all per 4 s run), the
replays of runs 1 and 6 had 5-10, and the runs' p99 error followed the count (block 38 at
500 req/s: 2, 4, 7, 33, 33 and 45 gaps, p99 +17.7, +13.6, +7.0, +5.5, +4.2, −16.7 %;
``benchmarks/README.md``, "Fidelity, session 28"). Half to three quarters of them end within
0.1 ms of the gate thread's next wait on its inbox: the gate thread, whose torch calls let
the interpreter lock go and take it back every few microseconds, keeps it from a waiting
worker until it blocks (a waiting thread asks for the lock only when no switch happened
within its interval). The model's own rules make the shorter of these waits (a woken worker
waits for the gate that goes on), not these.

What counts, per device: a batch whose worker was free when it formed or became free while
it waited (the end of that device's previous expert call or combine, whichever is later);
the gap from then to the batch's start (its gather included) is its *ready gap*. A gap
longer than :data:`ABSENCE_GATES` times the B's median gate wall is an absence: its start
is that instant, its span the gap less the B's median ready gap (the hand-off and gather
that every batch pays, which the model plays out itself).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

from traces.alone_gates import _per_request

__all__ = [
    "ABSENCE_GATES",
    "Absences",
    "batches_after_previous",
    "ready_gaps",
    "worker_absences",
]

# a ready gap longer than this many median gates is an absence: the model's own worker
# waits at most for the one gate going on (and a hand-off) before it starts a ready batch
ABSENCE_GATES = 2.0


class Absences(NamedTuple):
    """Absences of one B (module docstring), in start order."""

    devices: np.ndarray  # int: the device whose worker was away
    starts_s: np.ndarray  # when its batch was ready and the worker free
    spans_s: np.ndarray  # the gap less the B's median ready gap
    rate_hz: float  # absences per second of the B's span (first arrival to last completion)


class ReadyGaps(NamedTuple):
    """Per batch that found its worker free or waited for it (module docstring)."""

    devices: np.ndarray
    ready_s: np.ndarray  # the later of its forming and its worker's previous job's end
    gaps_s: np.ndarray  # from then to the batch's start


def batches_after_previous(rows: pl.DataFrame, *extra: pl.Expr) -> pl.DataFrame:
    """One row per batch of one B's ``rows`` (warm-up included; batches with a missing time
    left out), by start: ``batch``, ``device``, ``batch_formed_s``, ``batch_start_s``,
    the ``extra`` aggregations over its rows and ``previous_s``, the end of that device's
    worker's last expert call or combine before the batch's start (−inf: none): where the
    worker stood when the batch could start."""
    batches = (
        rows.group_by("batch")
        .agg(
            pl.col("device").first(),
            pl.col("batch_formed_s").first(),
            pl.col("batch_start_s").first(),
            pl.col("batch_end_s").first(),
            *extra,
        )
        .drop_nulls()
        .sort("batch_start_s")
    )
    combines = (
        rows.select("request", "combine_batch", "complete_s")
        .unique("request")
        .drop_nulls()
        .join(batches.select("batch", "device"), left_on="combine_batch", right_on="batch")
    )
    parts = []
    for device in sorted(batches["device"].unique().to_list()):
        own = batches.filter(pl.col("device") == device)
        ends = np.sort(
            np.concatenate(
                [
                    own["batch_end_s"].to_numpy().astype(float),
                    combines.filter(pl.col("device") == device)["complete_s"].to_numpy(),
                ]
            )
        )
        start = own["batch_start_s"].to_numpy().astype(float)
        before = np.searchsorted(ends, start, side="left") - 1
        previous = np.where(before >= 0, ends[np.maximum(before, 0)], -np.inf)
        parts.append(own.with_columns(pl.Series("previous_s", previous)))
    if not parts:
        return batches.with_columns(pl.lit(None, dtype=pl.Float64).alias("previous_s"))
    return pl.concat(parts)


def ready_gaps(rows: pl.DataFrame) -> ReadyGaps:
    """The ready gaps of one B's ``rows`` (warm-up included), by device then start."""
    batches = batches_after_previous(rows)
    formed, start, previous = (
        batches[c].to_numpy().astype(float)
        for c in ("batch_formed_s", "batch_start_s", "previous_s")
    )
    at = np.maximum(formed, previous)
    ok = np.isfinite(at) & (start >= at)
    return ReadyGaps(batches["device"].to_numpy()[ok].astype(np.int64), at[ok], (start - at)[ok])


def worker_absences(rows: pl.DataFrame, gates: float = ABSENCE_GATES) -> Absences:
    """The absences of one B's ``rows`` (module docstring): ready gaps over ``gates`` ×
    the median gate wall, each less the median ready gap."""
    got = ready_gaps(rows)
    reqs = _per_request(rows, "gate_start_s", "gate_done_s")
    walls = (reqs["gate_done_s"] - reqs["gate_start_s"]).drop_nulls().to_numpy()
    if len(got.gaps_s) == 0 or len(walls) == 0:
        return Absences(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), 0.0)
    typical = float(np.median(got.gaps_s))
    away = (got.gaps_s > gates * float(np.median(walls))) & (got.gaps_s > typical)
    order = np.argsort(got.ready_s[away], kind="stable")
    span = float(rows["complete_s"].max()) - float(rows["arrival_s"].min())
    return Absences(
        got.devices[away][order],
        got.ready_s[away][order],
        (got.gaps_s[away] - typical)[order],
        int(away.sum()) / span if span > 0 else 0.0,
    )
