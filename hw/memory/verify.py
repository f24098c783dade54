"""``hw verify``: run one order of a captured graph for real and compare peaks.

The order is checked against the graph first (a bad order is refused before
anything is built or run); then the model and inputs are rebuilt from the
graph's ``meta``, the rebuilt graph must have the captured fingerprint, the
default order and the requested order both run under the peak tracker, and
their numerical results are compared bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hw.memory.capture import input_pinned_rule, spec_from_graph, step_graph
from hw.memory.errors import ReplayError
from hw.memory.fx_capture import CapturedStep, capture_step, graph_fingerprint
from hw.memory.fx_graph import FxLayout
from hw.memory.fx_replay import outputs_equal, reordered_module, run_measured
from scheduler.memory import order_indices, simulate
from traces.errors import OrderError
from traces.graph import Graph

__all__ = ["FxRunner", "VerifyResult", "check_fingerprint", "verify_order"]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Predicted vs measured peak of one order, and whether it was honoured and exact."""

    graph: str
    level: str
    kind: str
    method: str
    predicted_peak_bytes: int
    measured_peak_bytes: int
    default_measured_peak_bytes: int
    order_applied: bool
    matches_default_result: bool
    predicted_with_reuse_bytes: int | None = None

    @property
    def error_bytes(self) -> int:
        """Measured minus predicted (positive: the prediction is low)."""
        return self.measured_peak_bytes - self.predicted_peak_bytes

    @property
    def rel_error(self) -> float:
        return self.error_bytes / self.measured_peak_bytes if self.measured_peak_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "level": self.level,
            "kind": self.kind,
            "method": self.method,
            "predicted_peak_bytes": self.predicted_peak_bytes,
            "measured_peak_bytes": self.measured_peak_bytes,
            "default_measured_peak_bytes": self.default_measured_peak_bytes,
            "error_bytes": self.error_bytes,
            "rel_error": self.rel_error,
            "order_applied": self.order_applied,
            "matches_default_result": self.matches_default_result,
            "predicted_with_reuse_bytes": self.predicted_with_reuse_bytes,
        }


def check_fingerprint(graph: Graph, step: CapturedStep, kind: str) -> None:
    gm, _ = step_graph(step, kind)
    want = graph.meta.get("fx_fingerprint")
    got = graph_fingerprint(gm)
    if want != got:
        raise ReplayError(
            f"rebuilding {graph.meta.get('model')!r} gave a different {kind} graph "
            f"(fingerprint {got}, captured {want}): model code or torch changed since capture"
        )


class FxRunner:
    """Runs orders of one captured FX graph; the default order's run is the reference."""

    def __init__(self, step: CapturedStep, kind: str) -> None:
        self.gm, self.args = step_graph(step, kind)
        self.device = step.spec.device
        rule = input_pinned_rule(kind)
        self.pinned = [rule(p) for p in FxLayout(self.gm).placeholders]
        self.default_order = [n.name for n in FxLayout(self.gm).compute]
        module = reordered_module(self.gm, self.default_order)
        self.reference, peak = run_measured(module, self.args, self.pinned, self.device)
        self.default_peak_bytes = peak.peak_bytes

    def measure(self, order: Sequence[str]) -> tuple[int, bool, bool]:
        """``(measured_peak_bytes, order_applied, matches_default_result)``."""
        module = reordered_module(self.gm, order)
        names = set(order)
        ran = [n.name for n in module.graph.nodes if n.name in names]
        result, peak = run_measured(module, self.args, self.pinned, self.device)
        return peak.peak_bytes, ran == list(order), outputs_equal(result, self.reference)


def verify_order(
    graph: Graph,
    order: Sequence[str],
    *,
    method: str = "order",
    step: CapturedStep | None = None,
    runner: Any = None,
) -> VerifyResult:
    """Predict, then measure, ``order`` on the graph's rebuilt model (see module doc)."""
    spec, kind, level = spec_from_graph(graph)
    predicted = simulate(graph, order_indices(graph, order)).peak_bytes  # refuses bad orders
    if runner is None:
        step = step if step is not None else capture_step(spec)
        check_fingerprint(graph, step, kind)
        if level == "fx":
            runner = FxRunner(step, kind)
        else:
            from hw.memory.inductor_level import InductorRunner

            runner = InductorRunner(step, kind, graph)
    measured, applied, same = runner.measure(list(order))
    with_reuse = None
    pairs = getattr(runner, "last_reuse_pairs", None)
    if level == "inductor" and pairs is not None:
        from hw.memory.inductor_level import fold_reuse

        try:
            with_reuse = simulate(fold_reuse(graph, pairs), order_indices(graph, order)).peak_bytes
        except OrderError:
            with_reuse = None
    return VerifyResult(
        graph=graph.name,
        level=level,
        kind=kind,
        method=method,
        predicted_peak_bytes=predicted,
        measured_peak_bytes=measured,
        default_measured_peak_bytes=runner.default_peak_bytes,
        order_applied=applied,
        matches_default_result=same,
        predicted_with_reuse_bytes=with_reuse,
    )
