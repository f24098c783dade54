"""moe-results/1 and moe-load/1: records match the schema, round-trip, named errors."""

from __future__ import annotations

from dataclasses import fields

import polars as pl
import pytest

from traces.errors import FormatError
from traces.moe_load import MOE_LOAD, LoadRow, read_load, read_load_rows, write_load
from traces.moe_results import (
    MOE_RESULTS,
    ResultRow,
    read_result_rows,
    read_results,
    write_results,
)


def _row(**kw) -> ResultRow:
    base = dict(
        experiment="delta", dataset="mnist1d-5000", run="r", model="moe", gate="topp", seed=0,
        n_experts=8, train_k=None, train_p=0.5, penalty=None, max_k=None, eval_k=None,
        accuracy=0.8, n_test=1000, mean_k=1.7, expert_evals=1700, flops_per_sample=1e5,
        train_time_s=3.0, routing_trace="r.parquet",
    )  # fmt: skip
    base.update(kw)
    return ResultRow(**base)


def test_records_and_schemas_agree() -> None:
    assert [f.name for f in fields(ResultRow)] == list(MOE_RESULTS.columns)
    assert [f.name for f in fields(LoadRow)] == list(MOE_LOAD.columns)


def test_results_round_trip(tmp_path) -> None:
    rows = [_row(), _row(model="mlp", gate=None, n_experts=0, train_p=None, routing_trace=None)]
    path = tmp_path / "r.parquet"
    write_results(path, rows)
    assert read_result_rows(path) == rows
    assert read_results(path).schema == pl.Schema(MOE_RESULTS.columns)


def test_load_round_trip(tmp_path) -> None:
    rows = [
        LoadRow("r", "topk", 2, 2.0, e, 10 * e, e / 6, 100, 0.1, 0.01, 0.05, 0.2) for e in range(4)
    ]
    path = tmp_path / "l.parquet"
    write_load(path, rows)
    assert read_load_rows(path) == rows
    assert len(read_load(path)) == 4


def test_missing_column_is_named(tmp_path) -> None:
    path = tmp_path / "r.parquet"
    write_results(path, [_row()])
    df = pl.read_parquet(path).drop("accuracy")
    df.write_parquet(path, metadata=pl.read_parquet_metadata(tmp_path / "r.parquet") or None)
    with pytest.raises(FormatError, match="accuracy: missing column"):
        read_results(path)


def test_null_in_required_column_rejected(tmp_path) -> None:
    full = pl.DataFrame({c: [None] for c in MOE_LOAD.columns}, schema=dict(MOE_LOAD.columns))
    with pytest.raises(FormatError, match="run: has null values"):
        write_load(tmp_path / "l.parquet", full)


def test_bad_record_values() -> None:
    with pytest.raises(FormatError, match="accuracy"):
        _row(accuracy=1.5)
