"""What company cost the steps of one B's ``serve-records/1`` rows: a gate beside a device
worker's job, and a worker's expert call or combine beside a gate; read the same way from a
measured run and from its replay (``sim.run_contention``).

Why: the host model prices company with ``hw profile``'s contended pairs, the worker's share
split over its dispatch and expert call by their cost. On blocks 36-40 at B = 1 and 500 req/s
(30 runs) the expert calls that ran wholly beside a gate took 1.00-1.18 times the alone ones'
median on 23 runs (up to 1.63 on the others), the combines 1.00-1.18 times on 23 (up to 1.45),
while the replays priced both at 1.5-1.9 times; and the gates in company of block 38's
profiles ran slower than its runs' gates did, those of block 40's faster
(``benchmarks/README.md``, "Fidelity, session 29"). An expert call is a torch call that lets
the interpreter lock go, so a gate beside it costs it little; what company costs each step
is the run's to say.

What is read: a step's *gate share*, the part of its wall time during which some gate ran;
a worker step *beside a gate* has a share of at least :data:`BESIDE`, one *alone* none
(below :data:`NONE`); its excess is the median of the first less the median of the second.
For the gate, its walls with a busy share (:func:`traces.alone_gates.gate_company`) in
[:data:`COMPANY_LO`, :data:`COMPANY_HI`): gates well in company, but not the ones wholly
beside an expert call, which ran at their alone speed.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from traces.alone_gates import _per_batch, _per_request, covered_until, gate_company

__all__ = [
    "BESIDE",
    "COMPANY_HI",
    "COMPANY_LO",
    "MIN_STEPS",
    "NONE",
    "combine_excess_s",
    "expert_call_excess_s",
    "gate_shares",
    "gates_in_company_s",
]

BESIDE = 0.9  # a worker step with at least this gate share ran beside a gate
NONE = 0.01  # one with less ran alone
COMPANY_LO, COMPANY_HI = 0.5, 0.9  # the gates in company: busy share in [LO, HI)
MIN_STEPS = 30  # fewer steps on either side: no excess read


def gate_shares(rows: pl.DataFrame, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Per interval [start, end] (seconds; end > start), the part of it during which some
    gate of ``rows`` (one B, warm-up included) ran."""
    gates = _per_request(rows, "gate_start_s", "gate_done_s").drop_nulls()
    spans = gates.select("gate_start_s", "gate_done_s").to_numpy().reshape(-1, 2).astype(float)
    until = covered_until(spans)
    width = np.maximum(end - start, 1e-12)
    return np.clip((until(end) - until(start)) / width, 0.0, 1.0)


def _excess(walls: np.ndarray, shares: np.ndarray) -> float | None:
    beside, alone = walls[shares >= BESIDE], walls[shares < NONE]
    if len(beside) < MIN_STEPS or len(alone) < MIN_STEPS:
        return None
    return float(np.median(beside) - np.median(alone))


def expert_call_excess_s(rows: pl.DataFrame) -> float | None:
    """The median counted expert call beside a gate less the median alone (module
    docstring), for one B's ``rows``; None with fewer than :data:`MIN_STEPS` of either."""
    batches = _per_batch(rows.filter(~pl.col("warmup")), "batch_start_s", "batch_end_s")
    start, end = (batches[c].to_numpy().astype(float) for c in ("batch_start_s", "batch_end_s"))
    ok = end > start
    start, end = start[ok], end[ok]
    return _excess(end - start, gate_shares(rows, start, end))


def combine_excess_s(rows: pl.DataFrame) -> float | None:
    """The median counted combine (combine start to completion) beside a gate less the
    median alone, for one B's ``rows``; None with fewer than :data:`MIN_STEPS` of either."""
    reqs = _per_request(rows, "combine_start_s", "complete_s", "warmup")
    reqs = reqs.filter(~pl.col("warmup")).drop_nulls(["combine_start_s", "complete_s"])
    start, end = (reqs[c].to_numpy().astype(float) for c in ("combine_start_s", "complete_s"))
    ok = end > start
    start, end = start[ok], end[ok]
    return _excess(end - start, gate_shares(rows, start, end))


def gates_in_company_s(rows: pl.DataFrame) -> np.ndarray:
    """Wall times of one B's gates (warm-up included) with a busy share in
    [:data:`COMPANY_LO`, :data:`COMPANY_HI`), in request order."""
    _, walls, shares = gate_company(rows)
    return walls[(shares >= COMPANY_LO) & (shares < COMPANY_HI)]
