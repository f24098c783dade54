"""Shared machinery of the Parquet tables: a schema spec, a check before load, atomic writes.

Each on-disk table has its own module (``traces.routing``, ``traces.moe_results``,
``traces.moe_load``) that declares a :class:`TableSpec` and thin
``read_*``/``write_*`` functions; this module only enforces a spec. The
format name and version (``"routing/1"``) travel in the Parquet key-value
metadata under ``deltasim.format``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from traces.atomic import atomic_path
from traces.errors import FormatError

__all__ = ["FORMAT_KEY", "TableSpec", "check_table", "read_table", "write_table"]

FORMAT_KEY = "deltasim.format"


@dataclass(frozen=True)
class TableSpec:
    """Columns (name -> polars dtype) of one table format; ``nullable`` may hold nulls."""

    format: str
    columns: Mapping[str, pl.DataType]
    nullable: frozenset[str] = field(default_factory=frozenset)

    def empty(self) -> pl.DataFrame:
        """A zero-row frame with exactly this schema."""
        return pl.DataFrame(schema=dict(self.columns))

    def frame(self, rows: Iterable[Any]) -> pl.DataFrame:
        """Dataclass records (fields named like the columns) as a frame with this schema."""
        data = [asdict(r) for r in rows]
        return pl.DataFrame(data, schema=dict(self.columns)) if data else self.empty()


def _compatible(found: pl.DataType, want: pl.DataType) -> bool:
    if found == want or found == pl.Null:
        return True
    if want.is_integer():
        return found.is_integer()
    if want.is_float():
        return found.is_numeric()
    if isinstance(want, pl.List):
        return isinstance(found, pl.List) and _compatible(found.inner, want.inner)
    return False


def _conform(df: pl.DataFrame, spec: TableSpec, source: str) -> pl.DataFrame:
    for name, want in spec.columns.items():
        if name not in df.columns:
            raise FormatError(source, name, f"missing column (format {spec.format})")
        if not _compatible(df.schema[name], want):
            raise FormatError(source, name, f"has type {df.schema[name]}, expected {want}")
    df = df.select([pl.col(n).cast(t) for n, t in spec.columns.items()])
    for name in spec.columns:
        if name not in spec.nullable and df[name].null_count():
            raise FormatError(source, name, "has null values but is not nullable")
    return df


def write_table(
    path: str | Path,
    df: pl.DataFrame,
    spec: TableSpec,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Check ``df`` against ``spec`` and write it atomically as Parquet (zstd)."""
    df = _conform(df, spec, str(path))
    meta = {FORMAT_KEY: spec.format, **{k: str(v) for k, v in (metadata or {}).items()}}
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd", metadata=meta)


def check_table(path: str | Path, spec: TableSpec) -> dict[str, str]:
    """Check format name and schema without loading rows; return the key-value metadata."""
    source = str(path)
    if not Path(path).is_file():
        raise FormatError(source, "(file)", "no such file")
    try:
        meta = pl.read_parquet_metadata(path)
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # polars raises several types for a non-Parquet file
        raise FormatError(source, "(parquet)", f"not a readable Parquet file: {exc}") from None
    found = meta.get(FORMAT_KEY)
    if found != spec.format:
        raise FormatError(source, FORMAT_KEY, f"is {found!r}, expected {spec.format!r}")
    for name, want in spec.columns.items():
        if name not in schema:
            raise FormatError(source, name, f"missing column (format {spec.format})")
        if not _compatible(schema[name], want):
            raise FormatError(source, name, f"has type {schema[name]}, expected {want}")
    return {k: v for k, v in meta.items() if not k.startswith("ARROW:")}


def read_table(path: str | Path, spec: TableSpec) -> tuple[pl.DataFrame, dict[str, str]]:
    """Check, then load; returns the frame in the spec's column order and the metadata."""
    meta = check_table(path, spec)
    df = pl.read_parquet(path, columns=list(spec.columns))
    return _conform(df, spec, str(path)), meta
