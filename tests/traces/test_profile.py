"""Latency profile: round trips in both formats, validation, interpolation."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from traces.profile import (
    ProfileError,
    ProfileExtrapolationWarning,
    profile_from_frame,
    read_profile,
    write_profile,
)


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "expert": [0, 0, 0, 1, 1],
            "batch_size": [1, 2, 8, 1, 4],
            "latency_s": [1e-3, 1.5e-3, 4e-3, 2e-3, 3e-3],
            "latency_p10_s": [0.9e-3, 1.4e-3, 3.8e-3, 1.9e-3, 2.9e-3],
            "latency_p90_s": [1.1e-3, 1.6e-3, 4.2e-3, 2.1e-3, 3.1e-3],
            "device": ["cpu:test"] * 5,
            "samples": [100] * 5,
        }
    )


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip_in_both_formats(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"profile{suffix}"
    write_profile(_frame(), path)
    back = read_profile(path)
    assert back.frame.sort(["expert", "batch_size"]).equals(
        _frame().sort(["expert", "batch_size"]).select(back.frame.columns)
    )
    assert back.experts == [0, 1]


def test_interpolates_between_measured_sizes() -> None:
    prof = profile_from_frame(_frame())
    assert prof.latency_s(0, 2) == pytest.approx(1.5e-3)
    assert prof.latency_s(0, 5) == pytest.approx(1.5e-3 + 3 * (2.5e-3 / 6))
    assert prof.latency_s(1, 2) == pytest.approx(2e-3 + (1e-3 / 3))


def test_extrapolates_linearly_past_the_largest_with_a_warning() -> None:
    prof = profile_from_frame(_frame())
    with pytest.warns(ProfileExtrapolationWarning):
        t = prof.table([0], 10)
    assert t[0, 10] == pytest.approx(4e-3 + 2 * (2.5e-3 / 6))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda f: f.drop("latency_s"), "latency_s"),
        (lambda f: f.drop("expert"), "expert"),
        (lambda f: f.with_columns(pl.lit(0.0).alias("latency_s")), "latency_s"),
        (lambda f: f.with_columns(pl.lit(-1.0).alias("latency_s")), "latency_s"),
        (lambda f: f.with_columns(pl.lit(0).alias("batch_size")), "batch_size"),
        (lambda f: pl.concat([f, f.head(1)]), "duplicate"),
    ],
)
def test_bad_profiles_name_the_problem(change, field: str) -> None:
    with pytest.raises(ProfileError, match=field):
        profile_from_frame(change(_frame()))


def test_unknown_expert_is_an_error() -> None:
    with pytest.raises(ProfileError, match="expert 7"):
        profile_from_frame(_frame()).points(7)


def test_unsupported_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="extension"):
        write_profile(_frame(), tmp_path / "p.txt")
    with pytest.raises(ProfileError, match="no such file"):
        read_profile(tmp_path / "absent.parquet")


def test_gate_and_combine_rows_live_in_the_steps_file(tmp_path: Path) -> None:
    from traces.profile import steps_path

    steps = pl.DataFrame(
        {
            "expert": [-1, -1],
            "batch_size": [1, 1],
            "latency_s": [3e-4, 1e-4],
            "component": ["gate", "combine"],
        }
    )
    frame = pl.concat(
        [_frame().with_columns(pl.lit("expert").alias("component")), steps],
        how="diagonal_relaxed",
    )
    path = tmp_path / "p.parquet"
    write_profile(frame, path)
    on_disk = pl.read_parquet(path)
    assert "component" not in on_disk.columns
    assert (on_disk["expert"] >= 0).all() and on_disk.height == _frame().height
    assert steps_path(path).exists()
    prof = read_profile(path)
    assert prof.experts == [0, 1]
    assert prof.component_latency_s("gate") == pytest.approx(3e-4)
    assert prof.component_latency_s("combine") == pytest.approx(1e-4)


def test_a_component_column_in_the_contract_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    _frame().with_columns(pl.lit("expert").alias("component")).write_parquet(path)
    with pytest.raises(ProfileError, match="steps file"):
        read_profile(path)


def test_profile_variation_is_read_from_hw_profiles_record(tmp_path: Path) -> None:
    from traces.profile import meta_path, profile_variation

    path = tmp_path / "p.parquet"
    write_profile(_frame(), path)
    assert meta_path(path) == tmp_path / "p.parquet.meta.json"
    assert profile_variation(path) is None  # another tool's profile: no record, no error
    record = {"device": "cpu:test", "variation": {"median_rel": 0.31, "max_rel": 0.9}}
    meta_path(path).write_text(json.dumps(record))
    assert profile_variation(path) == pytest.approx(0.31)
    for broken in ("{not json", '{"variation": null}', '{"variation": {"median_rel": -1}}',
                   '{"variation": {"median_rel": "NaN"}}', "[]"):  # fmt: skip
        meta_path(path).write_text(broken)
        assert profile_variation(path) is None, broken
