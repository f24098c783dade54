"""MoE results table (``moe-results/1``): one row per (trained model, evaluation setting).

Written by ``hw moe experiments`` / ``hw moe train``, read by the summary and
reports. Parquet; every column below is required (nullable ones may hold null):

| column | type | null | meaning |
|---|---|---|---|
| ``experiment`` | str | no | ``k_vs_accuracy``, ``delta``, ``baseline`` or ``difficulty`` |
| ``dataset`` | str | no | e.g. ``mnist1d-5000``, ``gmm-8c-16d`` |
| ``run`` | str | no | id of the trained model (one per model and seed) |
| ``model`` | str | no | ``moe`` or ``mlp`` |
| ``gate`` | str | yes | ``topk``, ``topp``, ``budget``; null for the MLP |
| ``seed`` | int | no | training seed |
| ``n_experts`` | int | no | M (0 for the MLP) |
| ``train_k`` | int | yes | k the top-k gate was trained with |
| ``train_p`` | float | yes | p the top-p gate was trained with |
| ``penalty`` | float | yes | compute penalty of the budget gate |
| ``max_k`` | int | yes | K of the budget gate |
| ``eval_k`` | int | yes | k forced at evaluation (null: the gate's own rule) |
| ``accuracy`` | float | no | test accuracy in [0, 1] |
| ``n_test`` | int | no | test samples |
| ``mean_k`` | float | no | mean experts per sample (0 for the MLP) |
| ``expert_evals`` | int | no | total (sample, expert) evaluations over the test set |
| ``flops_per_sample`` | float | no | forward FLOPs per sample (2 per multiply-add) |
| ``train_time_s`` | float | no | wall time of training |
| ``routing_trace`` | str | yes | file name of the routing trace of this evaluation, if kept |
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from traces.errors import FormatError
from traces.table_schema import TableSpec, read_table, write_table

__all__ = [
    "MOE_RESULTS",
    "ResultRow",
    "read_result_rows",
    "read_results",
    "results_frame",
    "write_results",
]


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One evaluation of one trained model."""

    experiment: str
    dataset: str
    run: str
    model: str
    gate: str | None
    seed: int
    n_experts: int
    train_k: int | None
    train_p: float | None
    penalty: float | None
    max_k: int | None
    eval_k: int | None
    accuracy: float
    n_test: int
    mean_k: float
    expert_evals: int
    flops_per_sample: float
    train_time_s: float
    routing_trace: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.accuracy <= 1.0:
            raise FormatError("moe result", "accuracy", f"must be in [0, 1], got {self.accuracy}")
        if self.n_test < 1 or self.mean_k < 0 or self.expert_evals < 0:
            raise FormatError("moe result", "n_test", "counts must be positive")


MOE_RESULTS = TableSpec(
    format="moe-results/1",
    columns={
        "experiment": pl.String(),
        "dataset": pl.String(),
        "run": pl.String(),
        "model": pl.String(),
        "gate": pl.String(),
        "seed": pl.Int64(),
        "n_experts": pl.Int64(),
        "train_k": pl.Int64(),
        "train_p": pl.Float64(),
        "penalty": pl.Float64(),
        "max_k": pl.Int64(),
        "eval_k": pl.Int64(),
        "accuracy": pl.Float64(),
        "n_test": pl.Int64(),
        "mean_k": pl.Float64(),
        "expert_evals": pl.Int64(),
        "flops_per_sample": pl.Float64(),
        "train_time_s": pl.Float64(),
        "routing_trace": pl.String(),
    },
    nullable=frozenset(
        {"gate", "train_k", "train_p", "penalty", "max_k", "eval_k", "routing_trace"}
    ),
)


def results_frame(rows: Iterable[ResultRow]) -> pl.DataFrame:
    """Rows as a frame with the table's exact schema."""
    return MOE_RESULTS.frame(rows)


def write_results(path: str | Path, rows: Iterable[ResultRow] | pl.DataFrame) -> None:
    df = rows if isinstance(rows, pl.DataFrame) else results_frame(rows)
    write_table(path, df, MOE_RESULTS)


def read_results(path: str | Path) -> pl.DataFrame:
    """Schema-checked load; a missing or mistyped column is a FormatError naming it."""
    return read_table(path, MOE_RESULTS)[0]


def read_result_rows(path: str | Path) -> list[ResultRow]:
    """The table as typed records (what analysis code uses instead of column names)."""
    return [ResultRow(**d) for d in read_results(path).iter_rows(named=True)]
