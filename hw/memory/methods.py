"""Run ``sched`` ordering methods from ``hw``, tolerating strategies not installed yet.

The scheduler registry imports every strategy module at once; while some are
still missing (or fail to import), the ones that exist are still usable here.
"""

from __future__ import annotations

import random
import time

from scheduler.result import ScheduleResult, finish_result
from scheduler.strategies import Method, schedule
from traces.graph import Graph

__all__ = ["METHODS", "random_topological_order", "run_method"]

METHODS: tuple[str, ...] = tuple(m.value for m in Method)


def run_method(graph: Graph, method: str, *, time_limit_s: float = 30.0) -> ScheduleResult:
    """The result of one ``sched`` method on ``graph``."""
    return schedule(graph, method, time_limit_s=time_limit_s)


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
