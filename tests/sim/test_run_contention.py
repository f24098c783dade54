"""What company cost a measured run's steps, as factors on the profile's contention
(:mod:`sim.run_contention`, ``sim check --host-contention``): factors planted in a model run
are read back; the table's fields; the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from sim.check import HostSpeed, check_runs
from sim.cli import app
from sim.config import SimConfig
from sim.engine import simulate
from sim.output import records_of
from sim.run_contention import RunContention, at_contention, run_contention
from sim.service import ServiceTable
from sim.workload import make_workload
from traces.company_costs import combine_excess_s, expert_call_excess_s
from traces.profile import profile_from_frame, write_profile

from .test_host import host_model_run, host_profile_frame

runner = CliRunner()

PLANTED = RunContention(gate=1.5, expert=0.2, combine=0.4)


def _table() -> ServiceTable:
    return ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 1)


def _config() -> SimConfig:
    return SimConfig(
        batch_size=1, n_experts=8, rate_rps=1500.0, n_requests=3000, max_backlog=None,
        gate_latency_s=200e-6, combine_latency_s=60e-6, seed=5, host=True, warmup=200,
    )  # fmt: skip


def test_at_contention_scales_the_gate_expert_and_combine_only() -> None:
    table = _table()
    assert table.host is not None
    got = at_contention(table, PLANTED).host
    assert got is not None
    assert got.gate_contention_s == pytest.approx(1.5 * (table.host.gate_contention_s or 0.0))
    dispatch, expert, combine = table.host.worker_contention_s
    assert got.worker_contention_s == pytest.approx((dispatch, 0.2 * expert, 0.4 * combine))
    same = at_contention(table, RunContention(1.0, 1.0, 1.0)).host
    assert same is not None and same.gate_contention_s == table.host.gate_contention_s
    assert same.worker_contention_s == table.host.worker_contention_s
    ideal = replace(table, host=None)
    assert at_contention(ideal, PLANTED) is ideal
    # without host terms nothing is read (the rows are not looked at)
    assert run_contention(pl.DataFrame(), _config(), ideal, make_workload(_config())) is None


def test_planted_factors_are_read_back() -> None:
    """A 'run' made by the model with its contention times PLANTED: from the profile's, the
    search finds factors whose replay pays what the run paid for company."""
    cfg, table = _config(), _table()
    work = make_workload(cfg)
    run = records_of(simulate(cfg, at_contention(table, PLANTED), work))
    plain = records_of(simulate(cfg, table, work))
    # the planted run's worker steps cost less beside a gate than the profile's
    for read in (expert_call_excess_s, combine_excess_s):
        ran, profiled = read(run), read(plain)
        assert ran is not None and profiled is not None and ran < 0.6 * profiled
    got = run_contention(run, cfg, table, work)
    assert got is not None
    assert got.gate == pytest.approx(PLANTED.gate, rel=0.2)
    assert got.expert == pytest.approx(PLANTED.expert, abs=0.15)
    assert got.combine == pytest.approx(PLANTED.combine, abs=0.2)
    # the profile's own run reads back about the profile's
    same = run_contention(plain, cfg, table, work)
    assert same is not None and all(f == pytest.approx(1.0, abs=0.2) for f in same)


def _planted_run(tmp_path: Path) -> tuple[Path, Path]:
    prof = tmp_path / "TEST-host-profile.parquet"
    write_profile(host_profile_frame(), prof)
    planted = at_contention(_table(), PLANTED)
    run = host_model_run(tmp_path / "run.parquet", planted, rate_rps=1500.0, b_values=(1,))
    return run, prof


def test_a_cost_that_falls_as_its_factor_rises_holds_the_factor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replayed cost that moves against its factor's step (a long combine seldom lies
    wholly beside a gate, so its measured cost can fall as its contention rises) holds that
    factor where it was before the step; the others go on to their targets. Costs here are
    functions of the replayed table's contention, planted through the search's readers."""
    import sim.run_contention as rc

    table = _table()
    assert table.host is not None and table.host.worker_contention_s
    _, expert0, combine0 = table.host.worker_contention_s

    def combine_cost(contention: float) -> float:  # rises to 1.5 x, then falls
        ratio = contention / combine0
        return 10e-6 * ratio if ratio <= 1.5 else 15e-6 - 20e-6 * (ratio - 1.5)

    def reader(cost: str) -> Callable[[Any], float]:
        def read(got: Any) -> float:
            if isinstance(got, pl.DataFrame):  # the run: the targets
                return {"expert": 4e-6, "combine": 30e-6}[cost]
            _, expert, combine = got.host.worker_contention_s
            return 8e-6 * expert / expert0 if cost == "expert" else combine_cost(combine)

        return read

    replays: list[RunContention] = []
    monkeypatch.setattr(rc, "simulate", lambda c, t, w: replays.append(t) or t)
    monkeypatch.setattr(rc, "records_of", lambda t: t)
    monkeypatch.setattr(rc, "alone_gates_s", lambda rows: pl.Series([], dtype=pl.Float64))
    monkeypatch.setattr(rc, "expert_call_excess_s", reader("expert"))
    monkeypatch.setattr(rc, "combine_excess_s", reader("combine"))
    rows = pl.DataFrame({"B": [1]})
    got = run_contention(rows, _config(), table, make_workload(_config()))
    assert got is not None and got.gate == 1.0
    assert got.expert == pytest.approx(0.5)  # 8 µs at the profile's, 4 in the run
    # the target (30 µs) is past the cost's peak: up x2 (cost 10 -> 5 µs), held at 1
    assert got.combine == 1.0
    assert len(replays) == 2  # the expert's cost met at the second replay, the combine held


def test_check_takes_company_s_cost_from_the_run(tmp_path: Path) -> None:
    run, prof = _planted_run(tmp_path)
    by_mode = {}
    for on in (True, False):  # at the profile's speed: the run's is the profile's
        rows = check_runs([run], prof, host_speed=HostSpeed.PROFILE, contention_from_run=on)
        by_mode[on] = rows[0]
    got = by_mode[True].run_contention
    assert got is not None and got.gate == pytest.approx(PLANTED.gate, rel=0.2)
    assert by_mode[False].run_contention is None
    # the run's own price of company brings the replay's p50 to the run's
    assert abs(by_mode[True].error_pct["p50"]) < abs(by_mode[False].error_pct["p50"])
    assert abs(by_mode[True].error_pct["p50"]) < 3.0


def test_sim_check_host_contention_option(tmp_path: Path) -> None:
    run, prof = _planted_run(tmp_path)
    check = ["check", str(run), "--profile", str(prof), "--host-speed", "profile"]
    docs = {}
    for name, extra in (("default", []), ("run", ["--host-contention", "run"]), ("profile", [
        "--host-contention", "profile"])):  # fmt: skip
        res = runner.invoke(app, [*check, "--json", *extra])
        assert res.exit_code in (0, 1), res.output
        docs[name] = json.loads(res.stdout.splitlines()[0])
    assert docs["profile"]["run_contention"] is None
    assert set(docs["run"]["run_contention"]) == {"gate", "expert", "combine"}
    assert docs["default"] == docs["run"]
    table = runner.invoke(app, [*check, "--host-contention", "run"])
    assert "company's cost from each B's records" in " ".join(table.stdout.split())
    bad = runner.invoke(app, [*check, "--host-contention", "x"])
    assert bad.exit_code == 2 and "--host-contention 'x'" in bad.output
