"""The registry of ordering strategies: a StrEnum of names and a plain dict of functions.

Every strategy has the signature ``(graph, *, time_limit_s) -> ScheduleResult``
and builds its result with :func:`scheduler.result.finish_result`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import numpy as np

from scheduler.errors import SchedulerError
from scheduler.result import ScheduleResult, finish_result
from traces.graph import Graph

__all__ = ["STRATEGIES", "Method", "schedule", "schedule_given"]

Strategy = Callable[..., ScheduleResult]


class Method(str, enum.Enum):
    """Names accepted by ``sched order --method``."""

    GIVEN = "given"
    LPMF = "lpmf"
    BFS = "bfs"
    DFS = "dfs"
    SP = "sp"
    ILP = "ilp"
    HYBRID = "hybrid"
    BEST = "best"

    def __str__(self) -> str:
        return self.value


def schedule_given(graph: Graph, *, time_limit_s: float | None = None) -> ScheduleResult:
    """The file's own node order (for a captured graph: what the framework would run).

    Raises SchedulerError when that order is not topological (graph/1 allows any node
    order; only this strategy relies on it).
    """
    t0 = time.perf_counter()
    index = graph.index
    if len(index.dep_src):
        bad = np.flatnonzero(index.dep_src >= index.dep_dst)
        if len(bad):
            ids = index.node_ids
            u, v = ids[index.dep_src[bad[0]]], ids[index.dep_dst[bad[0]]]
            raise SchedulerError(
                f"the file's node order is not topological: {v!r} comes before its "
                f"dependency {u!r}; choose another --method"
            )
    return finish_result(graph, Method.GIVEN.value, graph.node_ids, t0)


def _registry() -> dict[str, Strategy]:
    from scheduler.heuristics import schedule_bfs, schedule_dfs, schedule_lpmf
    from scheduler.hybrid import schedule_hybrid
    from scheduler.ilp import schedule_ilp
    from scheduler.portfolio import schedule_best
    from scheduler.sp_order import schedule_sp

    return {
        Method.GIVEN.value: schedule_given,
        Method.LPMF.value: schedule_lpmf,
        Method.BFS.value: schedule_bfs,
        Method.DFS.value: schedule_dfs,
        Method.SP.value: schedule_sp,
        Method.ILP.value: schedule_ilp,
        Method.HYBRID.value: schedule_hybrid,
        Method.BEST.value: schedule_best,
    }


STRATEGIES: dict[str, Strategy] = {}


def schedule(graph: Graph, method: str | Method, *, time_limit_s: float = 60.0) -> ScheduleResult:
    """Run one strategy by name."""
    if not STRATEGIES:
        STRATEGIES.update(_registry())
    name = str(method)
    try:
        strategy = STRATEGIES[name]
    except KeyError:
        raise SchedulerError(
            f"unknown method {name!r}; choose one of {', '.join(m.value for m in Method)}"
        ) from None
    return strategy(graph, time_limit_s=time_limit_s)
