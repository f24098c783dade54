"""memory-timeline/1 table: write -> read round trip, schema and row checks, clear errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from traces.errors import FormatError
from traces.memory_timeline import (
    MEMORY_TIMELINE_SPEC,
    read_memory_timeline,
    timeline_frame,
    write_memory_timeline,
)
from traces.table_schema import FORMAT_KEY


def _frame() -> pl.DataFrame:
    return pl.concat(
        [
            timeline_frame("bw", "fx", "best", ["a", "b", "c"], [10, 30, 20], [10, 31, 20]),
            timeline_frame("bw", "fx", "given", ["b", "a", "c"], [25, 30, 20], None),
        ]
    )


def test_round_trip_keeps_every_value(tmp_path: Path) -> None:
    df = _frame()
    path = tmp_path / "t.parquet"
    write_memory_timeline(path, df)
    back = read_memory_timeline(path)
    assert back.schema == pl.Schema(dict(MEMORY_TIMELINE_SPEC.columns))
    assert back.sort("method", "step").to_dicts() == df.sort("method", "step").to_dicts()
    assert pl.read_parquet_metadata(path)[FORMAT_KEY] == "memory-timeline/1"
    assert back.filter(pl.col("method") == "given")["measured_bytes"].null_count() == 3


def test_untagged_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    _frame().write_parquet(path)
    with pytest.raises(FormatError, match="memory-timeline/1"):
        read_memory_timeline(path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_memory_timeline(path, _frame())
    meta = pl.read_parquet_metadata(path)
    pl.read_parquet(path).drop("predicted_bytes").write_parquet(path, metadata=meta)
    with pytest.raises(FormatError, match="predicted_bytes"):
        read_memory_timeline(path)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda df: pl.concat([df, df.head(1)]), "repeats"),
        (lambda df: df.filter(pl.col("step") != 1), "without gaps"),
        (lambda df: df.with_columns(pl.lit(-1).alias("predicted_bytes")), "negative"),
        (lambda df: df.drop("node"), "node"),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_written(
    tmp_path: Path, bad: object, match: str
) -> None:
    path = tmp_path / "t.parquet"
    with pytest.raises(FormatError, match=match):
        write_memory_timeline(path, bad(_frame()))  # type: ignore[operator]
    assert not path.exists()


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError):
        timeline_frame("g", "fx", "m", ["a", "b"], [1], None)
