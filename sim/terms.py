"""Measured service and overhead terms of a real run, for replaying it in the model.

``sim check --terms replay`` gives the model, per item, what the measured run
spent in service and in the overhead gaps of system-model §7 (from
:func:`traces.serving.request_view`), so the only thing left to differ is the
queueing itself (§3–§5): a check of the rules, not of the latency profile.

- gate: the request's gate service plus its ``gap_gate_s`` (a late start of a
  free gate is, for everything after it, a longer gate service);
- enqueue: the request joins its queues ``gap_enqueue_s`` after gate done;
- expert batches: the i-th batch of expert e takes the measured duration of
  the i-th measured batch of e plus its dispatch gap (start after ready and
  device free); batches beyond the measured ones keep the profile's time;
- combine: the request's combine service plus its ``gap_combine_s``.

- max_wait flushes: the run's mean lag of a flush behind its deadline
  (``flush_lag_s``, its ``gap_form_s``) is added to every deadline, so a late
  flush also takes what arrived during the lag, as in the run.

``sim check --terms sampled`` is the model with the same terms as measured
*distributions* instead of per-item values: every gate, combine and enqueue
delay is an independent draw from the run's own values, every batch of b
samples a draw from the run's batches of b samples (any expert; the profile's
time where the run had none of that size). It predicts from distributions,
so it tests the model's independence assumptions, not just its rules.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from traces.serving import request_view

__all__ = ["ServiceTerms", "replay_terms", "sampled_terms"]


@dataclass(frozen=True, eq=False)
class ServiceTerms:
    """Per-item times replacing the model's; ``None`` keeps the model's own."""

    gate_s: np.ndarray | None = None
    enqueue_delay_s: np.ndarray | None = None
    combine_s: np.ndarray | None = None
    batch_s: Mapping[int, np.ndarray] | None = None
    batch_draw: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    flush_lag_s: float = 0.0

    def batch_service(
        self, expert: np.ndarray, size: np.ndarray, model_s: np.ndarray
    ) -> np.ndarray:
        """Measured batch durations: drawn by size, or the i-th of each expert in order."""
        if self.batch_draw is not None:
            drawn = self.batch_draw(expert, size)
            return np.where(np.isnan(drawn), model_s, drawn)
        out = model_s.copy()
        if not self.batch_s:
            return out
        first = np.searchsorted(expert, expert, side="left")  # batches are sorted by expert
        ordinal = np.arange(len(expert)) - first
        for e, durations in self.batch_s.items():
            idx = np.flatnonzero(expert == e)
            known = ordinal[idx] < len(durations)
            out[idx[known]] = durations[ordinal[idx[known]]]
        return out


def _dispatch_gaps(rows: pl.DataFrame) -> pl.DataFrame:
    """Per batch: start − max(formed, device free after its previous batch and combines)."""
    batches = (
        rows.group_by("batch")
        .agg(pl.col("expert", "device", "batch_formed_s", "batch_start_s", "batch_end_s").first())
        .sort("batch_start_s")
    )
    last_combine = dict(rows.group_by("combine_batch").agg(pl.col("complete_s").max()).iter_rows())
    dev = batches["device"].to_numpy()
    start = batches["batch_start_s"].to_numpy()
    end = batches["batch_end_s"].to_numpy()
    ids = batches["batch"].to_numpy()
    free = np.full(len(ids), -np.inf)
    for d in np.unique(dev):
        idx = np.flatnonzero(dev == d)
        for prev, cur in itertools.pairwise(idx):
            free[cur] = max(end[prev], last_combine.get(int(ids[prev]), -np.inf))
    gap = np.maximum(start - np.maximum(batches["batch_formed_s"].to_numpy(), free), 0.0)
    return batches.with_columns(pl.Series("gap_dispatch_s", gap))


def _measured(rows: pl.DataFrame, max_wait_s: float | None) -> tuple[np.ndarray, ...]:
    view = request_view(rows, max_wait_s).sort("request")
    gate = (view["gate_service_s"] + view["gap_gate_s"].clip(lower_bound=0)).to_numpy()
    enqueue = view["gap_enqueue_s"].fill_nan(0.0).fill_null(0.0).clip(lower_bound=0).to_numpy()
    combine = (view["combine_service_s"] + view["gap_combine_s"].clip(lower_bound=0)).to_numpy()
    return gate, enqueue, combine


def _batches(rows: pl.DataFrame) -> pl.DataFrame:
    batches = _dispatch_gaps(rows)
    size = rows.group_by("batch").agg(pl.col("batch_size").first())
    dur = pl.col("batch_end_s") - pl.col("batch_start_s") + pl.col("gap_dispatch_s")
    joined = batches.join(size, on="batch").sort(["expert", "batch_formed_s", "batch"])
    return joined.with_columns(dur.alias("duration_s"))


def flush_lag(rows: pl.DataFrame, max_wait_s: float | None) -> float:
    """Mean lag of the run's max_wait flushes behind their deadlines (0 without flushes)."""
    if max_wait_s is None:
        return 0.0
    flushes = (
        rows.filter(pl.col("batch_kind") == "flush")
        .group_by("batch")
        .agg(pl.col("batch_formed_s").first(), pl.col("enqueue_s").min())
    )
    if flushes.height == 0:
        return 0.0
    lag = flushes["batch_formed_s"] - flushes["enqueue_s"] - max_wait_s
    return float(lag.clip(lower_bound=0).mean())


def replay_terms(rows: pl.DataFrame, max_wait_s: float | None) -> ServiceTerms:
    """The measured terms of one B of a ``serve-records/1`` table, per item."""
    gate, enqueue, combine = _measured(rows, max_wait_s)
    batch_s = {
        int(e): g["duration_s"].to_numpy()
        for (e,), g in _batches(rows).group_by(["expert"], maintain_order=True)
    }
    return ServiceTerms(gate, enqueue, combine, batch_s, flush_lag_s=flush_lag(rows, max_wait_s))


def sampled_terms(rows: pl.DataFrame, max_wait_s: float | None, seed: int) -> ServiceTerms:
    """Independent draws from the measured terms of one B (see the module docstring)."""
    rng = np.random.default_rng([seed, 7])
    gate, enqueue, combine = _measured(rows, max_wait_s)
    n = len(gate)
    by_size = {
        int(b): g["duration_s"].to_numpy() for (b,), g in _batches(rows).group_by(["batch_size"])
    }

    def draw(expert: np.ndarray, size: np.ndarray) -> np.ndarray:
        out = np.full(len(size), np.nan)
        for b, pool in by_size.items():
            idx = np.flatnonzero(size == b)
            out[idx] = rng.choice(pool, size=len(idx))
        return out

    return ServiceTerms(
        gate_s=rng.choice(gate, size=n),
        enqueue_delay_s=rng.choice(enqueue, size=n),
        combine_s=rng.choice(combine, size=n),
        batch_draw=draw,
        flush_lag_s=flush_lag(rows, max_wait_s),
    )
