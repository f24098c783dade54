"""The exact presolve of ``ilp``: independent segments, each proven combinatorially if it can be.

Cut nodes (comparable to every other node) split a graph into segments that every
topological order runs one after the other (:func:`scheduler.subproblem.cut_segments`);
under the graph/1 memory model each segment is an independent problem with a constant
offset (:func:`scheduler.subproblem.subproblem`), optimal segment orders concatenate
into an optimal order, and the optimum is the largest segment optimum. So:

* a single-node segment is forced: its step's memory is a lower bound of the whole graph;
* a segment whose incumbent peak is at most a proven bound of the whole graph needs no
  work (the whole graph cannot peak lower anyway);
* every other segment goes to :func:`scheduler.decide.descend_min_peak`, which either
  proves its incumbent optimal or leaves it open, with what it improved, for the ILP.

Each segment records ``how`` its bound was obtained, so that a result can say truthfully
what proved it optimal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from scheduler.decide import descend_min_peak, gcd_step
from scheduler.memory import simulate
from scheduler.subproblem import Subproblem, cut_segments, structural_lower_bound, subproblem
from traces.graph import GraphIndex

__all__ = ["Presolved", "SegmentState", "presolve"]

PROVED_BY_SEARCH = "decision search"
MEETS_BOUND = "meets a proven bound"
FORCED = "forced step (single-node segment)"


@dataclass(slots=True)
class SegmentState:
    """One segment: ``order`` (full-graph indices) peaks at ``peak_bytes`` (full-graph
    memory, offset included); ``bound_bytes`` is a proven lower bound of this segment's
    optimum or, where higher, of the whole graph's (the search is told to stop there);
    ``how`` says where the bound comes from; ``open`` is True while the bound
    is below the peak and the peak is above the whole graph's bound. ``sub`` is the
    segment as a graph of its own (None for a single node) and ``local`` the current
    order in its indices, once the search has run."""

    nodes: int
    order: np.ndarray
    peak_bytes: int
    bound_bytes: int
    how: str
    sub: Subproblem | None = None
    local: np.ndarray | None = None
    seconds_s: float = 0.0
    states: int = 0
    open: bool = False


@dataclass(slots=True)
class Presolved:
    """Segments in execution order and the proven bound of the whole graph."""

    segments: list[SegmentState] = field(default_factory=list)
    bound_bytes: int = 0

    @property
    def order(self) -> np.ndarray:
        """The concatenated order (full-graph indices)."""
        if not self.segments:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([s.order for s in self.segments])

    @property
    def peak_bytes(self) -> int:
        return max((s.peak_bytes for s in self.segments), default=0)


def presolve(
    index: GraphIndex,
    incumbent: np.ndarray,
    *,
    lower_bound_bytes: int = 0,
    deadline_s: float,
    search_share: float = 0.75,
) -> Presolved:
    """Cut ``index`` into segments and prove as many as the time allows.

    ``incumbent``: a topological order (indices); ``lower_bound_bytes``: a proven bound
    of the whole graph; each open segment's search may use ``search_share`` of the time
    left before ``deadline_s`` (a :func:`time.perf_counter` instant), segments holding
    the higher peak first.
    """
    n = index.n_nodes
    out = Presolved(bound_bytes=max(int(lower_bound_bytes), structural_lower_bound(index)))
    if n == 0:
        return out
    segments = cut_segments(index)
    pos = np.empty(n, dtype=np.int64)
    pos[np.asarray(incumbent, dtype=np.int64)] = np.arange(n)
    order = np.concatenate([np.array(sorted(s, key=lambda v: pos[v])) for s in segments])
    prof = simulate(index, order)
    lifetimes = (prof.alloc_step, prof.free_step)
    at = 0
    for seg in segments:
        k = len(seg)
        peak = int(prof.timeline_bytes[at : at + k].max())
        state = SegmentState(k, order[at : at + k], peak, peak if k == 1 else 0, FORCED)
        if k > 1:
            state.sub = subproblem(index, order, at, at + k, lifetimes=lifetimes)
            sub = state.sub
            state.bound_bytes = structural_lower_bound(sub.index) + sub.offset_bytes
            state.how = "structural bound"
        out.bound_bytes = max(out.bound_bytes, state.bound_bytes)
        out.segments.append(state)
        at += k
    step = gcd_step(index)
    for state in sorted(out.segments, key=lambda s: -s.peak_bytes):
        if state.sub is None or state.peak_bytes <= max(state.bound_bytes, out.bound_bytes):
            if state.peak_bytes <= state.bound_bytes and state.sub is not None:
                state.how = f"incumbent meets the {state.how}"
            elif state.sub is not None:
                state.how = MEETS_BOUND
            continue
        t0 = time.perf_counter()
        sub = state.sub
        left = deadline_s - t0
        res = descend_min_peak(
            sub.index,
            np.arange(state.nodes, dtype=np.int64),
            lower_bound=max(state.bound_bytes, out.bound_bytes) - sub.offset_bytes,
            step_bytes=step,
            deadline_s=t0 + max(0.0, search_share * left),
        )
        state.seconds_s = time.perf_counter() - t0
        state.states = res.states
        state.local = np.asarray(res.order, dtype=np.int64)
        state.order = sub.nodes[state.local]
        state.peak_bytes = res.peak_bytes + sub.offset_bytes
        if res.complete and res.proof != "-":  # a "no" below the final peak: its optimum
            state.bound_bytes = state.peak_bytes
            state.how = f"{PROVED_BY_SEARCH} ({res.proof})"
            out.bound_bytes = max(out.bound_bytes, state.bound_bytes)
        elif res.complete:
            state.how = MEETS_BOUND
        else:
            state.open = True
            state.how = "open"
    return out
