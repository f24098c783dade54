"""The ``best`` strategy: a portfolio that runs what applies within a time budget.

Cheap members run first (``given`` when it is topological, ``lpmf``, ``bfs``, ``dfs``),
then ``sp`` when the graph is two-terminal series-parallel, then ``hybrid`` and, on
graphs of at most :data:`ILP_MAX_NODES` nodes, ``ilp``, sharing what is left of the
budget (hybrid first). It stops as soon as the best peak equals the best proven lower bound.
The result is never worse than ``given`` (or any member that ran), and its lower bound
is the highest any member proved. A member that fails with a :class:`DeltasimError`,
or whose module is absent, is skipped and the reason recorded in ``details``. Members
that accept ``warm_start`` get the best order found so far.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from scheduler.result import ScheduleResult, finish_result
from traces.errors import DeltasimError
from traces.graph import Graph

__all__ = ["ILP_MAX_NODES", "MemberRun", "schedule_best"]

ILP_MAX_NODES = 150
"""Largest graph handed to a plain ``ilp`` (its model grows as n^2); hybrid runs on all."""

_CHEAP = ("given", "lpmf", "bfs", "dfs")


@dataclass(frozen=True, slots=True)
class MemberRun:
    """What one portfolio member did: its peak and bound, or why it was skipped."""

    method: str
    peak_bytes: int | None
    lower_bound_bytes: int | None
    optimal: bool
    seconds_s: float
    skipped: str | None = None


def _load(name: str) -> Callable[..., ScheduleResult]:
    from scheduler.strategies import get_strategy  # strategies imports this module lazily

    return get_strategy(name)


def _is_series_parallel(graph: Graph) -> tuple[bool, str | None]:
    """Whether ``sp`` applies; a missing recognizer or its failure just means "skip sp"."""
    try:
        from scheduler.sp import recognize
    except ImportError as exc:
        return False, f"module unavailable: {exc}"
    try:
        return bool(recognize(graph).is_sp), None
    except DeltasimError as exc:
        return False, f"recognition failed: {exc}"


def schedule_best(graph: Graph, *, time_limit_s: float = 60.0) -> ScheduleResult:
    """The portfolio: runs what applies within a time budget and returns the lowest peak,
    never worse than ``given``.

    ``details`` holds ``winner`` (the member whose order is returned), ``members`` (each
    member's peak, bound, time or skip reason) and ``stopped`` (why the portfolio ended).

    >>> from traces.graph import Buffer, Node
    >>> g = Graph.build("v", [Node("a"), Node("b"), Node("c")],
    ...     [Buffer("x", 8, "a", ("c",)), Buffer("y", 1, "b", ("c",))])
    >>> r = schedule_best(g, time_limit_s=5)
    >>> r.peak_bytes, r.optimal
    (9, True)
    """
    t0 = time.perf_counter()
    deadline = t0 + max(0.0, time_limit_s)
    runs: list[MemberRun] = []
    best: ScheduleResult | None = None
    best_lb = 0
    stopped = "all applicable members ran"

    def proven() -> bool:
        return best is not None and best.peak_bytes <= best_lb

    def run(name: str, budget_s: float) -> None:
        nonlocal best, best_lb
        t = time.perf_counter()
        try:
            fn = _load(name)
            kwargs: dict[str, Any] = {"time_limit_s": budget_s}
            if best is not None and "warm_start" in inspect.signature(fn).parameters:
                kwargs["warm_start"] = best.order  # the incumbent seeds exact members
            result = fn(graph, **kwargs)
        except ImportError as exc:
            runs.append(MemberRun(name, None, None, False, 0.0, f"module unavailable: {exc}"))
            return
        except DeltasimError as exc:
            seconds = time.perf_counter() - t
            runs.append(MemberRun(name, None, None, False, seconds, f"{type(exc).__name__}: {exc}"))
            return
        seconds = time.perf_counter() - t
        runs.append(
            MemberRun(name, result.peak_bytes, result.lower_bound_bytes, result.optimal, seconds)
        )
        if result.lower_bound_bytes is not None:
            best_lb = max(best_lb, result.lower_bound_bytes)
        if result.optimal:
            best_lb = max(best_lb, result.peak_bytes)
        if best is None or result.peak_bytes < best.peak_bytes:
            best = result

    def remaining() -> float:
        return deadline - time.perf_counter()

    # Cheap members always run: they are what makes "never worse than given" hold.
    for name in _CHEAP:
        run(name, max(remaining(), 0.01))
        if proven():
            stopped = f"{best.strategy} proved optimal (peak equals the best lower bound)"
            break
    if not proven():
        is_sp, why = _is_series_parallel(graph)
        if is_sp:
            if remaining() > 0:
                run("sp", remaining())
            else:
                runs.append(MemberRun("sp", None, None, False, 0.0, "no time left"))
        else:
            runs.append(MemberRun("sp", None, None, False, 0.0, why or "graph is not SP"))
        if proven():
            stopped = f"{best.strategy} proved optimal (peak equals the best lower bound)"
    # What is left of the budget goes to the exact / large-scale members. Measured (see
    # benchmarks/README.md): hybrid (exact search on cut segments, ILP on cores) proves or
    # beats a plain ilp given the same budget even on 50-100 node graphs, and halving its
    # budget costs it its advantage, so it goes first with all of it; on graphs small
    # enough, ilp gets whatever hybrid leaves, warm-started from the best order.
    tail = ["hybrid"]
    if len(graph) <= ILP_MAX_NODES:
        tail.append("ilp")
    elif not proven():
        reason = f"graph has {len(graph)} > {ILP_MAX_NODES} nodes"
        runs.append(MemberRun("ilp", None, None, False, 0.0, reason))
    for name in tail:
        if proven():
            stopped = f"{best.strategy} proved optimal (peak equals the best lower bound)"
            break
        left = remaining()
        if left <= 0:
            runs.append(MemberRun(name, None, None, False, 0.0, "no time left"))
            stopped = "time budget spent"
            continue
        run(name, left)  # hybrid may use it all; ilp gets whatever hybrid leaves
    if proven():
        stopped = f"{best.strategy} proved optimal (peak equals the best lower bound)"

    if best is None:  # every member failed: only possible for a graph nothing can order
        reasons = "; ".join(f"{r.method}: {r.skipped}" for r in runs if r.skipped)
        raise DeltasimError(f"best: no member produced an order ({reasons})")
    details = {
        "winner": best.strategy,
        "stopped": stopped,
        "members": [asdict(r) for r in runs],
    }
    return finish_result(graph, "best", best.order, t0, lower_bound_bytes=best_lb, details=details)
