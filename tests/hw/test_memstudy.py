"""hw memstudy: step peaks (eager vs compile, AC), per-method predicted vs measured, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hw.memory.memstudy as memstudy
from hw.cli import app
from hw.memory.models import AcMode
from traces.memstudy import read_memstudy

MLP = "mlp:blocks=2,dim=16,hidden=32"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ms") / "memstudy.parquet"
    memstudy.run_memstudy(
        out, [MLP], [2], ["given", "dfs", "lpmf"], ["fx"], acs=[AcMode.FULL], time_limit_s=2
    )
    return out


def test_step_part_measures_eager_and_both_compile_variants(study: Path) -> None:
    df = read_memstudy(study)
    steps = df.filter(df["study"] == "step")
    got = {(r["mode"], r["reorder_for_peak_memory"]) for r in steps.iter_rows(named=True)}
    assert got == {("eager", None), ("compile", True), ("compile", False)}
    assert (steps["measured_peak_bytes"] > 0).all()


def test_order_part_predicts_fx_peaks_exactly(study: Path) -> None:
    df = read_memstudy(study)
    orders = df.filter(df["study"] == "order")
    assert set(orders["graph"]) == {"forward", "backward"}
    assert orders.height >= 4
    assert (orders["predicted_peak_bytes"] == orders["measured_peak_bytes"]).all()
    assert orders["order_applied"].all() and orders["matches_default_result"].all()


def test_study_resumes_without_measuring_again(
    study: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a finished row was measured again")

    monkeypatch.setattr(memstudy, "measure_step_peak", boom)
    monkeypatch.setattr(memstudy, "capture_step", boom)
    before = read_memstudy(study)
    after = memstudy.run_memstudy(
        study, [MLP], [2], ["given", "dfs", "lpmf"], ["fx"], acs=[AcMode.FULL]
    )
    assert after.to_dicts() == before.to_dicts()


def test_eager_checkpointing_lowers_the_step_peak() -> None:
    spec = memstudy.ModelSpec("transformer:blocks=2", 4, AcMode.NONE, "float32", 0)
    plain = memstudy.measure_step_peak(spec, "eager")
    ac = memstudy.measure_step_peak(
        memstudy.ModelSpec(spec.spec, 4, AcMode.FULL, "float32", 0), "eager"
    )
    assert ac < plain


def test_cli_memstudy_rejects_bad_level_with_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["memstudy", "--out", str(tmp_path / "m.parquet"), "--levels", "tpu"]
    )
    assert result.exit_code == 2 and "level" in result.output
    assert not (tmp_path / "m.parquet").exists()


def test_cli_memstudy_json_resumes_existing_table(study: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["memstudy", "--out", str(study), "--models", MLP, "--batches", "2",
         "--methods", "given,dfs,lpmf", "--parts", "order", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == read_memstudy(study).height
