"""benchmarks/bench_sim.py's fidelity tables on the shipped measured run (tiny, default suite);
the speed targets themselves are figures of the benchmark, not tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks import bench_sim

runner = CliRunner()


@pytest.fixture()
def shipped_run(tmp_path: Path) -> tuple[Path, Path]:
    from traces import data_path

    run, profile = data_path("serve/cpu-q250.parquet"), data_path("profiles/cpu-host.parquet")
    if not (run.exists() and profile.exists()):
        pytest.skip("the host-model regression data is not shipped")
    copy = tmp_path / "again.parquet"
    shutil.copy(run, copy)
    shutil.copy(run.with_name("cpu-q250.summary.parquet"), tmp_path / "again.summary.parquet")
    return run, copy


def test_repeated_runs_of_one_command_are_judged_together(shipped_run: tuple[Path, Path]) -> None:
    """The same run twice: zero spread, the mean prediction is each run's prediction, and the
    'runs ok' count is 0/2 or 2/2 exactly where the single-run check says no or yes."""
    from sim.check import check_run
    from traces import data_path

    run, copy = shipped_run
    profile = data_path("profiles/cpu-host.parquet")
    table = bench_sim.repeated_markdown([run, copy], profile)
    single = {r.B: r for r in check_run(run, profile)}
    rows = [line for line in table.splitlines() if line.startswith("| cpu-q250 ×2 |")]
    assert len(rows) == len(single)
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        b = int(cells[1])
        assert "(0%)" in cells[2] and "(0%)" in cells[5] and "(0%)" in cells[8]
        assert cells[-2] == ("2/2" if single[b].within else "0/2")
        assert cells[-1].startswith("yes" if single[b].within else "no")
        assert cells[7] == f"{single[b].error_pct['p50']:+.1f}%"


def test_cli_prints_the_repeated_table_without_the_speed_part(
    shipped_run: tuple[Path, Path],
) -> None:
    from traces import data_path

    run, copy = shipped_run
    res = runner.invoke(
        bench_sim.app,
        ["--no-speed", "--profile", str(data_path("profiles/cpu-host.parquet")),
         "--repeated", f"{run},{copy}"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "| cpu-q250 ×2 | 16 |" in res.stdout


def test_repeated_table_with_the_sensitivity_band(shipped_run: tuple[Path, Path]) -> None:
    """With --sensitivity: two more columns, each the band ``sim check --sensitivity`` gives
    for the run (the same run twice: its own band), and '∋ meas' exactly when the measured
    value lies in it."""
    from sim.check import check_run
    from traces import data_path

    run, copy = shipped_run
    profile = data_path("profiles/cpu-host.parquet")
    table = bench_sim.repeated_markdown([run, copy], profile, 0.05)
    assert "p50 band ±5% | p99 band ±5% |" in table.splitlines()[0]
    single = {r.B: r for r in check_run(run, profile, sensitivity=0.05)}
    rows = [line for line in table.splitlines() if line.startswith("| cpu-q250 ×2 |")]
    assert len(rows) == len(single)
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        r = single[int(cells[1])]
        assert r.band is not None
        for cell, k in ((cells[-2], "p50"), (cells[-1], "p99")):
            lo, hi = r.band[k]
            assert cell.startswith(f"{lo * 1e3:.2f}–{hi * 1e3:.2f}")
            assert cell.endswith("∋ meas") == bool(r.in_band(k))
    res = runner.invoke(
        bench_sim.app, ["--no-speed", "--repeated", f"{run},{copy}", "--sensitivity", "0"]
    )
    assert res.exit_code == 2 and "--sensitivity" in res.output
