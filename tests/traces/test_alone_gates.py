"""The gates that ran alone (traces.alone_gates): a worked-out timeline by hand, and random
records against a brute-force reading of the definition, request by request."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from traces.alone_gates import (
    alone_combines_s,
    alone_expert_calls_s,
    alone_gates_s,
    gate_company,
    worker_steps,
)

MS = 1e-3


def _rows(
    requests: list[tuple[float, float, float, float, float, bool]],
    items: list[tuple[int, int]],
    batches: dict[int, tuple[float, float]],
) -> pl.DataFrame:
    """Records with the columns the reader takes: ``requests`` (arrival, gate start, gate
    done, combine start, complete, warm-up) by index, ``items`` (request, batch) one row
    each, ``batches`` batch -> (start, end)."""
    cols = ("arrival_s", "gate_start_s", "gate_done_s", "combine_start_s", "complete_s")
    out = []
    for r, b in items:
        rec = dict(zip(cols, requests[r][:5], strict=True))
        start, end = batches[b]
        out.append(
            {"request": r, **rec, "warmup": requests[r][5], "batch": b, "batch_size": 1}
            | {"batch_start_s": start, "batch_end_s": end}
        )
    return pl.DataFrame(out)


def test_a_timeline_by_hand() -> None:
    """Request 0 is warm-up; 1 runs alone (woken, nothing else running); 2's gate overlaps
    1's batch; 3 arrives while 2's gate runs (not woken); 4 runs alone 0.5 ms after the
    host's last work (3's combine); 5 runs alone after 4 ms of idle host (cold)."""
    requests = [
        (0.0, 0.0, 1.0, 2.0, 2.5, True),
        (3.0, 3.0, 4.0, 5.0, 5.5, False),  # alone: 1.0 ms, last work 2.5 (0.5 ms before)
        (4.5, 4.5, 5.2, 6.0, 6.5, False),  # overlaps batch 1 (4.0-5.0)
        (5.1, 5.2, 5.9, 7.0, 7.5, False),  # arrived before 2's gate was done
        (8.0, 8.0, 8.8, 9.0, 9.2, False),  # alone, 0.5 ms after 7.5: 0.8 ms
        (13.2, 13.2, 13.9, 14.0, 14.1, False),  # alone, 4 ms after 9.2: 0.7 ms
    ]
    items = [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    batches = {0: (1.0, 2.0), 1: (4.0, 5.0), 2: (5.2, 6.0), 3: (5.9, 7.0), 4: (8.8, 9.0)}
    batches[5] = (13.9, 14.0)
    scaled = [tuple(v * MS if isinstance(v, float) else v for v in r) for r in requests]
    rows = _rows(scaled, items, {b: (s * MS, e * MS) for b, (s, e) in batches.items()})
    assert alone_gates_s(rows) == pytest.approx([1.0 * MS, 0.8 * MS, 0.7 * MS])
    assert alone_gates_s(rows, warm_within_s=1 * MS) == pytest.approx([1.0 * MS, 0.8 * MS])
    assert alone_gates_s(rows, warm_within_s=0.1 * MS).size == 0
    # row order does not matter, nor requests spread over several rows (k > 1)
    shuffled = pl.concat([rows, rows.filter(pl.col("request") == 4)]).sample(fraction=1.0, seed=1)
    assert alone_gates_s(shuffled) == pytest.approx([1.0 * MS, 0.8 * MS, 0.7 * MS])
    assert alone_gates_s(rows.head(0)).size == 0
    # the expert calls with no gate running: batch 0 is warm-up; 1 (4.0-5.0) overlaps request
    # 2's gate, 2 (5.2-6.0) request 3's; 3 (5.9-7.0) starts as 3's gate is done; 4 and 5 too
    assert alone_expert_calls_s(rows) == pytest.approx([1.1 * MS, 0.2 * MS, 0.1 * MS])
    assert alone_expert_calls_s(shuffled) == pytest.approx([1.1 * MS, 0.2 * MS, 0.1 * MS])
    assert alone_expert_calls_s(rows.head(0)).size == 0
    # the combines with no gate running, in request order: 0 is warm-up; 1's (5.0-5.5)
    # overlaps 2's gate (4.5-5.2); the others ran with no gate
    assert alone_combines_s(rows) == pytest.approx([0.5 * MS, 0.5 * MS, 0.2 * MS, 0.1 * MS])
    assert alone_combines_s(shuffled) == pytest.approx([0.5 * MS, 0.5 * MS, 0.2 * MS, 0.1 * MS])
    assert alone_combines_s(rows.head(0)).size == 0
    # every expert call and combine, warm-up too, over its kind's median (0.9 and 0.5 ms)
    spans, ratios = worker_steps(shuffled)
    order = np.lexsort((spans[:, 1], spans[:, 0]))
    calls = [(b[0] * MS, b[1] * MS, (b[1] - b[0]) / 0.9) for b in batches.values()]
    combines = [(r[3] * MS, r[4] * MS, (r[4] - r[3]) / 0.5) for r in requests]
    want = sorted(calls + combines)
    assert np.column_stack([spans, ratios])[order] == pytest.approx(np.array(want))
    assert worker_steps(rows.head(0))[0].shape == (0, 2)
    # every gate's company (warm-up too): 2's gate (4.5-5.2) has batch 1 to 5.0, then 1's
    # combine; 3's (5.2-5.9) batch 2 throughout; the others ran alone
    starts, walls, shares = gate_company(shuffled)
    assert starts == pytest.approx([r[1] * MS for r in requests])
    assert walls == pytest.approx([(r[2] - r[1]) * MS for r in requests])
    assert shares == pytest.approx([0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    assert all(x.size == 0 for x in gate_company(rows.head(0)))


def _brute(
    req: list[tuple[float, float, float, float, float, bool]],
    busy: list[tuple[float, float]],
    warm_within_s: float | None,
) -> list[float]:
    """The definition, one request at a time."""
    out = []
    for i, (arrival, start, done, _, _, warmup) in enumerate(req):
        previous = req[i - 1][2] if i else -np.inf
        woken = arrival > previous
        overlapped = any(s < done and e > start for s, e in busy)
        if warmup or not woken or overlapped:
            continue
        if warm_within_s is not None:
            last = max([previous] + [min(e, start) for s, e in busy if s < start])
            if start - last > warm_within_s:
                continue
        out.append(done - start)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_random_records_against_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    arrival = np.cumsum(rng.exponential(1.0, n))
    req, done_prev = [], -np.inf
    for i in range(n):
        start = max(arrival[i], done_prev) + rng.exponential(0.05)
        done = start + rng.uniform(0.1, 0.5)
        combine = done + rng.uniform(0.2, 2.0)
        req.append((arrival[i], start, done, combine, combine + 0.1, i < 5))
        done_prev = done
    batches = {}
    items = []
    for i, r in enumerate(req):
        for _ in range(int(rng.integers(1, 3))):  # k = 1 or 2 rows
            b = len(batches)
            s = r[2] + rng.uniform(0.0, 1.5)
            batches[b] = (s, s + rng.uniform(0.05, 0.6))
            items.append((i, b))
    rows = _rows(req, items, batches)
    busy = list(batches.values()) + [(r[3], r[4]) for r in req]
    for warm in (None, 0.3, 1.0):
        expected = _brute(req, busy, warm)
        assert alone_gates_s(rows, warm) == pytest.approx(expected), warm
    assert len(_brute(req, busy, None)) > 3  # the draw has some of each
    gates = [(r[1], r[2]) for r in req]  # warm-up's too
    calls = sorted((s, e) for b, (s, e) in batches.items() if not req[items[b][0]][5])
    assert alone_expert_calls_s(rows) == pytest.approx(_without_gates(calls, gates))
    combines = [(r[3], r[4]) for r in req if not r[5]]
    assert alone_combines_s(rows) == pytest.approx(_without_gates(combines, gates))
    assert 0 < len(_without_gates(combines, gates)) < len(combines)  # some of each
    spans, ratios = worker_steps(rows)
    call_walls = [e - s for s, e in batches.values()]
    comb_walls = [r[4] - r[3] for r in req]
    want = [(s, e, (e - s) / np.median(call_walls)) for s, e in batches.values()]
    want += [(r[3], r[4], (r[4] - r[3]) / np.median(comb_walls)) for r in req]
    order = np.lexsort((spans[:, 1], spans[:, 0]))
    assert np.column_stack([spans, ratios])[order] == pytest.approx(np.array(sorted(want)))
    _, _, shares = gate_company(rows)
    expected_share = [_busy_share(busy, r[1], r[2]) for r in req]
    assert shares == pytest.approx(expected_share)
    assert 0.0 < np.mean(shares) < 1.0 and ((shares > 0) & (shares < 1)).any()


def _busy_share(busy: list[tuple[float, float]], start: float, done: float) -> float:
    """The part of [start, done] some busy interval covers: the covered pieces clipped to
    it, merged one by one."""
    pieces = sorted((max(s, start), min(e, done)) for s, e in busy if s < done and e > start)
    covered, reach = 0.0, start
    for s, e in pieces:
        if e > reach:
            covered += e - max(s, reach)
            reach = e
    return covered / (done - start)


def _without_gates(
    intervals: list[tuple[float, float]], gates: list[tuple[float, float]]
) -> list[float]:
    """The lengths of the ``intervals`` no gate overlaps, one pair at a time."""
    return [e - s for s, e in intervals if not any(gs < e and gd > s for gs, gd in gates)]
