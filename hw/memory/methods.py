"""Run ``sched`` ordering methods from ``hw``, tolerating strategies not installed yet.

The scheduler registry imports every strategy module at once; while some are
still missing (or fail to import), the ones that exist are still usable here.
"""

from __future__ import annotations

import importlib
import random
import time

from scheduler.result import ScheduleResult, finish_result
from scheduler.strategies import Method, schedule, schedule_given
from traces.graph import Graph

__all__ = ["METHODS", "random_topological_order", "run_method"]

METHODS: tuple[str, ...] = tuple(m.value for m in Method)

_MODULES = {
    "lpmf": ("scheduler.heuristics", "schedule_lpmf"),
    "bfs": ("scheduler.heuristics", "schedule_bfs"),
    "dfs": ("scheduler.heuristics", "schedule_dfs"),
    "sp": ("scheduler.sp_order", "schedule_sp"),
    "ilp": ("scheduler.ilp", "schedule_ilp"),
    "hybrid": ("scheduler.hybrid", "schedule_hybrid"),
    "best": ("scheduler.portfolio", "schedule_best"),
}


def run_method(graph: Graph, method: str, *, time_limit_s: float = 30.0) -> ScheduleResult | None:
    """The method's result, or None when its strategy module is not importable."""
    try:
        return schedule(graph, method, time_limit_s=time_limit_s)
    except ImportError:
        pass
    if method == "given":
        return schedule_given(graph)
    target = _MODULES.get(method)
    if target is None:
        return None
    try:
        func = getattr(importlib.import_module(target[0]), target[1])
    except (ImportError, AttributeError):
        return None
    return func(graph, time_limit_s=time_limit_s)


def random_topological_order(graph: Graph, seed: int) -> ScheduleResult:
    """A uniformly-chosen-next-ready-node topological order (a valid but arbitrary order)."""
    t0 = time.perf_counter()
    index = graph.index
    rng = random.Random(seed)
    indeg = [len(p) for p in index.pred_lists]
    ready = [v for v in range(index.n_nodes) if indeg[v] == 0]
    order: list[int] = []
    while ready:
        v = ready.pop(rng.randrange(len(ready)))
        order.append(v)
        for w in index.succ_lists[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    return finish_result(graph, f"random{seed}", [index.node_ids[v] for v in order], t0)
