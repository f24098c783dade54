"""`hw profile`'s gate preemption (hw.profiling.preemption): which gates count, held or
shared, the work per request, the rows, and the server's threads fed open loop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from hw.profiling.preemption import PreemptLevel, _busy, level_rows, preempt_levels
from traces.profile import (
    PREEMPT_BUSY,
    PREEMPT_HANDOFF,
    PREEMPT_HELD,
    PREEMPT_SHARED,
    PREEMPT_WALL,
)


def test_woken_gates_inside_a_worker_step_count_held_or_shared() -> None:
    """Gate 0 starts with no step running; gate 1 is woken inside a step that outlasts it
    (held); gate 2 goes straight on from gate 1 (5 µs later: not woken, not counted); gate
    3 is woken inside a step that ends before it (shared)."""
    steps = np.array([(1.0, 1.1), (1.1, 1.5), (1.5, 1.6)])
    gates = np.array([(0.0, 0.9), (1.2, 1.4), (1.400005, 1.45), (1.58, 1.7)])
    level = PreemptLevel(1e-3, gates, steps, 1.0, 2.0, 4)
    held, shared = level.split()
    assert held.tolist() == pytest.approx([0.2])
    assert shared.tolist() == pytest.approx([0.12])
    empty = PreemptLevel(1e-3, gates, np.zeros((0, 2)), 1.0, 2.0, 4)
    assert [len(x) for x in empty.split()] == [0, 0]


def test_the_busy_handoffs_are_those_of_waiting_gates_woken_while_a_step_was_at_work() -> None:
    """Arrival 0 at 0 (no step yet); arrival 1 at 1.15, inside the step 1.1-1.5, its gate
    idle since 0.9: counted, 0.05; arrival 2 at 1.40001, 10 µs after gate 1's end: the gate
    had not gone back to its inbox yet (not counted); arrival 3 at 1.55, inside the step
    1.5-1.6: counted, 0.03; arrival 4 at 1.8, no step at work: not counted."""
    steps = np.array([(1.0, 1.1), (1.1, 1.5), (1.5, 1.6)])
    gates = np.array([(0.0, 0.9), (1.2, 1.4), (1.40002, 1.45), (1.58, 1.7), (1.81, 1.9)])
    puts = np.array([0.0, 1.15, 1.40001, 1.55, 1.8])
    level = PreemptLevel(1e-3, gates, steps, 1.0, 2.0, 5, puts)
    assert level.busy_handoffs().tolist() == pytest.approx([0.05, 0.03])
    assert len(PreemptLevel(1e-3, gates, steps, 1.0, 2.0, 5).busy_handoffs()) == 0
    rows = level_rows(level)
    assert rows[PREEMPT_HANDOFF][1].samples == 2
    assert rows[PREEMPT_HANDOFF][1].median_s == pytest.approx(0.04)
    none_busy = level_rows(PreemptLevel(1e-3, gates, steps, 1.0, 2.0, 5, puts + 5.0))
    assert PREEMPT_HANDOFF not in none_busy


def test_the_busy_time_is_the_union_of_the_gates_and_worker_runs() -> None:
    # apart: gates 0-1 and 2-3, runs 1.2-1.8 and 3.1-4.0 (two steps each)
    gates = np.array([(0.0, 1.0), (2.0, 3.0)])
    steps = np.array([(1.2, 1.5), (1.5, 1.8), (3.1, 3.3), (3.3, 4.0)])
    assert _busy(gates, steps, 2) == pytest.approx(3.5)
    # overlapping: gate 1 (1.5-2.5) during run 0 (1.2-2.0)
    gates = np.array([(0.0, 1.0), (1.5, 2.5)])
    steps = np.array([(1.2, 1.6), (1.6, 2.0), (2.6, 2.8), (2.8, 3.0)])
    assert _busy(gates, steps, 2) == pytest.approx(1.0 + 1.3 + 0.4)


def test_a_levels_rows_carry_its_counts_work_and_idle_time() -> None:
    """idle_s = the level's mean gap on every row; held and shared rows only where a gate
    fell in that case; busy and wall time per request (wall never below busy)."""
    steps = np.array([(1.0, 1.1), (1.1, 1.5), (1.5, 1.6)])
    gates = np.array([(0.0, 0.9), (1.2, 1.4), (1.58, 1.7)])
    rows = level_rows(PreemptLevel(2e-3, gates, steps, 4.0, 10.0, 4))
    assert set(rows) == {PREEMPT_BUSY, PREEMPT_WALL, PREEMPT_HELD, PREEMPT_SHARED}
    assert all(idle == 2e-3 for idle, _ in rows.values())
    busy, wall = rows[PREEMPT_BUSY][1], rows[PREEMPT_WALL][1]
    assert busy.samples == wall.samples == 4
    assert busy.median_s == pytest.approx(1.0) and wall.median_s == pytest.approx(2.5)
    assert rows[PREEMPT_HELD][1].samples == 1 and rows[PREEMPT_SHARED][1].samples == 1
    alone = level_rows(PreemptLevel(1e-2, gates[:1], steps, 3.0, 2.9, 2))
    assert set(alone) == {PREEMPT_BUSY, PREEMPT_WALL}
    assert alone[PREEMPT_WALL][1].median_s == alone[PREEMPT_BUSY][1].median_s == 1.5


def test_the_levels_run_the_servers_threads_open_loop() -> None:
    """Each level gets its pairs (two requests each) through a gate thread and a worker
    thread, neither the caller's; every request's steps are stamped back to back; the
    caller never waits between arrivals, so gates queue while the worker runs."""
    seen: dict[str, set[int]] = {"gate": set(), "step": set()}

    def gate() -> None:
        seen["gate"].add(threading.get_ident())
        time.sleep(1e-3)

    def step() -> None:
        seen["step"].add(threading.get_ident())
        time.sleep(5e-4)

    levels = preempt_levels(gate, (step, step), pairs=4, gaps_s=(1e-4, 2e-3), visits=2, seed=1)
    assert len(levels) == 2
    me = threading.get_ident()
    assert len(seen["gate"]) == 1 and len(seen["step"]) == 1
    assert me not in seen["gate"] | seen["step"] and seen["gate"] != seen["step"]
    for level in levels:
        assert level.requests == 8 and level.gates.shape == (8, 2) and level.steps.shape == (16, 2)
        assert (np.diff(level.gates[:, 0]) > 0).all()  # one gate thread, in order
        runs = level.steps.reshape(8, 2, 2)
        assert (runs[:, 1, 0] == runs[:, 0, 1]).all()  # back to back within a request
        assert (level.gates[:, 1] - level.gates[:, 0] >= 1e-3).all()
        assert level.busy_s >= 8e-3  # eight gates, one at a time
        assert level.span_s >= level.busy_s
        assert level.puts is not None and level.puts.shape == (8,)
        assert (level.puts <= level.gates[:, 0]).all()  # each arrival before its gate
        runs_in_visit = level.puts.reshape(2, 4)  # two visits of two pairs, put in order
        assert (np.diff(runs_in_visit, axis=1) > 0).all()


def test_an_error_in_either_thread_reaches_the_caller() -> None:
    def broken() -> None:
        raise RuntimeError("gate broke")

    with pytest.raises(RuntimeError, match="gate broke"):
        preempt_levels(broken, (lambda: None,), pairs=2, gaps_s=(1e-4,), visits=1)

    def bad_step() -> None:
        raise ValueError("step broke")

    with pytest.raises(ValueError, match="step broke"):
        preempt_levels(lambda: None, (bad_step,), pairs=2, gaps_s=(1e-4,), visits=1)
