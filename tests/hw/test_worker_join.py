"""`hw profile`'s woken-worker measurement (hw.profiling.worker_join): which pairs count, early
or late, joined or waited, the rows, and the server's threads fed open loop."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hw.profiling.worker_join import JoinCase, join_cases, join_pairs, join_rows
from traces.profile import JOIN_EARLY_JOINED, JOIN_LATE_JOINED, JOIN_LATE_WAITED


def test_pairs_count_by_where_the_second_arrival_came_and_when_the_worker_ran() -> None:
    """One step per request. Pair (0, 1): the second put (0.05) before gate 0 starts (0.1):
    early; request 0's step starts at 0.3, inside gate 1 (0.25-0.6): joined. Pair (2, 3):
    the second put (1.2) while gate 2 runs (1.1-1.3): late; the step starts at 1.7, after gate
    3's end (1.6): waited. Pair (4, 5): the second put (2.5) after gate 4's end (2.3): the
    gate did not go on, not counted. Pair (6, 7): the worker still on request 5 (to 3.45)
    when gate 6 ends (3.4): not counted."""
    puts = np.array([0.0, 0.05, 1.0, 1.2, 2.0, 2.5, 3.0, 3.05])
    gates = np.array(
        [(0.1, 0.25), (0.25, 0.6), (1.1, 1.3), (1.3, 1.6), (2.1, 2.3), (2.5, 2.7), (3.1, 3.4),
         (3.4, 3.6)]
    )  # fmt: skip
    starts = [0.3, 0.7, 1.7, 1.8, 2.4, 2.75, 3.5, 3.7]
    steps = np.array([(s, s + 0.05) for s in starts])
    steps[5, 1] = 3.45  # request 5's step runs long
    cases = join_cases(gates, steps, puts, 1)
    assert cases == [
        JoinCase(True, True, pytest.approx(0.35)),
        JoinCase(False, False, pytest.approx(0.3)),
    ]
    rows = join_rows([*cases, JoinCase(False, True, 0.5)])
    assert set(rows) == {JOIN_EARLY_JOINED, JOIN_LATE_JOINED, JOIN_LATE_WAITED}
    assert rows[JOIN_EARLY_JOINED].samples == 1
    assert rows[JOIN_LATE_JOINED].median_s == pytest.approx(0.5)


def test_the_pairs_run_the_servers_threads_open_loop() -> None:
    """Sleeping calls (no interpreter lock held): gates of 2 ms, steps of 0.5 ms. Both cases
    occur; an early pair's second arrival came before its first gate, a late one's while it
    ran; a worker that needs no lock runs during the next gate."""
    cases = join_pairs(
        lambda: time.sleep(2e-3), (lambda: time.sleep(5e-4),), pairs=24, seed=3, visits=2
    )
    early = [c for c in cases if c.early]
    late = [c for c in cases if not c.early]
    assert early and late
    assert all(c.wall_s >= 2e-3 for c in cases)
    assert np.mean([c.joined for c in cases]) > 0.5
