"""``hw memstudy``: peak memory of real training steps, then of every method's order.

Part "step": one forward+backward of each model at each batch size, eager vs
torch.compile (Inductor, with its ``reorder_for_peak_memory`` on and off),
with and without activation checkpointing, measured by the peak tracker
(peak above the parameters and inputs, gradients included).
Part "order": per captured graph (forward and backward, checkpointing on),
every ``sched`` method's order predicted by the simulator and measured by
running it (FX level, and Inductor level when asked; the Inductor row
``inductor-default`` is Inductor's own order). Every row is written as soon as
it is measured; rows already in the table are skipped, so a study resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
import torch

from hw.memory.capture import fx_graph_of
from hw.memory.fx_capture import StepLoss, capture_step, ensure_inductor_cache
from hw.memory.methods import run_method
from hw.memory.models import AcMode, ModelSpec, build_model
from hw.memory.tracker import PeakTracker
from hw.memory.verify import FxRunner, verify_order
from traces.errors import DeltasimError
from traces.memstudy import (
    MemstudyRow,
    empty_memstudy,
    read_memstudy,
    rows_to_frame,
    write_memstudy,
)

__all__ = ["measure_step_peak", "run_memstudy"]

Progress = Callable[[str], None]


def measure_step_peak(
    spec: ModelSpec, mode: str, reorder_for_peak_memory: bool | None = None
) -> int:
    """Peak bytes of one training step above its parameters and inputs (after a warm-up)."""
    ensure_inductor_cache()
    model, inputs = build_model(spec)
    step: Callable[..., torch.Tensor] = StepLoss(model)
    patch: dict[str, object] = {}
    if mode == "compile":
        torch._dynamo.reset()
        step = torch.compile(step, backend="inductor")
        patch = {"reorder_for_peak_memory": bool(reorder_for_peak_memory)}
    elif mode != "eager":
        raise ValueError(f"mode must be eager or compile, got {mode!r}")
    from torch._inductor import config

    with config.patch(patch):
        step(*inputs).backward()  # warm-up (and compile)
        model.zero_grad(set_to_none=True)
        with PeakTracker(spec.device) as tracker:
            step(*inputs).backward()
    model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    return tracker.result.peak_bytes


class _Table:
    """The study's rows, flushed to disk after each new one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.df = read_memstudy(path) if path.exists() else empty_memstudy()
        self.done = set(self.df["key"].to_list())

    def add(self, row: MemstudyRow) -> None:
        self.df = pl.concat([self.df, rows_to_frame([row])])
        self.done.add(row.key)
        write_memstudy(self.df, self.path)


def _step_rows(
    table: _Table,
    models: Sequence[str],
    batches: Sequence[int],
    acs: Sequence[AcMode],
    dtype: str,
    progress: Progress,
) -> None:
    variants = [("eager", None), ("compile", True), ("compile", False)]
    for model in models:
        for batch in batches:
            for ac in acs:
                for mode, rfpm in variants:
                    key = f"step|{model}|{batch}|{ac.value}|{dtype}|{mode}|{rfpm}"
                    if key in table.done:
                        continue
                    progress(f"step {model} batch {batch} ac {ac.value} {mode} rfpm={rfpm}")
                    spec = ModelSpec(model, batch, ac, dtype, 0)
                    peak = measure_step_peak(spec, mode, rfpm)
                    table.add(
                        MemstudyRow(
                            key, "step", model, batch, ac.value, dtype, mode, rfpm, "step",
                            None, None, peak, None, None, None, torch.__version__,
                        )
                    )  # fmt: skip


def _order_rows(
    table: _Table,
    models: Sequence[str],
    batch: int,
    methods: Sequence[str],
    levels: Sequence[str],
    kinds: Sequence[str],
    dtype: str,
    time_limit_s: float,
    progress: Progress,
) -> None:
    ac = AcMode.FULL
    for model in models:
        prefix = f"order|{model}|{batch}|{ac.value}|{dtype}"
        wanted = [
            (level, kind, m)
            for level in levels
            for kind in kinds
            for m in [*methods, *(["inductor-default"] if level == "inductor" else [])]
        ]
        if all(f"{prefix}|{lv}|{k}|{m}" in table.done for lv, k, m in wanted):
            continue
        spec = ModelSpec(model, batch, ac, dtype, 0)
        progress(f"capture {model} batch {batch}")
        step = capture_step(spec)
        for level in levels:
            for kind in kinds:
                if level == "fx":
                    graph, runner = fx_graph_of(step, kind), FxRunner(step, kind)
                else:
                    from hw.memory.inductor_level import InductorRunner

                    runner = InductorRunner(step, kind)
                    graph = runner.default_graph()
                    key = f"{prefix}|{level}|{kind}|inductor-default"
                    if key not in table.done:
                        from hw.memory.wrapper_fold import fold_compiled
                        from scheduler.memory import simulate

                        predicted = simulate(graph, graph.node_ids).peak_bytes
                        folded = fold_compiled(graph, runner.default_plan)
                        with_reuse = simulate(folded, graph.node_ids).peak_bytes
                        table.add(
                            MemstudyRow(
                                key, "order", model, batch, ac.value, dtype, level, True, kind,
                                "inductor-default", predicted, runner.default_peak_bytes,
                                True, True, None, torch.__version__, with_reuse,
                            )
                        )  # fmt: skip
                for method in methods:
                    key = f"{prefix}|{level}|{kind}|{method}"
                    if key in table.done:
                        continue
                    progress(f"{model} {level} {kind} {method}")
                    result = run_method(graph, method, time_limit_s=time_limit_s)
                    v = verify_order(graph, result.order, method=method, runner=runner)
                    table.add(
                        MemstudyRow(
                            key, "order", model, batch, ac.value, dtype, level, None, kind,
                            method, v.predicted_peak_bytes, v.measured_peak_bytes,
                            v.order_applied, v.matches_default_result, result.solve_time_s,
                            torch.__version__, v.predicted_with_reuse_bytes,
                        )
                    )  # fmt: skip


def run_memstudy(
    out: Path,
    models: Sequence[str],
    batches: Sequence[int],
    methods: Sequence[str],
    levels: Sequence[str] = ("fx",),
    *,
    kinds: Sequence[str] = ("forward", "backward"),
    acs: Sequence[AcMode] = (AcMode.NONE, AcMode.FULL),
    dtype: str = "float32",
    parts: Sequence[str] = ("step", "order"),
    time_limit_s: float = 20.0,
    progress: Progress = lambda msg: None,
) -> pl.DataFrame:
    """Run (or resume) the study into ``out``; returns the whole table."""
    for level in levels:
        if level not in ("fx", "inductor"):
            raise DeltasimError(f"level must be fx or inductor, got {level!r}")
    for part in parts:
        if part not in ("step", "order"):
            raise DeltasimError(f"part must be step or order, got {part!r}")
    table = _Table(out)
    if "step" in parts:
        _step_rows(table, models, batches, acs, dtype, progress)
    if "order" in parts:
        _order_rows(
            table, models, batches[0], methods, levels, kinds, dtype, time_limit_s, progress
        )
    return table.df
