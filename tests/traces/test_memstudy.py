"""memstudy/1 table: write -> read round trip, schema checks, clear errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from traces.errors import FormatError
from traces.memstudy import (
    MEMSTUDY_SCHEMA,
    MemstudyRow,
    empty_memstudy,
    read_memstudy,
    rows_to_frame,
    write_memstudy,
)


def _rows() -> list[MemstudyRow]:
    return [
        MemstudyRow(
            "step|mlp|2|full|eager", "step", "mlp", 2, "full", "float32", "eager",
            None, "step", None, None, 123_456, None, None, None, "2.13.0",
        ),
        MemstudyRow(
            "order|mlp|2|full|fx|backward|best", "order", "mlp", 2, "full", "float32", "fx",
            None, "backward", "best", 99_000, 99_000, True, True, 0.25, "2.13.0",
        ),
    ]  # fmt: skip


def test_round_trip_keeps_every_value(tmp_path: Path) -> None:
    df = rows_to_frame(_rows())
    write_memstudy(df, tmp_path / "m.parquet")
    back = read_memstudy(tmp_path / "m.parquet")
    assert back.schema == pl.Schema(MEMSTUDY_SCHEMA)
    assert back.to_dicts() == df.to_dicts()


def test_empty_table_round_trips(tmp_path: Path) -> None:
    write_memstudy(empty_memstudy(), tmp_path / "e.parquet")
    assert read_memstudy(tmp_path / "e.parquet").height == 0


def test_untagged_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    rows_to_frame(_rows()).write_parquet(path)
    with pytest.raises(FormatError, match="memstudy/1"):
        read_memstudy(path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    write_memstudy(rows_to_frame(_rows()), path)
    table = pq.read_table(path)
    pq.write_table(table.drop(["measured_peak_bytes"]).replace_schema_metadata(
        table.schema.metadata), path)  # fmt: skip
    with pytest.raises(FormatError, match="measured_peak_bytes"):
        read_memstudy(path)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    rows = _rows()
    with pytest.raises(FormatError, match="duplicate"):
        write_memstudy(rows_to_frame([rows[0], rows[0]]), tmp_path / "d.parquet")
    assert not (tmp_path / "d.parquet").exists()


def test_bad_row_values_are_rejected() -> None:
    with pytest.raises(ValueError):
        MemstudyRow(
            "k", "nope", "mlp", 1, "none", "float32", "eager",
            None, "step", None, None, 1, None, None, None, "x",
        )  # fmt: skip
