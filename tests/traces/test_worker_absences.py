"""The spells a run's device workers sat out with a batch ready (traces.worker_absences): a
worked-out timeline by hand, the threshold, and each device by its own worker."""

from __future__ import annotations

import polars as pl
import pytest

from traces.worker_absences import ready_gaps, worker_absences

MS = 1e-3

# request: arrival, gate start, gate done, batch formed, batch start, batch end, combine start,
# complete (ms); one batch of one per request, gates of 0.4 ms. Requests 3-5 come in a burst
# and the gate goes straight on through them; the worker, free from 4.72, starts request 3's
# batch (formed 4.84) only at 5.8: a ready gap of 0.96 ms, over two gates.
TIMELINE = [
    (0.0, 0.02, 0.42, 0.42, 0.5, 0.6, 0.6, 0.7),  # ready gap 0.08 (from its forming)
    (2.0, 2.02, 2.42, 2.42, 2.5, 2.6, 2.6, 2.7),  # 0.08
    (4.0, 4.02, 4.42, 4.42, 4.52, 4.62, 4.62, 4.72),  # 0.10
    (4.1, 4.44, 4.84, 4.84, 5.8, 5.9, 5.9, 6.0),  # 0.96 from 4.84: the absence
    (4.2, 4.86, 5.26, 5.26, 6.08, 6.18, 6.18, 6.28),  # 0.08 from the worker's 6.0
    (4.3, 5.28, 5.68, 5.68, 6.36, 6.46, 6.46, 6.56),  # 0.08 from 6.28
]


def _rows(timeline: list[tuple[float, ...]], device: int = 0, first: int = 0) -> pl.DataFrame:
    cols = ("arrival_s", "gate_start_s", "gate_done_s", "batch_formed_s", "batch_start_s")
    cols += ("batch_end_s", "combine_start_s", "complete_s")
    return pl.DataFrame(
        [
            dict(zip(cols, (t * MS for t in times), strict=True))
            | {"request": first + r, "batch": first + r, "combine_batch": first + r}
            | {"device": device, "warmup": r == 0}
            for r, times in enumerate(timeline)
        ]
    )


def test_a_timeline_by_hand() -> None:
    rows = _rows(TIMELINE)
    gaps = ready_gaps(rows)
    assert gaps.gaps_s == pytest.approx([g * MS for g in (0.08, 0.08, 0.1, 0.96, 0.08, 0.08)])
    assert gaps.ready_s == pytest.approx([t * MS for t in (0.42, 2.42, 4.42, 4.84, 6.0, 6.28)])
    got = worker_absences(rows)
    # over 2 x the median gate (0.8 ms): request 3's, less the median ready gap (0.08)
    assert got.devices.tolist() == [0]
    assert got.starts_s == pytest.approx([4.84 * MS])
    assert got.spans_s == pytest.approx([0.88 * MS])
    assert got.rate_hz == pytest.approx(1 / (6.56 * MS))
    # row order and a request's several rows (k > 1) do not matter
    shuffled = pl.concat([rows, rows.filter(pl.col("request") == 3)]).sample(fraction=1.0, seed=1)
    again = worker_absences(shuffled)
    assert again.starts_s == pytest.approx(got.starts_s)
    assert again.spans_s == pytest.approx(got.spans_s)


def test_a_gap_within_the_threshold_is_no_absence() -> None:
    rows = _rows(TIMELINE)
    assert len(worker_absences(rows, gates=2.5).starts_s) == 0  # 0.96 < 2.5 x 0.4 ms
    assert len(worker_absences(rows, gates=1.0).starts_s) == 1
    empty = worker_absences(rows.head(0))
    assert len(empty.starts_s) == 0 and empty.rate_hz == 0.0


def test_each_device_has_its_own_worker() -> None:
    """Device 1's worker ran its batch on time while device 0's sat out: the gap is measured
    from device 1's own previous job, and device 0's absence is found as before."""
    other = [
        (4.1, 4.44, 4.84, 4.84, 4.9, 5.0, 5.0, 5.1),  # device 1: 0.06 ready gap
    ]
    rows = pl.concat([_rows(TIMELINE), _rows(other, device=1, first=len(TIMELINE))])
    gaps = ready_gaps(rows)
    assert gaps.devices.tolist() == [0] * 6 + [1]
    assert gaps.gaps_s[-1] == pytest.approx(0.06 * MS)
    got = worker_absences(rows)
    assert got.devices.tolist() == [0] and got.starts_s == pytest.approx([4.84 * MS])
    # the same timeline on both devices: each worker's absence once, in start order
    late = [tuple(t + 0.5 for t in times) for times in TIMELINE]
    both = worker_absences(pl.concat([_rows(TIMELINE), _rows(late, 1, len(TIMELINE))]))
    assert both.devices.tolist() == [0, 1]
    assert both.starts_s == pytest.approx([4.84 * MS, 5.34 * MS])
