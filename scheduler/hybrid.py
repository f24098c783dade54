"""The ``hybrid`` strategy: divide and conquer around exactly solved cores.

Phases (times and sizes land in ``ScheduleResult.details``):

1. **Candidates** (:mod:`scheduler.candidates`): the given order (when topological),
   Inductor's ``lpmf``/``bfs``/``dfs`` and the series-parallel algorithm (the SP order
   when the graph is SP, else its irreducible core serialized). The best is the
   incumbent, so the result is never worse than any of them.
2. **SP macro tasks.** On a non-SP graph every SP part of the irreducible core keeps
   the internal order the SP algorithm gives it, and an exact search
   (:mod:`scheduler.downset`) finds the best interleaving of these chains with the
   core's nodes.
3. **Segments.** Cut nodes (comparable to every other node) split the graph into
   segments that every topological order runs one after the other; under the graph/1
   model each segment is an independent problem (:func:`scheduler.subproblem.subproblem`).
   Each segment is a *core* solved exactly: the descending decision search
   (:mod:`scheduler.decide`) for half of its time, the best-first search (whose
   truncated queue still proves a bound) for the other half, then the ILP
   (:mod:`scheduler.ilp`) on what is left unproven and small enough. Optimal
   segment orders concatenate into an optimal order, and the largest segment bound is a
   bound for the whole graph.
4. **Windows.** The incumbent is improved by re-solving, exactly, windows of
   consecutive steps around its peak (the steps outside a window keep their memory, so
   this never makes the peak worse), until no window helps or the time is up.

``optimal`` is true only when the peak meets a proven bound: every segment holding the
peak was solved exactly, or the bound met the peak otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.candidates import candidate_orders
from scheduler.decide import descend_min_peak, gcd_step
from scheduler.downset import search_min_peak
from scheduler.ilp import solve_index
from scheduler.memory import check_order, order_indices, simulate, trivial_lower_bound
from scheduler.result import ScheduleResult, finish_result
from scheduler.sp import Recognition
from scheduler.subproblem import cut_segments, structural_lower_bound, subproblem
from traces.errors import DeltasimError
from traces.graph import Graph, GraphIndex

__all__ = ["schedule_hybrid"]

SEARCH_STATES = 60_000
"""State budget of the exact search on one segment."""
MACRO_MAX_NODES = 3_000
"""Larger graphs skip the SP macro-task search (it rarely finishes there; measured: no
gain on 10^4-node transformer and layered graphs for ~20% of the budget)."""
SEARCH_MAX_NODES = 1_000
"""Larger segments skip the whole-segment search and go to the windows."""
DESCENT_MAX_NODES = 300
"""Largest segment given to the decision search first. On larger ones it rarely proves
anything, and its order was a worse start for the windows than the heuristics' (measured
on the 1,000-node layered graph at 30 s: 5.49 MiB against 4.95 MiB)."""
ILP_MAX_NODES = 120
"""Largest unproven segment handed to the ILP."""
WINDOW_NODES = (16, 32, 64, 128, 256)
"""Window sizes tried around a peak step, smallest first."""
WINDOW_STATES = 20_000
"""State budget of the exact search on one window."""


@dataclass(frozen=True, slots=True)
class _Solved:
    """One segment's order (full-graph indices), its peak and its proven bound."""

    order: np.ndarray
    peak_bytes: int
    bound_bytes: int
    how: str


def _sp_macro(
    graph: Graph, rec: Recognition, upper: int, lower: int, deadline: float
) -> np.ndarray | None:
    """Exact search over the irreducible core with every SP part as a macro task.

    Each composite core edge (an SP subgraph) keeps the internal order the SP algorithm
    gives it (chained by extra dependencies); the search then finds the best
    interleaving of these chains and the core's own nodes. Returns an order strictly
    below ``upper``, or None (none exists in this restricted space, or the budget ran
    out). Restricted, so never a proof of optimality for the whole graph.
    """
    from scheduler.sp_order import schedule_tree, task_weights

    if rec.is_sp or len(graph) > MACRO_MAX_NODES:
        return None
    index = graph.index
    _, high = task_weights(graph, rec.task)
    chained: list[np.ndarray] = []
    for edge in rec.core.edges:
        if edge.tree.kind == "edge":
            continue
        inner = schedule_tree(edge.tree, high).order
        if len(inner) > 1:
            chained.append(np.stack([inner[:-1], inner[1:]], axis=1))
    if not chained:
        return None
    deps = np.stack([index.dep_src, index.dep_dst], axis=1)
    restricted = GraphIndex.from_arrays(
        index.workspace,
        index.buf_size,
        index.buf_producer,
        index.cons_ptr,
        index.cons_idx,
        buf_pinned=index.buf_pinned,
        extra_edges=np.concatenate([deps, *chained]).astype(np.int64),
    )
    res = search_min_peak(
        restricted,
        lower_bound=lower,
        upper_bound=upper,
        max_states=SEARCH_STATES,
        deadline_s=deadline,
    )
    if res.order is None:
        return None
    return np.asarray(res.order, dtype=np.int64)


