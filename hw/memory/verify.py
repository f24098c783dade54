"""``hw verify``: run one order of a captured graph for real and compare peaks.

The order is checked against the graph first (a bad order is refused before
anything is built or run); then the model and inputs are rebuilt from the
graph's ``meta``, the rebuilt graph must have the captured fingerprint, the
default order and the requested order both run under the peak tracker, and
their numerical results are compared bit for bit. On request (FX level, CPU) the
order runs once more with a profiler scope around each operation, which gives the
measured memory at every step beside the simulator's ``timeline_bytes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hw.memory.capture import input_pinned_rule, spec_from_graph, step_graph
from hw.memory.errors import ReplayError, VerifyError
from hw.memory.fx_capture import CapturedStep, capture_step, graph_fingerprint
from hw.memory.fx_graph import FxLayout
from hw.memory.fx_replay import outputs_equal, reordered_module, run_measured, run_timeline
from scheduler.memory import order_indices, simulate
from traces.errors import OrderError
from traces.graph import Graph

__all__ = ["FxRunner", "StepTimeline", "VerifyResult", "check_fingerprint", "verify_order"]


@dataclass(frozen=True, slots=True)
class StepTimeline:
    """Memory at every step of one order: predicted by the simulator, measured on the device.

    ``measured_peak_bytes`` is the peak of the same (marked) run; the step maxima reach it
    exactly when nothing allocates between operations.
    """

    order: tuple[str, ...]
    predicted_bytes: tuple[int, ...]
    measured_bytes: tuple[int, ...]
    measured_peak_bytes: int

    def __post_init__(self) -> None:
        if not len(self.order) == len(self.predicted_bytes) == len(self.measured_bytes):
            raise ValueError("order, predicted_bytes and measured_bytes differ in length")


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Predicted vs measured peak of one order, and whether it was honoured and exact.

    ``predicted_with_reuse_bytes`` (Inductor level): the prediction with what the compiled
    wrapper does for this order folded in: buffer reuse, aliases and (CPU) kernel groups
    (:mod:`hw.memory.wrapper_fold`); ``predicted_peak_bytes`` is plain graph/1.
    """

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
    timeline: StepTimeline | None = None

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

    def timeline(self, order: Sequence[str]) -> tuple[list[int], int]:
        """Measured memory at every step of ``order`` and the run's peak (CPU only)."""
        if self.device != "cpu":
            raise VerifyError(
                f"a measured timeline needs the CPU allocator's events; the graph runs on "
                f"{self.device!r}"
            )
        module = reordered_module(self.gm, order)
        return run_timeline(module, order, self.args, self.pinned)


def verify_order(
    graph: Graph,
    order: Sequence[str],
    *,
    method: str = "order",
    step: CapturedStep | None = None,
    runner: Any = None,
    timeline: bool = False,
) -> VerifyResult:
    """Predict, then measure, ``order`` on the graph's rebuilt model (see module doc).

    ``timeline``: also measure the memory at every step (FX level, CPU), in a second run
    with a profiler scope around each operation.
    """
    spec, kind, level = spec_from_graph(graph)
    profile = simulate(graph, order_indices(graph, order))  # refuses bad orders
    predicted = profile.peak_bytes
    if timeline and level != "fx":
        raise VerifyError(
            f"a measured per-step timeline is available at the FX level only, not {level!r} "
            "(Inductor's compiled wrapper runs fused kernels, not the graph's operations)"
        )
    if timeline and spec.device != "cpu":
        raise VerifyError(
            f"a measured per-step timeline needs the CPU allocator's events; the graph was "
            f"captured on {spec.device!r}"
        )
    if runner is None:
        step = step if step is not None else capture_step(spec)
        check_fingerprint(graph, step, kind)
        if level == "fx":
            runner = FxRunner(step, kind)
        else:
            from hw.memory.inductor_level import InductorRunner

            runner = InductorRunner(step, kind, graph)
    measured, applied, same = runner.measure(list(order))
    steps = None
    if timeline:
        measured_steps, marked_peak = runner.timeline(list(order))
        steps = StepTimeline(
            tuple(order),
            tuple(int(b) for b in profile.timeline_bytes),
            tuple(measured_steps),
            marked_peak,
        )
    with_reuse = None
    plan = getattr(runner, "last_plan", None)
    if level == "inductor" and plan is not None:
        from hw.memory.wrapper_fold import fold_compiled

        try:
            folded = fold_compiled(graph, plan)
            with_reuse = simulate(folded, order_indices(graph, order)).peak_bytes
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
        timeline=steps,
    )
