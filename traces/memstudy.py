"""The ``memstudy/1`` results table: peak memory of real steps and of scheduled orders.

One parquet file, one row per measurement. ``study`` is ``"step"`` for a whole
training step (eager vs torch.compile, checkpointing on/off, Inductor's
``reorder_for_peak_memory`` on/off) and ``"order"`` for one ``sched`` method's
order of one captured graph (predicted vs measured). ``key`` identifies a row,
so an interrupted study resumes where it stopped. ``predicted_with_reuse_bytes``
(Inductor level) is the prediction with the compiled wrapper's decisions for that
order folded in (buffer reuse; since Nov 2026 also aliases, removed buffers and
CPU kernel groups, see docs/memory-capture.md). Column names live only here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from traces.atomic import atomic_write_with
from traces.errors import FormatError

__all__ = [
    "MEMSTUDY_FORMAT",
    "MEMSTUDY_SCHEMA",
    "MemstudyRow",
    "empty_memstudy",
    "read_memstudy",
    "rows_to_frame",
    "write_memstudy",
]

MEMSTUDY_FORMAT = "memstudy/1"
_META_KEY = b"deltasim.format"


@dataclass(frozen=True, slots=True)
class MemstudyRow:
    """One measurement. ``mode`` is eager|compile for steps, fx|inductor for orders."""

    key: str
    study: str
    model: str
    batch: int
    ac: str
    dtype: str
    mode: str
    reorder_for_peak_memory: bool | None
    graph: str
    method: str | None
    predicted_peak_bytes: int | None
    measured_peak_bytes: int
    order_applied: bool | None
    matches_default_result: bool | None
    solve_time_s: float | None
    torch: str
    predicted_with_reuse_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.study not in ("step", "order"):
            raise ValueError(f"study must be step or order, got {self.study!r}")
        if self.measured_peak_bytes < 0 or self.batch < 1:
            raise ValueError("measured_peak_bytes must be >= 0 and batch >= 1")


MEMSTUDY_SCHEMA: dict[str, pl.DataType] = {
    "key": pl.String(),
    "study": pl.String(),
    "model": pl.String(),
    "batch": pl.Int64(),
    "ac": pl.String(),
    "dtype": pl.String(),
    "mode": pl.String(),
    "reorder_for_peak_memory": pl.Boolean(),
    "graph": pl.String(),
    "method": pl.String(),
    "predicted_peak_bytes": pl.Int64(),
    "measured_peak_bytes": pl.Int64(),
    "order_applied": pl.Boolean(),
    "matches_default_result": pl.Boolean(),
    "solve_time_s": pl.Float64(),
    "torch": pl.String(),
    "predicted_with_reuse_bytes": pl.Int64(),
}

assert [f.name for f in fields(MemstudyRow)] == list(MEMSTUDY_SCHEMA)


def empty_memstudy() -> pl.DataFrame:
    return pl.DataFrame(schema=MEMSTUDY_SCHEMA)


def rows_to_frame(rows: Iterable[MemstudyRow]) -> pl.DataFrame:
    return pl.DataFrame([asdict(r) for r in rows], schema=MEMSTUDY_SCHEMA)


def _check(df: pl.DataFrame, source: str) -> pl.DataFrame:
    for name, dtype in MEMSTUDY_SCHEMA.items():
        if name not in df.columns:
            raise FormatError(source, name, "column is missing")
        if df.schema[name] != dtype and df.schema[name] != pl.Null():
            raise FormatError(source, name, f"must be {dtype}, got {df.schema[name]}")
    extra = [c for c in df.columns if c not in MEMSTUDY_SCHEMA]
    if extra:
        raise FormatError(source, extra[0], "is not a memstudy/1 column")
    if df["key"].n_unique() != df.height:
        raise FormatError(source, "key", "holds duplicate keys")
    return df.select(list(MEMSTUDY_SCHEMA)).cast(MEMSTUDY_SCHEMA)  # type: ignore[arg-type]


def read_memstudy(path: str | Path) -> pl.DataFrame:
    """Read and validate a memstudy/1 file (format tag and schema checked before use)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(str(path), "(file)", "no such file")
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as exc:  # pyarrow raises several types for non-parquet files
        raise FormatError(str(path), "(file)", f"not a parquet file: {exc}") from None
    tag = meta.get(_META_KEY, b"").decode()
    if tag != MEMSTUDY_FORMAT:
        raise FormatError(str(path), "(format)", f"must be {MEMSTUDY_FORMAT!r}, got {tag!r}")
    return _check(pl.read_parquet(path), str(path))


def write_memstudy(df: pl.DataFrame, path: str | Path) -> None:
    """Validate and write atomically, tagged with the format and version."""
    df = _check(df, str(path))
    table = df.to_arrow()
    table = table.replace_schema_metadata({_META_KEY: MEMSTUDY_FORMAT.encode()})
    atomic_write_with(path, lambda tmp: pq.write_table(table, tmp))
