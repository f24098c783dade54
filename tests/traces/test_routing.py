"""Routing traces round-trip; bad files fail with an error naming the column."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from traces.errors import FormatError
from traces.routing import ROUTING, RoutingTrace, read_routing, write_routing
from traces.table_schema import FORMAT_KEY


def _trace(difficulty: bool = True) -> RoutingTrace:
    experts = np.array([[3, 1, -1], [0, -1, -1], [2, 0, 1]])
    weights = np.array([[0.6, 0.4, 0.0], [1.0, 0.0, 0.0], [0.5, 0.3, 0.2]])
    return RoutingTrace.from_arrays(
        experts,
        weights,
        4,
        labels=np.array([1, 2, 3]),
        predicted=np.array([1, 0, 3]),
        difficulty=np.array([0, 2, 1]) if difficulty else None,
        meta={"run": "r1", "gate": "topp"},
    )


def test_round_trip(tmp_path) -> None:
    trace = _trace()
    path = tmp_path / "t.parquet"
    write_routing(path, trace)
    back = read_routing(path)
    assert back.table.equals(trace.table)
    assert back.n_experts == 4 and back.meta == {"run": "r1", "gate": "topp"}
    assert back.k.tolist() == [2, 1, 3]
    assert back.expert_counts().tolist() == [2, 2, 1, 1]
    assert back.correct.tolist() == [True, False, True]
    assert back.difficulty.tolist() == [0, 2, 1]
    experts, weights = back.padded()
    assert experts.tolist() == [[3, 1, -1], [0, -1, -1], [2, 0, 1]]
    assert weights[0].tolist() == [0.6, 0.4, 0.0]


def test_nullable_columns_stay_null(tmp_path) -> None:
    path = tmp_path / "t.parquet"
    write_routing(path, _trace(difficulty=False))
    back = read_routing(path)
    assert back.difficulty is None and back.arrival_time_s is None


def test_timed_arrivals_round_trip(tmp_path) -> None:
    t = _trace()
    timed = RoutingTrace.from_arrays(
        *t.padded(), 4, arrival_time_s=np.array([0.0, 0.5, 2.0]), meta={"run": "x"}
    )
    path = tmp_path / "t.parquet"
    write_routing(path, timed)
    assert read_routing(path).arrival_time_s.tolist() == [0.0, 0.5, 2.0]


def test_missing_column_is_named(tmp_path) -> None:
    path = tmp_path / "t.parquet"
    _trace().table.drop("weights").write_parquet(
        path, metadata={FORMAT_KEY: ROUTING.format, "n_experts": "4"}
    )
    with pytest.raises(FormatError, match="weights: missing column"):
        read_routing(path)


def test_wrong_format_and_non_parquet(tmp_path) -> None:
    path = tmp_path / "t.parquet"
    _trace().table.write_parquet(path)  # no format metadata
    with pytest.raises(FormatError, match=r"deltasim\.format"):
        read_routing(path)
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    with pytest.raises(FormatError, match="not a readable Parquet"):
        read_routing(bad)
    with pytest.raises(FormatError, match="no such file"):
        read_routing(tmp_path / "missing.parquet")


def test_wrong_type_is_named(tmp_path) -> None:
    path = tmp_path / "t.parquet"
    df = _trace().table.with_columns(pl.col("k").cast(pl.String))
    df.write_parquet(path, metadata={FORMAT_KEY: ROUTING.format, "n_experts": "4"})
    with pytest.raises(FormatError, match="k: has type"):
        read_routing(path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (pl.col("k") + 1, "experts: length differs"),
        (pl.lit(0).alias("k"), "k: must be in"),
        (pl.col("experts").list.eval(pl.element() + 4), "experts: expert index"),
        (pl.col("weights").list.eval(-pl.element()), "weights: negative"),
        (pl.lit(0).alias("arrival_index"), "arrival_index"),
    ],
)
def test_row_rules(change: pl.Expr, match: str) -> None:
    df = _trace().table.with_columns(change)
    with pytest.raises(FormatError, match=match):
        replace(_trace(), table=df)


def test_write_never_leaves_partial_file(tmp_path) -> None:
    path = tmp_path / "t.parquet"
    trace = _trace()
    bad = trace.table.drop("k")
    with pytest.raises(FormatError):
        from traces.table_schema import write_table

        write_table(path, bad, ROUTING)
    assert not path.exists() and not list(tmp_path.iterdir())
