"""Expert-load table (``moe-load/1``): one row per (trained model, evaluation setting, expert).

The test stream is replayed in arrival order at a nominal rate of one sample
per second and cut into windows of ``window_samples`` arrivals; an expert's
load in a window is the number of samples routed to it divided by the
window's length in seconds. Multiply the ``*_rps`` columns by a real arrival
rate to rescale. The balance measure of a setting is the coefficient of
variation of ``samples`` over its experts.

| column | type | null | meaning |
|---|---|---|---|
| ``run`` | str | no | trained model id (as in ``moe-results/1``) |
| ``gate`` | str | no | gate of the model |
| ``eval_k`` | int | yes | k forced at evaluation (null: the gate's own rule) |
| ``mean_k`` | float | no | mean experts per sample of this setting |
| ``expert`` | int | no | expert index, 0-based |
| ``samples`` | int | no | samples routed to the expert over the test set |
| ``share`` | float | no | fraction of all (sample, expert) assignments |
| ``window_samples`` | int | no | arrivals per window |
| ``load_mean_rps`` | float | no | mean over windows of samples/s at 1 arrival/s |
| ``load_std_rps`` | float | no | standard deviation over windows |
| ``load_p10_rps``, ``load_p90_rps`` | float | no | 10th and 90th percentiles over windows |
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from traces.errors import FormatError
from traces.table_schema import TableSpec, read_table, write_table

__all__ = ["MOE_LOAD", "LoadRow", "load_frame", "read_load", "read_load_rows", "write_load"]


@dataclass(frozen=True, slots=True)
class LoadRow:
    """Load of one expert under one evaluation setting of one model."""

    run: str
    gate: str
    eval_k: int | None
    mean_k: float
    expert: int
    samples: int
    share: float
    window_samples: int
    load_mean_rps: float
    load_std_rps: float
    load_p10_rps: float
    load_p90_rps: float

    def __post_init__(self) -> None:
        if self.expert < 0 or self.samples < 0 or self.window_samples < 1:
            raise FormatError("moe load", "expert", "indices and counts must be non-negative")


MOE_LOAD = TableSpec(
    format="moe-load/1",
    columns={
        "run": pl.String(),
        "gate": pl.String(),
        "eval_k": pl.Int64(),
        "mean_k": pl.Float64(),
        "expert": pl.Int64(),
        "samples": pl.Int64(),
        "share": pl.Float64(),
        "window_samples": pl.Int64(),
        "load_mean_rps": pl.Float64(),
        "load_std_rps": pl.Float64(),
        "load_p10_rps": pl.Float64(),
        "load_p90_rps": pl.Float64(),
    },
    nullable=frozenset({"eval_k"}),
)


def load_frame(rows: Iterable[LoadRow]) -> pl.DataFrame:
    return MOE_LOAD.frame(rows)


def write_load(path: str | Path, rows: Iterable[LoadRow] | pl.DataFrame) -> None:
    df = rows if isinstance(rows, pl.DataFrame) else load_frame(rows)
    write_table(path, df, MOE_LOAD)


def read_load(path: str | Path) -> pl.DataFrame:
    """Schema-checked load; a missing or mistyped column is a FormatError naming it."""
    return read_table(path, MOE_LOAD)[0]


def read_load_rows(path: str | Path) -> list[LoadRow]:
    """The table as typed records (what analysis code uses instead of column names)."""
    return [LoadRow(**d) for d in read_load(path).iter_rows(named=True)]
