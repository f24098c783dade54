"""Routing traces (``routing/1``): per sample, the experts an MoE gate chose, their weights, k.

What ``hw moe`` writes for every evaluated model and what the serving simulator
replays, so that expert popularity skew and the k distribution come from real
models. Parquet, one row per sample, list columns; key-value metadata carries
``deltasim.format = routing/1``, ``n_experts`` and free-form provenance
(``run``, ``dataset``, ``gate``, ...).

| column | type | null | meaning |
|---|---|---|---|
| ``sample`` | int | no | index of the sample in the evaluated set |
| ``arrival_index`` | int | no | position in the arrival stream (0, 1, ...) |
| ``arrival_time_s`` | float | yes | arrival time, when the trace has timed arrivals |
| ``k`` | int | no | number of experts used, ``1 <= k <= n_experts`` |
| ``experts`` | list[int] | no | the k chosen experts, by gate weight descending, distinct |
| ``weights`` | list[float] | no | their gate weights (>= 0), same length |
| ``label`` | int | yes | true class |
| ``predicted`` | int | yes | predicted class |
| ``difficulty`` | int | yes | difficulty level known by construction (synthetic data) |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from traces.errors import FormatError
from traces.table_schema import TableSpec, read_table, write_table

__all__ = ["ROUTING", "RoutingTrace", "read_routing", "write_routing"]

ROUTING = TableSpec(
    format="routing/1",
    columns={
        "sample": pl.Int64(),
        "arrival_index": pl.Int64(),
        "arrival_time_s": pl.Float64(),
        "k": pl.Int64(),
        "experts": pl.List(pl.Int64()),
        "weights": pl.List(pl.Float64()),
        "label": pl.Int64(),
        "predicted": pl.Int64(),
        "difficulty": pl.Int64(),
    },
    nullable=frozenset({"arrival_time_s", "label", "predicted", "difficulty"}),
)


@dataclass(frozen=True)
class RoutingTrace:
    """A validated routing trace: the table plus ``n_experts`` and provenance metadata."""

    table: pl.DataFrame
    n_experts: int
    meta: Mapping[str, str]

    def __post_init__(self) -> None:
        _validate(self.table, self.n_experts, "routing trace")

    @classmethod
    def from_arrays(
        cls,
        experts: np.ndarray,
        weights: np.ndarray,
        n_experts: int,
        *,
        labels: np.ndarray | None = None,
        predicted: np.ndarray | None = None,
        difficulty: np.ndarray | None = None,
        arrival_time_s: np.ndarray | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> RoutingTrace:
        """Build from padded ``[N, S]`` arrays where unused slots hold expert ``-1``."""
        experts = np.asarray(experts, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        if experts.ndim != 2 or experts.shape != weights.shape:
            raise FormatError("routing trace", "experts", "must be [N, S] and match weights")
        used = experts >= 0
        n = len(experts)

        def opt(a: np.ndarray | None) -> list | None:
            return None if a is None else np.asarray(a).tolist()

        table = pl.DataFrame(
            {
                "sample": np.arange(n),
                "arrival_index": np.arange(n),
                "arrival_time_s": opt(arrival_time_s) or [None] * n,
                "k": used.sum(1),
                "experts": [row[m].tolist() for row, m in zip(experts, used, strict=True)],
                "weights": [row[m].tolist() for row, m in zip(weights, used, strict=True)],
                "label": opt(labels) or [None] * n,
                "predicted": opt(predicted) or [None] * n,
                "difficulty": opt(difficulty) or [None] * n,
            },
            schema=dict(ROUTING.columns),
        )
        return cls(table, n_experts, dict(meta or {}))

    @property
    def k(self) -> np.ndarray:
        """Experts per sample, in arrival order."""
        return self.table["k"].to_numpy()

    @property
    def arrival_time_s(self) -> np.ndarray | None:
        """Arrival times in seconds, or None when the trace has no timed arrivals."""
        col = self.table["arrival_time_s"]
        return None if len(col) == 0 or col.null_count() else col.to_numpy().astype(float)

    @property
    def correct(self) -> np.ndarray | None:
        """Per sample, whether the prediction was right (None when labels are absent)."""
        lab, pred = self.table["label"], self.table["predicted"]
        if lab.null_count() or pred.null_count():
            return None
        return (lab == pred).to_numpy()

    @property
    def difficulty(self) -> np.ndarray | None:
        """Per-sample difficulty level, when the data set defines one."""
        col = self.table["difficulty"]
        return None if col.null_count() else col.to_numpy()

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """``(experts, weights)`` as ``[N, max k]`` arrays, unused slots ``-1`` and 0."""
        width = int(self.k.max()) if len(self.table) else 0
        experts = np.full((len(self.table), width), -1, dtype=np.int64)
        weights = np.zeros((len(self.table), width))
        rows = zip(self.table["experts"].to_list(), self.table["weights"].to_list(), strict=True)
        for i, (e, w) in enumerate(rows):
            experts[i, : len(e)] = e
            weights[i, : len(w)] = w
        return experts, weights

    def expert_counts(self) -> np.ndarray:
        """Samples routed to each expert over the whole trace."""
        flat = self.table["experts"].explode().drop_nulls().to_numpy()
        return np.bincount(flat, minlength=self.n_experts)


def _validate(df: pl.DataFrame, n_experts: int, source: str) -> None:
    if n_experts < 1:
        raise FormatError(source, "n_experts", f"must be >= 1, got {n_experts}")
    k = df["k"]
    if len(df) and (k.min() < 1 or k.max() > n_experts):
        raise FormatError(source, "k", f"must be in 1..{n_experts}")
    if (df["experts"].list.len() != k).any():
        raise FormatError(source, "experts", "length differs from k")
    if (df["weights"].list.len() != k).any():
        raise FormatError(source, "weights", "length differs from k")
    flat = df["experts"].explode()
    if len(df) and (flat.min() < 0 or flat.max() >= n_experts):
        raise FormatError(source, "experts", f"expert index outside 0..{n_experts - 1}")
    if (df["experts"].list.n_unique() != k).any():
        raise FormatError(source, "experts", "an expert appears twice for one sample")
    if len(df) and df["weights"].explode().min() < 0:
        raise FormatError(source, "weights", "negative gate weight")
    if df["arrival_index"].n_unique() != len(df):
        raise FormatError(source, "arrival_index", "values must be distinct")


def write_routing(path: str | Path, trace: RoutingTrace) -> None:
    """Write atomically as Parquet with the format name and ``n_experts`` in its metadata."""
    meta = {**trace.meta, "n_experts": str(trace.n_experts)}
    write_table(path, trace.table, ROUTING, meta)


def read_routing(path: str | Path) -> RoutingTrace:
    """Read and validate (schema before load, then row rules); errors name the bad column."""
    df, meta = read_table(path, ROUTING)
    try:
        n_experts = int(meta.get("n_experts", ""))
    except ValueError:
        raise FormatError(str(path), "n_experts", "missing or non-integer metadata") from None
    _validate(df, n_experts, str(path))
    meta = {k: v for k, v in meta.items() if k not in ("n_experts", "deltasim.format")}
    return RoutingTrace(df, n_experts, meta)
