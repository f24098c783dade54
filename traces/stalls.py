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

from dataclasses import dataclass, replace

import numpy as np

from traces.profile import STATE_BLOCK_S

__all__ = ["STALL_MIN_RUN", "STALL_THRESHOLD", "StallEpisodes", "block_ratios", "find_stalls"]

STALL_THRESHOLD = 2.5  # a call slower than this times its block's median is slow
STALL_MIN_RUN = 2  # consecutive slow calls that make an episode


@dataclass(frozen=True)
class StallEpisodes:
    """The episodes found in ``watched_s`` seconds of ``calls`` timed calls whose median
    wall was ``median_s``: each one's start (its first call's, on the calls' clock), span
    (seconds) and factor (its calls' walls over their block's median)."""

    starts_s: np.ndarray
    spans_s: np.ndarray
    factors: np.ndarray
    watched_s: float
    calls: int
    median_s: float

    def only(self, keep: np.ndarray) -> StallEpisodes:
        """These episodes where ``keep`` (one bool each) holds; the same watch."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != self.starts_s.shape:
            raise ValueError("stalls: one keep flag per episode")
        return replace(
            self,
            starts_s=self.starts_s[keep],
            spans_s=self.spans_s[keep],
            factors=self.factors[keep],
        )

    def grown(self, steps: np.ndarray, gap_s: float) -> StallEpisodes:
        """These episodes, each grown over every step (``steps``: (start, end) rows) that
        overlaps it or lies within ``gap_s`` of it, again until none does; episodes that
        then overlap are one, at their factors' span-weighted mean. Why: a stall read from
        one thread's calls begins and ends where that thread's calls were slow, and the
        other thread's slow steps around it show where the stall really began or ended."""
        steps = np.asarray(steps, dtype=float).reshape(-1, 2)
        if not gap_s >= 0:
            raise ValueError(f"stalls: the gap to grow over must be >= 0, got {gap_s}")
        spans = []
        for t, span, f in zip(self.starts_s, self.spans_s, self.factors, strict=True):
            lo, hi = float(t), float(t + span)
            while True:
                near = (steps[:, 0] <= hi + gap_s) & (steps[:, 1] >= lo - gap_s)
                new_lo = min(lo, float(steps[near, 0].min(initial=lo)))
                new_hi = max(hi, float(steps[near, 1].max(initial=hi)))
                if (new_lo, new_hi) == (lo, hi):
                    break
                lo, hi = new_lo, new_hi
            spans.append([lo, hi, float(f)])
        merged: list[list[float]] = []
        for lo, hi, f in sorted(spans):
            if merged and lo <= merged[-1][1]:
                last = merged[-1]
                before, after = last[1] - last[0], hi - lo
                total = before + after
                last[2] = (last[2] * before + f * after) / total if total > 0 else max(last[2], f)
                last[1] = max(last[1], hi)
            else:
                merged.append([lo, hi, f])
        got = np.array(merged, dtype=float).reshape(-1, 3)
        return replace(self, starts_s=got[:, 0], spans_s=got[:, 1] - got[:, 0], factors=got[:, 2])

    @property
    def rate_hz(self) -> float:
        """Episodes per second watched."""
        return len(self.spans_s) / self.watched_s if self.watched_s > 0 else 0.0


def block_ratios(
    starts: np.ndarray,
    walls_s: np.ndarray,
    block_s: float = STATE_BLOCK_S,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """Each call's wall time over the median of the calls of its class (all one class
    where None) that started in the same block of ``block_s`` (blocks counted from the
    first start), in the calls' order: how many times its usual time it took."""
    starts = np.asarray(starts, dtype=float)
    walls = np.asarray(walls_s, dtype=float)
    kind = np.zeros(starts.shape, dtype=np.int64) if classes is None else np.asarray(classes)
    block = ((starts - starts.min()) // block_s).astype(np.int64)
    level = np.empty_like(walls)
    for b, k in {(int(b), int(k)) for b, k in zip(block, kind, strict=True)}:
        same = (block == b) & (kind == k)
        level[same] = np.median(walls[same])
    return walls / level


def find_stalls(
    starts: np.ndarray,
    walls_s: np.ndarray,
    block_s: float = STATE_BLOCK_S,
    threshold: float = STALL_THRESHOLD,
    min_run: int = STALL_MIN_RUN,
    bridge: int = 0,
    classes: np.ndarray | None = None,
) -> StallEpisodes:
    """The stall episodes among calls that started at ``starts`` and took ``walls_s``
    (module docstring). ``bridge``: slow calls with at most this many calls that are not
    slow between them belong to one episode (0: only consecutive ones), for calls whose
    usual wall time moves with their company, so that a call that ran alone inside a stall
    can stay under the threshold; an episode then needs ``min_run`` slow calls, its factor
    is theirs. ``classes``: an integer per call, its company (e.g. whether another thread
    was at work while it ran); each call is then compared with the median of its own class
    in its block, so that calls slowed by their company are not taken for a stall. Raises
    ValueError on mismatched or empty series, a non-positive wall or block, a threshold not
    above 1, a run shorter than one call or a negative bridge."""
    starts = np.asarray(starts, dtype=float)
    walls = np.asarray(walls_s, dtype=float)
    if starts.shape != walls.shape or starts.ndim != 1 or starts.size == 0:
        raise ValueError("stalls: one wall time per start, at least one call")
    kinds = np.zeros(starts.shape, dtype=np.int64) if classes is None else np.asarray(classes)
    if kinds.shape != starts.shape:
        raise ValueError("stalls: one class per call")
    if not (walls > 0).all() or not block_s > 0:
        raise ValueError("stalls: wall times and the block must be > 0")
    if not threshold > 1 or min_run < 1 or bridge < 0:
        raise ValueError(
            f"stalls: need threshold > 1, min_run >= 1 and bridge >= 0, got {threshold}, "
            f"{min_run}, {bridge}"
        )
    order = np.argsort(starts, kind="stable")
    origin = float(starts[order][0])
    t, w = starts[order] - origin, walls[order]
    ratio = block_ratios(starts, walls, block_s, kinds)[order]
    slow = np.flatnonzero(ratio > threshold)
    # a new episode where more than ``bridge`` calls that are not slow lie between two slow ones
    groups = [g for g in np.split(slow, np.flatnonzero(np.diff(slow) > bridge + 1) + 1) if g.size]
    groups = [g for g in groups if g.size >= min_run]
    firsts = np.array([g[0] for g in groups], dtype=np.int64)
    lasts = np.array([g[-1] for g in groups], dtype=np.int64)
    spans = t[lasts] + w[lasts] - t[firsts]
    factors = np.array([np.median(ratio[g]) for g in groups])
    return StallEpisodes(
        starts_s=t[firsts] + origin,
        spans_s=spans,
        factors=factors,
        watched_s=float(t[-1] + w[-1]),
        calls=int(w.size),
        median_s=float(np.median(w)),
    )
