"""What company cost a run's steps (traces.company_costs): gate shares, the worker's steps
beside a gate against alone, and the gates in company, on a timeline built by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from traces.company_costs import (
    MIN_STEPS,
    combine_excess_s,
    expert_call_excess_s,
    gate_shares,
    gates_in_company_s,
)

MS = 1e-3
PAIRS = 40  # > MIN_STEPS of each kind

# one pair every 10 ms (ms from its start). Request A: gate 0-0.4, expert call 0.5-0.62,
# combine 0.62-0.75, both wholly beside request B's gate (0.45-0.8, busy 0.25 of its 0.35 ms:
# share 0.71, a gate in company). B's call 0.85-0.95 and combine 0.95-1.05 run alone, as does
# A's gate. So a call beside a gate costs 0.02 ms more than one alone, a combine 0.03.
A = (0.0, 0.0, 0.4, 0.4, 0.5, 0.62, 0.62, 0.75)
B = (0.45, 0.45, 0.8, 0.8, 0.85, 0.95, 0.95, 1.05)
COLS = ("arrival_s", "gate_start_s", "gate_done_s", "batch_formed_s", "batch_start_s")
COLS += ("batch_end_s", "combine_start_s", "complete_s")


def _rows(pairs: int = PAIRS, warm: int = 0) -> pl.DataFrame:
    rows = []
    for p in range(pairs):
        for j, times in enumerate((A, B)):
            r = 2 * p + j
            at = {c: (10.0 * p + t) * MS for c, t in zip(COLS, times, strict=True)}
            rows.append(at | {"request": r, "batch": r, "device": 0, "warmup": p < warm})
    return pl.DataFrame(rows)


def test_a_timeline_by_hand() -> None:
    rows = _rows()
    assert expert_call_excess_s(rows) == pytest.approx(0.02 * MS)
    assert combine_excess_s(rows) == pytest.approx(0.03 * MS)
    walls = gates_in_company_s(rows)  # B's gates only: A's had no worker step beside it
    assert len(walls) == PAIRS and walls == pytest.approx([0.35 * MS] * PAIRS)
    # a request's several rows (k > 1) and the row order do not matter
    doubled = pl.concat([rows, rows.filter(pl.col("request") % 2 == 0)]).sample(
        fraction=1.0, seed=3
    )
    assert expert_call_excess_s(doubled) == pytest.approx(0.02 * MS)
    assert combine_excess_s(doubled) == pytest.approx(0.03 * MS)


def test_gate_shares_are_the_part_under_some_gate() -> None:
    rows = _rows(pairs=2)
    start = np.array([0.5, 0.3, 0.85, 0.7]) * MS
    end = np.array([0.62, 0.5, 0.95, 0.9]) * MS
    # wholly beside B's gate; 0.3-0.4 under A's and 0.45-0.5 under B's of 0.2; none; half
    assert gate_shares(rows, start, end) == pytest.approx([1.0, 0.75, 0.0, 0.5])


def test_too_few_steps_or_warm_up_read_nothing() -> None:
    assert expert_call_excess_s(_rows(pairs=MIN_STEPS - 1)) is None
    assert combine_excess_s(_rows(pairs=MIN_STEPS - 1)) is None
    assert expert_call_excess_s(_rows(pairs=MIN_STEPS)) == pytest.approx(0.02 * MS)
    # the warm-up's steps are left out: PAIRS - 15 counted pairs are too few
    assert expert_call_excess_s(_rows(warm=15)) is None
    assert len(gates_in_company_s(_rows().head(0))) == 0