def _solve_segment(
    index: GraphIndex,
    order: np.ndarray,
    start: int,
    stop: int,
    lifetimes: tuple[np.ndarray, np.ndarray],
    timeline: np.ndarray,
    deadline: float,
    search_s: float,
) -> _Solved:
    """Solve ``order[start:stop]`` (a whole segment) exactly if the budgets allow."""
    sub = subproblem(index, order, start, stop, lifetimes=lifetimes)
    peak = int(timeline[start:stop].max())
    lower = structural_lower_bound(sub.index) + sub.offset_bytes
    current = order[start:stop]
    if peak <= lower:
        return _Solved(current, peak, peak, "incumbent meets bound")
    if stop - start > SEARCH_MAX_NODES:
        return _Solved(current, peak, lower, "too large: windows only")
    off = sub.offset_bytes
    t0 = time.perf_counter()
    local = np.arange(stop - start, dtype=np.int64)
    if stop - start <= DESCENT_MAX_NODES:
        desc = descend_min_peak(
            sub.index,
            local,
            lower_bound=lower - off,
            step_bytes=gcd_step(sub.index),
            deadline_s=min(deadline, t0 + search_s / 2),
        )
        local = np.asarray(desc.order, dtype=np.int64)
        current, peak = sub.nodes[local], desc.peak_bytes + off
        if desc.complete:
            proven = desc.proof != "-"
            how = "decision search: optimal" if proven else "decision search: meets bound"
            return _Solved(current, peak, peak, how)
    # not proven: the best-first search, whose truncated queue still proves a bound
    res = search_min_peak(
        sub.index,
        lower_bound=lower - off,
        upper_bound=peak - off,
        max_states=SEARCH_STATES,
        deadline_s=min(deadline, t0 + search_s),
    )
    bound = max(lower, res.bound_bytes + off)
    if res.complete:
        if res.order is None:
            return _Solved(current, peak, peak, "search: incumbent optimal")
        new = sub.nodes[np.asarray(res.order, dtype=np.int64)]
        p = int(simulate(sub.index, np.asarray(res.order), validate=False).peak_bytes)
        return _Solved(new, p + off, p + off, "search: optimal")
    left = deadline - time.perf_counter()
    if stop - start <= ILP_MAX_NODES and left > 1.0:
        try:
            out = solve_index(
                sub.index,
                local,
                time_limit_s=min(left / 3, 30.0),
                lower_bound_bytes=bound - sub.offset_bytes,
            )
        except DeltasimError:  # no MILP solver: keep what the search proved
            return _Solved(current, peak, bound, "search truncated, no ILP solver")
        return _Solved(
            sub.nodes[out.order],
            out.peak_bytes + sub.offset_bytes,
            max(bound, out.bound_bytes + sub.offset_bytes),
            f"ilp: {out.status}",
        )
    return _Solved(current, peak, bound, "search truncated")


