"""The spells a measured run's device workers sat out with a batch ready, read from its
records and replayed where they were (:mod:`sim.run_absences`, ``HostTerms.absence_times``,
``sim check --worker-absences run``, on by default)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from sim.check import HostSpeed, check_runs
from sim.cli import app
from sim.config import SimConfig
from sim.engine import simulate
from sim.errors import SimConfigError
from sim.host_terms import HostTerms
from sim.output import records_of
from sim.run_absences import MIN_ABSENCE_BATCHES, run_absences, with_absences
from sim.service import ServiceTable
from sim.workload import make_workload
from traces.profile import profile_from_frame, write_profile

from .test_host import host_model_run, host_profile_frame
from .test_host_preempt import host_timeline

runner = CliRunner()


def _away(*absences: tuple[int, float, float]) -> HostTerms:
    """No host costs, both threads at full speed together; these absences replayed."""
    return HostTerms(np.zeros(2), absence_times=absences)


def test_an_absent_worker_starts_no_job_and_the_gate_goes_on() -> None:
    """Gate 1 ms, expert 0.4 ms. Request 0's batch forms at 2 ms inside an absence of 1.5-2.5
    ms: its call runs 2.5-2.9 ms, the gate as without. An absence from 2.2 ms that finds the
    worker in a call lets it end (2.4 ms), and request 1's batch, formed at 3 ms (the gate
    went straight on), waits for its end at 3.2 ms. Request 2, after it, runs as without."""
    plain = host_timeline([1e-3, 1.5e-3, 8e-3], _away())
    assert plain.batch_start_s.tolist() == pytest.approx([2e-3, 3e-3, 9e-3])
    first = host_timeline([1e-3, 1.5e-3, 8e-3], _away((0, 1.5e-3, 1e-3)))
    assert first.gate_done_s.tolist() == pytest.approx(plain.gate_done_s.tolist())
    assert first.batch_start_s.tolist() == pytest.approx([2.5e-3, 3e-3, 9e-3])
    assert first.batch_end_s[0] == pytest.approx(2.9e-3)
    under_way = host_timeline([1e-3, 1.5e-3, 8e-3], _away((0, 2.2e-3, 1e-3)))
    assert under_way.batch_end_s[0] == pytest.approx(2.4e-3)
    assert under_way.batch_start_s.tolist() == pytest.approx([2e-3, 3.2e-3, 9e-3])
    # another device's absence, or two in a row
    assert host_timeline([1e-3], _away((1, 1.5e-3, 1e-3))).batch_start_s[0] == pytest.approx(2e-3)
    chained = host_timeline([1e-3], _away((0, 1.5e-3, 1e-3), (0, 2.4e-3, 1e-3)))
    assert chained.batch_start_s[0] == pytest.approx(3.4e-3)


def test_bad_replayed_absences_are_one_clear_error() -> None:
    for bad in (
        ((0, 2e-3, 1e-3), (0, 1e-3, 1e-3)),  # out of order
        ((0, 1e-3, 0.0),),
        ((-1, 1e-3, 1e-3),),
        ((0, float("nan"), 1e-3),),
    ):
        with pytest.raises(SimConfigError, match="replayed worker absences"):
            _away(*bad)


PLANTED = ((0, 0.8, 0.004), (0, 1.8, 0.004), (0, 2.8, 0.004))


def _b1_run(absences: tuple[tuple[int, float, float], ...]) -> pl.DataFrame:
    """Records of the host model's own run at B = 1, 500 req/s, with these absences."""
    cfg = SimConfig(
        batch_size=1, n_experts=8, rate_rps=500.0, n_requests=2000, max_backlog=None,
        gate_latency_s=200e-6, combine_latency_s=60e-6, seed=6, host=True, warmup=200,
    )  # fmt: skip
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 1)
    assert table.host is not None
    table = replace(table, host=replace(table.host, absence_times=absences))
    return records_of(simulate(cfg, table, make_workload(cfg)))


