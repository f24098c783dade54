"""The registry of ordering strategies: a StrEnum of names and a plain dict of functions.

Every strategy has the signature ``(graph, *, time_limit_s) -> ScheduleResult``
and builds its result with :func:`scheduler.result.finish_result`.
"""

from __future__ import annotations

import enum
import importlib
import time
from collections.abc import Callable

import numpy as np

from scheduler.errors import SchedulerError
from scheduler.result import ScheduleResult, finish_result
from traces.graph import Graph

__all__ = ["STRATEGIES", "Method", "get_strategy", "schedule", "schedule_given"]

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


_LOCATIONS: dict[str, tuple[str, str]] = {
    Method.LPMF.value: ("scheduler.heuristics", "schedule_lpmf"),
    Method.BFS.value: ("scheduler.heuristics", "schedule_bfs"),
    Method.DFS.value: ("scheduler.heuristics", "schedule_dfs"),
    Method.SP.value: ("scheduler.sp_order", "schedule_sp"),
    Method.ILP.value: ("scheduler.ilp", "schedule_ilp"),
    Method.HYBRID.value: ("scheduler.hybrid", "schedule_hybrid"),
    Method.BEST.value: ("scheduler.portfolio", "schedule_best"),
}
"""Where each strategy lives; imported on first use so that ``sched peak`` stays cheap."""

STRATEGIES: dict[str, Strategy] = {Method.GIVEN.value: schedule_given}


def get_strategy(method: str | Method) -> Strategy:
    """The strategy function of ``method`` (imported lazily, then cached)."""
    name = str(method)
    if name not in STRATEGIES:
        if name not in _LOCATIONS:
            raise SchedulerError(
                f"unknown method {name!r}; choose one of {', '.join(m.value for m in Method)}"
            )
        module, attr = _LOCATIONS[name]
        STRATEGIES[name] = getattr(importlib.import_module(module), attr)
    return STRATEGIES[name]


def schedule(graph: Graph, method: str | Method, *, time_limit_s: float = 60.0) -> ScheduleResult:
    """Run one strategy by name."""
    return get_strategy(method)(graph, time_limit_s=time_limit_s)