def _improve_windows(
    index: GraphIndex, order: np.ndarray, floor: int, deadline: float
) -> tuple[np.ndarray, int]:
    """Re-solve windows around the peak until none helps; return the order and the number
    of windows that improved it. ``floor`` is a proven bound: stop once the peak meets it.

    Windows grow (:data:`WINDOW_NODES`) until the exact search no longer finishes within
    :data:`WINDOW_STATES`; each is centred on, ends at, or starts at a peak step.
    """
    n = index.n_nodes
    improved = 0
    prof = simulate(index, order, validate=False)
    while time.perf_counter() < deadline and prof.peak_bytes > floor:
        lifetimes = (prof.alloc_step, prof.free_step)
        steps = np.flatnonzero(prof.timeline_bytes == prof.peak_bytes).tolist()
        better = None
        for p in steps[:4]:
            for size in WINDOW_NODES:
                size = min(size, n)
                finished = False
                for lo in (p - size // 2, p - size + 1, p):
                    i = max(0, min(lo, n - size))
                    j = i + size
                    if time.perf_counter() > deadline:
                        return order, improved
                    sub = subproblem(index, order, i, j, lifetimes=lifetimes)
                    local = int(prof.timeline_bytes[i:j].max()) - sub.offset_bytes
                    res = search_min_peak(
                        sub.index,
                        lower_bound=trivial_lower_bound(sub.index),
                        upper_bound=local,
                        max_states=WINDOW_STATES,
                        deadline_s=deadline,
                    )
                    finished = finished or res.complete
                    if res.order is not None:
                        better = (i, j, sub.nodes[np.asarray(res.order, dtype=np.int64)])
                        break
                if better is not None or not finished or size == n:
                    break
            if better is not None:
                break
        if better is None:
            return order, improved
        i, j, nodes = better
        order = order.copy()
        order[i:j] = nodes
        improved += 1
        prof = simulate(index, order, validate=False)
    return order, improved


def schedule_hybrid(
    graph: Graph, *, time_limit_s: float = 120.0, warm_start: Sequence[str] | None = None
) -> ScheduleResult:
    """Divide-and-conquer order (strategy ``hybrid``); never worse than given/lpmf/bfs/dfs/sp
    nor than ``warm_start`` (a topological order, e.g. the portfolio's best so far).

    >>> from traces.graph import Buffer, Node
    >>> g = Graph.build("v", [Node("a"), Node("b"), Node("c"), Node("d")],
    ...     [Buffer("x", 10, "a", ("d",)), Buffer("y", 1, "b", ("c",)),
    ...      Buffer("z", 1, "c", ("d",))])
    >>> r = schedule_hybrid(g)  # given order a, b, c, d peaks at 12
    >>> r.order, r.peak_bytes, r.optimal
    (('b', 'c', 'a', 'd'), 11, True)
    """
    t0 = time.perf_counter()
    deadline = t0 + 0.95 * time_limit_s  # leaves room for the final replay
    index = graph.index
    n = index.n_nodes
    phases: dict[str, float] = {}
    if n == 0:
        return finish_result(graph, "hybrid", [], t0, optimal=True)

    cands = candidate_orders(graph, deadline_s=t0 + 0.25 * time_limit_s)
    if warm_start is not None:
        warm = order_indices(graph, warm_start)
        check_order(index, warm)
        cands.orders["warm start"] = warm
        cands.peaks_bytes["warm start"] = simulate(index, warm, validate=False).peak_bytes
    peaks = dict(cands.peaks_bytes)
    start_name = cands.best
    order = cands.orders[start_name]
    phases["candidates_s"] = time.perf_counter() - t0
    bound = max(structural_lower_bound(index), cands.bound_bytes)

    if peaks[start_name] <= bound:  # a candidate is already proven optimal
        return finish_result(
            graph,
            "hybrid",
            order,
            t0,
            lower_bound_bytes=bound,
            details={"start": start_name, "candidate_peaks_bytes": peaks, "phase_s": phases},
        )
    t1 = time.perf_counter()
    macro = None
    if cands.recognition is not None:
        budget = t1 + 0.2 * (deadline - t1)
        macro = _sp_macro(graph, cands.recognition, peaks[start_name], bound, budget)
    if macro is not None:
        order, peaks["sp-macro"], start_name = macro, simulate(index, macro).peak_bytes, "sp-macro"
    phases["macro_s"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    segments = cut_segments(index)
    phases["segments_s"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    # Reorder the incumbent so segments are contiguous in it (they already are in any
    # topological order; this just lines up the bookkeeping).
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    order = np.concatenate([np.array(sorted(s, key=lambda v: pos[v])) for s in segments])
    prof = simulate(index, order)
    lifetimes = (prof.alloc_step, prof.free_step)
    parts: list[np.ndarray] = []
    cores: list[dict[str, object]] = []
    at = 0
    for seg in segments:
        size = len(seg)
        if size == 1:
            parts.append(order[at : at + 1])
            bound = max(bound, int(prof.timeline_bytes[at]))
            at += 1
            continue
        search_s = max(0.5, 0.25 * (deadline - time.perf_counter()))
        solved = _solve_segment(
            index, order, at, at + size, lifetimes, prof.timeline_bytes, deadline, search_s
        )
        parts.append(solved.order)
        bound = max(bound, solved.bound_bytes)
        cores.append(
            {
                "nodes": size,
                "peak_bytes": solved.peak_bytes,
                "bound_bytes": solved.bound_bytes,
                "how": solved.how,
            }
        )
        at += size
    order = np.concatenate(parts)
    phases["cores_s"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    order, windows = _improve_windows(index, order, bound, deadline)
    phases["windows_s"] = time.perf_counter() - t1

    peak = simulate(index, order).peak_bytes
    best_cand = min(cands.peaks_bytes.values())
    if best_cand < peak:  # cannot happen (every phase only improves); kept as a guard
        order, peak = cands.orders[cands.best], best_cand
    big = sorted(cores, key=lambda c: -int(c["nodes"]))  # type: ignore[call-overload]
    return finish_result(
        graph,
        "hybrid",
        order,
        t0,
        lower_bound_bytes=min(bound, peak),
        details={
            "start": start_name,
            "candidate_peaks_bytes": peaks,
            "segments": len(segments),
            "cores": len(cores),
            "core_sizes": [c["nodes"] for c in big],
            "core_results": big[:20],
            "windows_improved": windows,
            "phase_s": {k: round(v, 4) for k, v in phases.items()},
        },
    )