def test_the_absences_a_run_met_are_read_from_its_records() -> None:
    """Each planted absence is found at the first batch ready inside it, ending with it (less
    the run's usual ready gap); the model's own run without any has none."""
    assert len(run_absences(_b1_run(())).starts_s) == 0  # type: ignore[union-attr]
    rows = _b1_run(PLANTED)
    got = run_absences(rows)
    assert got is not None and len(got.starts_s) == len(PLANTED)
    for (_, start, span), t, found in zip(PLANTED, got.starts_s, got.spans_s, strict=True):
        assert start <= t < start + span
        assert t + found == pytest.approx(start + span, abs=2e-4)
    assert got.rate_hz == pytest.approx(3 / float(rows["complete_s"].max()), rel=0.01)
    assert run_absences(rows.filter(pl.col("batch") < MIN_ABSENCE_BATCHES - 1)) is None


def test_with_absences_sets_the_host_terms() -> None:
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 1)
    got = run_absences(_b1_run(PLANTED))
    assert got is not None
    host = with_absences(table, got).host
    assert host is not None and [d for d, _, _ in host.absence_times] == [0, 0, 0]
    assert [t for _, t, _ in host.absence_times] == pytest.approx(got.starts_s.tolist())
    ideal = replace(table, host=None)
    assert with_absences(ideal, got) is ideal


def _planted_run(tmp_path: Path) -> tuple[Path, Path]:
    """A 'measured' B = 1 run at 500 req/s made by the host model with twelve absences of
    8 ms, where the check's profile (the same host terms) has none."""
    prof = tmp_path / "TEST-host-profile.parquet"
    write_profile(host_profile_frame(), prof)
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 1)
    assert table.host is not None
    planted = tuple((0, 0.5 + 0.25 * i, 0.008) for i in range(12))
    away = replace(table, host=replace(table.host, absence_times=planted))
    run = host_model_run(tmp_path / "run.parquet", away, rate_rps=500.0, b_values=(1,))
    return run, prof


def test_check_replays_the_absences_its_run_met(tmp_path: Path) -> None:
    """Replaying the planted absences read back from the run meets its p99; without them the
    replay is far short of it."""
    run, prof = _planted_run(tmp_path)
    by_mode = {}
    for on in (True, False):  # at the profile's speed: the run's is the profile's
        rows = check_runs([run], prof, host_speed=HostSpeed.PROFILE, absences_from_run=on)
        by_mode[on] = rows[0]
    assert by_mode[True].run_absences_hz is not None and by_mode[True].run_absences_hz > 0
    # read back, each from its first ready batch: -6 % (without them -62 %)
    assert abs(by_mode[True].error_pct["p99"]) < 10.0
    assert by_mode[False].run_absences_hz is None
    assert by_mode[False].error_pct["p99"] < -40.0


def test_sim_check_worker_absences_run_is_the_default(tmp_path: Path) -> None:
    run, prof = _planted_run(tmp_path)
    check = ["check", str(run), "--profile", str(prof), "--host-speed", "profile"]
    docs = {}
    for name, extra in (("default", []), ("run", ["--worker-absences", "run"]), ("off", [
        "--worker-absences", "off"])):  # fmt: skip
        res = runner.invoke(app, [*check, "--json", *extra])
        assert res.exit_code in (0, 1), res.output
        docs[name] = json.loads(res.stdout.splitlines()[0])
    assert docs["default"] == docs["run"] and docs["off"]["run_absences_hz"] is None
    assert docs["run"]["run_absences_hz"] > 0
    table = runner.invoke(app, [*check, "--worker-absences", "run"])
    assert "worker absences from each B's records" in " ".join(table.stdout.split())
    bad = runner.invoke(app, [*check, "--worker-absences", "x"])
    assert bad.exit_code == 2 and "--worker-absences 'x'" in bad.output
