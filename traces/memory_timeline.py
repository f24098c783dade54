"""The ``memory-timeline/1`` table: predicted and measured memory at every step of an order.

One Parquet file, one row per (graph, method, step): the node run at that step,
the memory the graph/1 model predicts there (``scheduler.memory.simulate``'s
``timeline_bytes``) and the memory measured while that node ran (``hw verify
--timeline``: the highest live total of the allocator during the operation).
Several orders of one graph may share a file; ``hw verify`` writes one order
per file, and the report stacks every file it finds. Column names live only here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from traces.errors import FormatError
from traces.table_schema import TableSpec, read_table, write_table

__all__ = [
    "MEMORY_TIMELINE_FORMAT",
    "MEMORY_TIMELINE_SPEC",
    "read_memory_timeline",
    "timeline_frame",
    "write_memory_timeline",
]

MEMORY_TIMELINE_FORMAT = "memory-timeline/1"

MEMORY_TIMELINE_SPEC = TableSpec(
    MEMORY_TIMELINE_FORMAT,
    {
        "graph": pl.String(),
        "level": pl.String(),
        "method": pl.String(),
        "step": pl.Int64(),
        "node": pl.String(),
        "predicted_bytes": pl.Int64(),
        "measured_bytes": pl.Int64(),
    },
    nullable=frozenset({"measured_bytes"}),
)
"""``measured_bytes`` is null where only the prediction exists (an order not run)."""


def timeline_frame(
    graph: str,
    level: str,
    method: str,
    order: Sequence[str],
    predicted_bytes: Sequence[int],
    measured_bytes: Sequence[int] | None,
) -> pl.DataFrame:
    """The rows of one order, steps 0..n-1, in the table's schema."""
    n = len(order)
    if len(predicted_bytes) != n or (measured_bytes is not None and len(measured_bytes) != n):
        raise ValueError("order, predicted_bytes and measured_bytes must have one entry per step")
    return pl.DataFrame(
        {
            "graph": [graph] * n,
            "level": [level] * n,
            "method": [method] * n,
            "step": list(range(n)),
            "node": list(order),
            "predicted_bytes": [int(b) for b in predicted_bytes],
            "measured_bytes": [None] * n
            if measured_bytes is None
            else [int(b) for b in measured_bytes],
        },
        schema=dict(MEMORY_TIMELINE_SPEC.columns),
    )


def _check_rows(df: pl.DataFrame, source: str) -> None:
    """Semantic checks: unique (graph, method, step), steps 0..n-1 per order, sizes >= 0."""
    for name in MEMORY_TIMELINE_SPEC.columns:
        if name not in df.columns:
            raise FormatError(source, name, f"missing column (format {MEMORY_TIMELINE_FORMAT})")
    keys = df.select("graph", "method", "step")
    if keys.n_unique() != df.height:
        raise FormatError(source, "step", "repeats a (graph, method, step)")
    for col in ("step", "predicted_bytes", "measured_bytes"):
        low = df[col].min()
        if low is not None and int(low) < 0:  # type: ignore[arg-type]
            raise FormatError(source, col, "has negative values")
    per = df.group_by("graph", "method").agg(pl.len().alias("n"), pl.col("step").max().alias("m"))
    if per.filter(pl.col("m") != pl.col("n") - 1).height:
        raise FormatError(source, "step", "steps of an order must run 0..n-1 without gaps")


def write_memory_timeline(path: str | Path, df: pl.DataFrame) -> None:
    """Check the rows and write atomically, tagged ``memory-timeline/1``."""
    _check_rows(df, str(path))
    write_table(path, df.sort("graph", "method", "step"), MEMORY_TIMELINE_SPEC)


def read_memory_timeline(path: str | Path) -> pl.DataFrame:
    """Read a ``memory-timeline/1`` file; format tag and schema are checked before loading."""
    df, _ = read_table(path, MEMORY_TIMELINE_SPEC)
    _check_rows(df, str(path))
    return df
