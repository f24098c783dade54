"""The one result type every ordering strategy returns."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scheduler.memory import order_indices, simulate, trivial_lower_bound
from traces.graph import Graph

__all__ = ["ScheduleResult", "finish_result"]


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    """An order and what we know about it.

    ``peak_bytes`` always comes from :func:`scheduler.memory.simulate` replaying
    ``order``; ``optimal`` is true only when proven; ``lower_bound_bytes`` is a
    proven lower bound on the optimum, or None.
    """

    strategy: str
    order: tuple[str, ...]
    peak_bytes: int
    optimal: bool
    lower_bound_bytes: int | None
    solve_time_s: float
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.peak_bytes < 0:
            raise ValueError("peak_bytes must be >= 0")
        if self.lower_bound_bytes is not None and self.lower_bound_bytes > self.peak_bytes:
            raise ValueError(
                f"{self.strategy}: lower bound {self.lower_bound_bytes} exceeds "
                f"peak {self.peak_bytes}"
            )

    @property
    def gap(self) -> float | None:
        """Relative gap of the peak over the lower bound (0 means proven optimal)."""
        if self.lower_bound_bytes is None:
            return None
        if self.peak_bytes == 0:
            return 0.0
        return (self.peak_bytes - self.lower_bound_bytes) / self.peak_bytes

    def to_json(self) -> dict[str, Any]:
        """The order object of the graph/1 contract."""
        return {
            "method": self.strategy,
            "order": list(self.order),
            "peak_bytes": int(self.peak_bytes),
            "optimal": bool(self.optimal),
            "lower_bound_bytes": (
                None if self.lower_bound_bytes is None else int(self.lower_bound_bytes)
            ),
            "seconds": round(float(self.solve_time_s), 6),
        }


def finish_result(
    graph: Graph,
    strategy: str,
    order: Sequence[str] | np.ndarray,
    started_s: float,
    *,
    optimal: bool = False,
    lower_bound_bytes: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> ScheduleResult:
    """Replay ``order`` through the simulator and package it; the only way strategies
    build a result, so no strategy reports a peak it computed itself.

    The reported lower bound is the strategy's proven bound or the trivial one,
    whichever is higher.
    """
    ids = graph.index.node_ids
    idx = order_indices(graph, order)
    peak = simulate(graph, idx).peak_bytes
    trivial = trivial_lower_bound(graph)
    bound = trivial if lower_bound_bytes is None else max(int(lower_bound_bytes), trivial)
    if optimal:
        bound = peak
    return ScheduleResult(
        strategy=strategy,
        order=tuple(ids[i] for i in idx.tolist()),
        peak_bytes=peak,
        optimal=optimal or peak == bound,
        lower_bound_bytes=bound,
        solve_time_s=time.perf_counter() - started_s,
        details=dict(details or {}),
    )
