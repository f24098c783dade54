"""Cheap starting orders for the exact strategies: given, lpmf, bfs, dfs and SP.

``ilp`` warm-starts from the best of them and ``hybrid`` starts from it, which is what
makes both "never worse than the heuristics". The SP member is the series-parallel
algorithm on SP graphs and its serialized irreducible core otherwise (called directly:
``schedule_sp`` itself falls back to ``hybrid`` on non-SP graphs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from scheduler.memory import check_order, simulate
from scheduler.result import ScheduleResult, finish_result
from scheduler.sp import Recognition, recognize
from traces.errors import DeltasimError, OrderError
from traces.graph import Graph

__all__ = ["SP_CORE_MAX_NODES", "Candidates", "candidate_orders"]

SP_CORE_MAX_NODES = 3_000
"""The serialized SP core (slow: ~18 s at 10^4 nodes) is a candidate only below this."""


@dataclass(frozen=True, slots=True)
class Candidates:
    """Orders (node indices) by name, their peaks, and the best bound any member proved."""

    orders: dict[str, np.ndarray]
    peaks_bytes: dict[str, int]
    bound_bytes: int
    recognition: Recognition | None = field(default=None)

    @property
    def best(self) -> str:
        """Name of the lowest-peak order (first listed on ties)."""
        return min(self.peaks_bytes, key=lambda k: self.peaks_bytes[k])


def _sp_member(graph: Graph, rec: Recognition) -> ScheduleResult | None:
    from scheduler.sp_order import schedule_core_serialized, schedule_sp, task_weights

    if rec.is_sp:
        return schedule_sp(graph)
    if len(graph) > SP_CORE_MAX_NODES:
        return None
    t0 = time.perf_counter()
    _, high = task_weights(graph, rec.task)
    return finish_result(graph, "sp-core", schedule_core_serialized(graph, rec.core, high), t0)


def candidate_orders(graph: Graph, *, deadline_s: float | None = None) -> Candidates:
    """Run the cheap members in turn (stopping early past ``deadline_s``, a
    :func:`time.perf_counter` instant, once one order exists). A member that fails with
    a :class:`DeltasimError` is skipped."""
    from scheduler.heuristics import schedule_bfs, schedule_dfs, schedule_lpmf

    index = graph.index
    orders: dict[str, np.ndarray] = {}
    own = np.arange(index.n_nodes, dtype=np.int64)
    try:
        check_order(index, own)
        orders["given"] = own
    except OrderError:
        pass
    rec: Recognition | None = None
    try:
        rec = recognize(graph)
    except DeltasimError:
        rec = None
    members: list[tuple[str, Callable[[Graph], ScheduleResult | None]]] = [
        ("lpmf", schedule_lpmf),
        ("bfs", schedule_bfs),
        ("dfs", schedule_dfs),
    ]
    if rec is not None:
        members.append(("sp", lambda g: _sp_member(g, rec)))
    bound = 0
    for name, fn in members:
        if deadline_s is not None and time.perf_counter() > deadline_s and orders:
            break
        try:
            r = fn(graph)
        except DeltasimError:
            continue
        if r is None:
            continue
        orders[name] = np.array([index.position_of[v] for v in r.order], dtype=np.int64)
        if r.lower_bound_bytes is not None:
            bound = max(bound, int(r.lower_bound_bytes))
    peaks = {k: simulate(index, o, validate=False).peak_bytes for k, o in orders.items()}
    return Candidates(orders, peaks, bound, rec)
