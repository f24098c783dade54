"""The wake-ups of a run's records (traces.run_wakes): a worked-out timeline by hand, every
kind of wake-up and every case that is not one."""

from __future__ import annotations

import polars as pl
import pytest

from traces.run_wakes import run_wakes, worker_handoffs_s

MS = 1e-3

# request: arrival, gate start, gate done, batch formed, batch start, batch end, combine
# start, complete (ms); one batch of one per request, all on one device
TIMELINE = [
    (0.0, 0.03, 0.5, 0.5, 0.6, 1.0, 1.0, 1.2),  # gate woken, host idle: 0.03; worker: 0.1
    (3.0, 3.05, 3.5, 3.5, 3.9, 4.5, 4.5, 4.7),  # 0.05 idle; worker after gate 2: 3.9 - 3.8
    (3.4, 3.55, 3.8, 3.8, 4.75, 5.0, 5.0, 5.1),  # queued (arrived in gate 1): the loop 0.05
    (4.0, 4.2, 4.6, 4.6, 5.2, 5.4, 5.4, 5.45),  # woken in batch 1 (3.9-4.5): busy, 0.2
    (4.62, 4.66, 5.0, 5.0, 5.5, 5.8, 5.8, 5.9),  # arrived in gate 3's loop: not woken
    (8.0, 8.2, 8.6, 8.6, 8.9, 9.2, 9.2, 9.3),  # 0.2 idle; worker 0.3 less gate 6's 0.1
    (8.7, 8.75, 8.85, 8.85, 9.35, 9.6, 9.6, 9.7),  # 0.05 idle (worker still in its hand-off)
]


def _rows(timeline: list[tuple[float, ...]], device: str = "cpu:0") -> pl.DataFrame:
    cols = ("arrival_s", "gate_start_s", "gate_done_s", "batch_formed_s", "batch_start_s")
    cols += ("batch_end_s", "combine_start_s", "complete_s")
    return pl.DataFrame(
        [
            dict(zip(cols, (t * MS for t in times), strict=True))
            | {"request": r, "warmup": r == 0, "batch": r, "combine_batch": r}
            | {"device": device, "batch_kind": "exact", "batch_size": 1}
            for r, times in enumerate(timeline)
        ]
    )


def test_a_timeline_by_hand() -> None:
    rows = _rows(TIMELINE)
    got = run_wakes(rows)
    assert got.gate_idle == pytest.approx([0.03 * MS, 0.05 * MS, 0.2 * MS, 0.05 * MS])
    assert got.gate_busy == pytest.approx([0.2 * MS])
    assert got.worker == pytest.approx([0.1 * MS, 0.2 * MS])
    assert got.worker_after_gate == pytest.approx([0.1 * MS])
    # row order and a request's several rows (k > 1, the same batch here) do not matter
    shuffled = pl.concat([rows, rows.filter(pl.col("request") == 3)]).sample(fraction=1.0, seed=2)
    again = run_wakes(shuffled)
    for a, b in zip(got, again, strict=True):
        assert sorted(a) == pytest.approx(sorted(b))
    assert all(len(x) == 0 for x in run_wakes(rows.head(0)))


def test_a_flushed_batch_wakes_its_worker_plainly() -> None:
    """Batch 1 formed by a timer, not at its request's gate: request 2 having arrived does
    not keep its worker waiting for gate 2, so its wait counts from its forming."""
    rows = _rows(TIMELINE).with_columns(
        pl.when(pl.col("batch") == 1)
        .then(pl.lit("flush"))
        .otherwise("batch_kind")
        .alias("batch_kind")
    )
    got = run_wakes(rows)
    # 3.9 - 3.5, less gate 2 (3.55-3.8) inside it
    assert sorted(got.worker) == pytest.approx(sorted([0.1 * MS, 0.2 * MS, 0.15 * MS]))
    assert len(got.worker_after_gate) == 0


def test_each_device_has_its_own_worker() -> None:
    """The same timeline on a second device shifted by 20 ms: each worker's waits once."""
    late = [tuple(t + 20.0 for t in times) for times in TIMELINE]
    one = run_wakes(_rows(TIMELINE))
    rows = pl.concat(
        [
            _rows(TIMELINE, "cpu:0"),
            _rows(late, "cpu:1").with_columns(
                pl.col("request") + len(TIMELINE),
                pl.col("batch") + len(TIMELINE),
                pl.col("combine_batch") + len(TIMELINE),
            ),
        ]
    )
    both = run_wakes(rows)
    assert sorted(both.worker) == pytest.approx(sorted(list(one.worker) * 2))
    assert both.worker_after_gate == pytest.approx(list(one.worker_after_gate) * 2)
    # request 7 (the second timeline's first) arrives 20 ms after request 0: idle host
    assert len(both.gate_idle) == 2 * len(one.gate_idle)


def test_the_workers_way_from_a_gate_alone() -> None:
    """``worker_handoffs_s`` keeps an exact batch only where its worker had no job when the
    gate that formed it was done, the gate thread then waited and no gate ran until the
    batch started, and reads it from that gate's done, not from the batch's forming."""
    rows = _rows(TIMELINE)
    # warm-up (0), the gate going straight on (1), the worker busy (2, 3, 4, 6), gate 6
    # running in batch 5's way (5): none
    assert len(worker_handoffs_s(rows)) == 0
    # without request 6, request 5's way is alone: 8.9 - 8.6
    assert worker_handoffs_s(_rows(TIMELINE[:6])) == pytest.approx([0.3 * MS])
    # a request alone at 12 ms, its batch stamped formed 7 µs after its gate's done
    alone = (12.0, 12.03, 12.5, 12.507, 12.6, 13.0, 13.0, 13.2)
    got = worker_handoffs_s(_rows([*TIMELINE[:6], alone]))
    assert sorted(got) == pytest.approx([0.1 * MS, 0.3 * MS])
    flushed = _rows([*TIMELINE[:6], alone]).with_columns(
        pl.when(pl.col("request") == 6)
        .then(pl.lit("flush"))
        .otherwise("batch_kind")
        .alias("batch_kind")
    )
    assert worker_handoffs_s(flushed) == pytest.approx([0.3 * MS])  # an exact batch's only
    assert len(worker_handoffs_s(rows.head(0))) == 0
