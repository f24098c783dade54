"""The machine's stalls: spells of a few milliseconds in which every thread runs several
times slower, found in a series of timed calls of one kind.

Why: on this 2-core VM the whole machine now and then crawls for 2-20 ms (the
hypervisor runs something else on the cores): in a ``hw serve`` run at B = 1 every gate,
expert call and hand-off inside such a spell takes 3-5 times its usual wall time, and
the requests that arrive meanwhile queue behind them. About 1 % of requests meet one, so
the stalls set a run's p99 (``benchmarks/README.md``, "Fidelity, session 20"). The
machine's state process (:mod:`sim.machine_state`) reads window medians and cannot see
them; the spells per chain are drawn independently per window and make no such runs.

How: the calls fall into blocks of ``block_s`` (the state's blocks); a call is slow when
it took more than :data:`STALL_THRESHOLD` times its block's median. One slow call can be
the call's own noise (a gate's p99 is about twice its median), so an episode is a run of
at least :data:`STALL_MIN_RUN` consecutive slow calls; its span runs from the first
one's start to the last one's end, its factor is the median of its calls' walls over
their block's median. Shared because ``hw profile`` reads its state chains with it
(``stall_*`` rows) and a measured run can be read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traces.profile import STATE_BLOCK_S

__all__ = ["STALL_MIN_RUN", "STALL_THRESHOLD", "StallEpisodes", "find_stalls"]

STALL_THRESHOLD = 2.5  # a call slower than this times its block's median is slow
STALL_MIN_RUN = 2  # consecutive slow calls that make an episode


@dataclass(frozen=True)
class StallEpisodes:
    """The episodes found in ``watched_s`` seconds of ``calls`` timed calls whose median
    wall was ``median_s``: each one's span (seconds) and factor (its calls' walls over
    their block's median)."""

    spans_s: np.ndarray
    factors: np.ndarray
    watched_s: float
    calls: int
    median_s: float

    @property
    def rate_hz(self) -> float:
        """Episodes per second watched."""
        return len(self.spans_s) / self.watched_s if self.watched_s > 0 else 0.0


def find_stalls(
    starts: np.ndarray,
    walls_s: np.ndarray,
    block_s: float = STATE_BLOCK_S,
    threshold: float = STALL_THRESHOLD,
    min_run: int = STALL_MIN_RUN,
) -> StallEpisodes:
    """The stall episodes among calls that started at ``starts`` and took ``walls_s``
    (module docstring). Raises ValueError on mismatched or empty series, a non-positive
    wall or block, a threshold not above 1 or a run shorter than one call."""
    starts = np.asarray(starts, dtype=float)
    walls = np.asarray(walls_s, dtype=float)
    if starts.shape != walls.shape or starts.ndim != 1 or starts.size == 0:
        raise ValueError("stalls: one wall time per start, at least one call")
    if not (walls > 0).all() or not block_s > 0:
        raise ValueError("stalls: wall times and the block must be > 0")
    if not threshold > 1 or min_run < 1:
        raise ValueError(f"stalls: need threshold > 1 and min_run >= 1, got {threshold}, {min_run}")
    order = np.argsort(starts, kind="stable")
    t, w = starts[order] - starts[order][0], walls[order]
    block = (t // block_s).astype(np.int64)
    level = np.empty_like(w)
    for b in np.unique(block):
        level[block == b] = np.median(w[block == b])
    ratio = w / level
    slow = np.concatenate([[False], ratio > threshold, [False]]).astype(np.int8)
    edges = np.diff(slow)
    firsts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # [first, end)
    keep = ends - firsts >= min_run
    firsts, ends = firsts[keep], ends[keep]
    spans = t[ends - 1] + w[ends - 1] - t[firsts]
    factors = np.array([np.median(ratio[a:b]) for a, b in zip(firsts, ends, strict=True)])
    return StallEpisodes(
        spans_s=spans,
        factors=factors,
        watched_s=float(t[-1] + w[-1]),
        calls=int(w.size),
        median_s=float(np.median(w)),
    )
