"""benchmarks/bench_sim.py's fidelity tables on the shipped measured run (tiny, default suite);
the speed targets themselves are figures of the benchmark, not tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from benchmarks import bench_sim
from sim.check import HostSpeed

runner = CliRunner()

# the tables' arithmetic over runs, not the model's: at the profile's host speed, with the
# run's absences and price of company left out, each check skips the searches that make the
# default one slow (those are tested in tests/sim/test_run_speed.py and its neighbours)
QUICK = {"host_speed": HostSpeed.PROFILE, "absences_from_run": False, "contention_from_run": False}


@pytest.fixture()
def shipped_run(tmp_path: Path) -> tuple[Path, Path]:
    from traces import data_path
    from traces.serving import summary_path

    run, profile = data_path("serve/cpu-q250.parquet"), data_path("profiles/cpu-host.parquet")
    if not (run.exists() and profile.exists()):
        pytest.skip("the host-model regression data is not shipped")
    copy = tmp_path / "again.parquet"
    shutil.copy(run, copy)
    shutil.copy(summary_path(run), summary_path(copy))
    return run, copy


def test_repeated_runs_of_one_command_are_judged_together(shipped_run: tuple[Path, Path]) -> None:
    """The same run twice: zero spread, the mean prediction is each run's prediction, and the
    'runs ok' count is 0/2 or 2/2 exactly where the single-run check says no or yes."""
    from sim.check import check_run
    from traces import data_path

    run, copy = shipped_run
    profile = data_path("profiles/cpu-host.parquet")
    table = bench_sim.repeated_markdown([run, copy], profile, **QUICK)
    single = {r.B: r for r in check_run(run, profile, **QUICK)}
    rows = [line for line in table.splitlines() if line.startswith("| cpu-q250 ×2 |")]
    assert len(rows) == len(single)
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        b = int(cells[1])
        assert "(0%)" in cells[2] and "(0%)" in cells[5] and "(0%)" in cells[8]
        assert cells[-2] == ("2/2" if single[b].within else "0/2")
        assert cells[-1].startswith("yes" if single[b].within else "no")
        assert cells[7] == f"{single[b].error_pct['p50']:+.1f}%"


def _only_b(run: Path, b: int, out: Path) -> Path:
    """``run``'s records and summary at one B, written as a run of their own at ``out``."""
    from traces.serving import (
        read_records,
        read_summary,
        summary_path,
        write_records,
        write_summary,
    )

    records, config = read_records(run)
    write_records(out, records.filter(pl.col("B") == b), config)
    summary, config = read_summary(summary_path(run))
    write_summary(summary_path(out), summary.filter(pl.col("B") == b), config)
    return out


def test_cli_prints_the_repeated_table_without_the_speed_part(
    shipped_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """The benchmark's command with the check's defaults, on the shipped run's B = 16 alone
    (twice): one row, for that B."""
    from traces import data_path

    run, _ = shipped_run
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _only_b(run, 16, tmp_path / "a" / "cpu-q250.parquet")
    again = _only_b(run, 16, tmp_path / "b" / "cpu-q250.parquet")
    res = runner.invoke(
        bench_sim.app,
        ["--no-speed", "--profile", str(data_path("profiles/cpu-host.parquet")),
         "--repeated", f"{first},{again}"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = [line for line in res.stdout.splitlines() if line.startswith("| cpu-q250 ×2 |")]
    assert len(rows) == 1 and rows[0].startswith("| cpu-q250 ×2 | 16 |"), res.stdout


def test_repeated_table_with_the_sensitivity_band(shipped_run: tuple[Path, Path]) -> None:
    """With --sensitivity: two more columns, each the band ``sim check --sensitivity`` gives
    for the run (the same run twice: its own band), and '∋ meas' exactly when the measured
    value lies in it."""
    from sim.check import check_run
    from traces import data_path

    run, copy = shipped_run
    profile = data_path("profiles/cpu-host.parquet")
    table = bench_sim.repeated_markdown([run, copy], profile, 0.05, **QUICK)
    assert "p50 band ±5% | p99 band ±5% |" in table.splitlines()[0]
    single = {r.B: r for r in check_run(run, profile, sensitivity=0.05, **QUICK)}
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
