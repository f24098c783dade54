"""Where a request's latency goes, part by part, from a ``serve-records/1`` table.

``sim check --parts`` compares these parts of the measured run with the model's replay,
so a miss on p99 can be traced to the part that makes it: the queue in front of the
gate, the gate, or the worker's part after it (the expert queues, batches and combine).
Two models can reach one latency p99 by different parts (``benchmarks/README.md``,
"Fidelity, session 13"); the latency alone does not tell them apart.
"""

from __future__ import annotations

import numpy as np
import polars as pl

PARTS = ("queue", "gate", "worker", "latency")
"""queue: arrival -> gate start; gate: gate start -> gate done; worker: gate done ->
completion; latency: arrival -> completion (queue + gate + worker)."""

QUANTILES = (50.0, 99.0)


def request_parts(records: pl.DataFrame) -> dict[str, tuple[float, float]]:
    """Per part, its (p50, p99) in seconds over the requests past the warm-up (NaN if none).

    ``records`` holds one B's rows: one per (request, expert), the request's times
    repeated on each."""
    reqs = (
        records.filter(~pl.col("warmup"))
        .group_by("request")
        .agg(pl.col(c).first() for c in ("arrival_s", "gate_start_s", "gate_done_s", "complete_s"))
    )
    arrival, start, done, complete = (
        reqs[c].to_numpy() for c in ("arrival_s", "gate_start_s", "gate_done_s", "complete_s")
    )
    spans = {
        "queue": start - arrival,
        "gate": done - start,
        "worker": complete - done,
        "latency": complete - arrival,
    }

    def q(a: np.ndarray) -> tuple[float, float]:
        if not len(a):
            return (float("nan"), float("nan"))
        p50, p99 = np.percentile(a, QUANTILES)
        return (float(p50), float(p99))

    return {name: q(spans[name]) for name in PARTS}


def mean_parts(sets: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Per part, the mean of several runs' or replays' (p50, p99), as ``sim check`` averages
    its metrics."""
    return {
        name: (
            float(np.mean([s[name][0] for s in sets])),
            float(np.mean([s[name][1] for s in sets])),
        )
        for name in PARTS
    }
