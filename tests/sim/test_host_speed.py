"""The host's speed during a measured run ÷ while profiled (sim.host_speed): read from the
probes that `hw serve` and `hw profile` record, turned into the host model's idle slowdown,
and applied by `sim check` per B.

The idle slowdown is checked by hand against its definition (exactly ×factor at the probe's
duty, none when busy); the plumbing by a "measured" run made by the host model in a state
twice as slow at the probe's duty, reproduced to the last digit once its probes say so and
missed without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from sim.check import HostSpeed, check_run, check_runs
from sim.cli import app
from sim.config import ServiceModel
from sim.errors import CheckError
from sim.host_speed import (
    at_host_speed,
    probe_duty,
    profile_probe_s,
    run_probe_s,
    slowed_when_idle,
    speed_factor,
)
from sim.host_terms import HostTerms
from sim.service import ServiceTable
from traces.profile import SPEED_PROBE, profile_from_frame, read_profile, write_profile
from traces.serving import ServeConfig

from .test_host import host_model_run, host_profile_frame

runner = CliRunner()
GAP_S = 2e-3
PROFILE_PROBE_S = 300e-6


def _probe_frame(median_s: float = PROFILE_PROBE_S, gap_s: float = GAP_S) -> pl.DataFrame:
    row = {"expert": -1, "batch_size": 1, "latency_s": median_s, "samples": 200,
           "component": SPEED_PROBE, "device": "cpu:test", "idle_s": gap_s}  # fmt: skip
    probe = pl.DataFrame([row], schema_overrides={"idle_s": pl.Float64})
    return pl.concat([host_profile_frame(), probe], how="diagonal_relaxed")


@pytest.fixture(scope="module")
def probed_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("speed") / "probed.parquet"
    write_profile(_probe_frame(), path)
    return path


def _record(pairs: dict[int, list[float]], gap_s: float = GAP_S) -> dict[str, Any]:
    median = {str(b): p for b, p in pairs.items()}
    return {"speed_probe": {"seconds": 0.5, "mean_gap_s": gap_s, "median_s": median}}


def _slow_run(
    tmp_path: Path,
    profile: Path,
    slower: float,
    probes: dict[str, Any] | None,
    seed: int = 5,
    n_requests: int = 2000,
) -> Path:
    """A run made by the host model in a state ``slower`` × slower at the probe's duty, stored
    as hw serve stores one, with ``probes`` as its speed-probe record."""
    prof = read_profile(profile)
    table = at_host_speed(ServiceTable.from_profile(prof, 8, 16), prof, slower)
    path = tmp_path / f"run-{slower}-{seed}-{n_requests}.parquet"
    return host_model_run(path, table, seed=seed, extra=probes, n_requests=n_requests)


def test_a_run_in_a_state_twice_as_slow_is_reproduced_from_its_probes(
    tmp_path: Path, probed_profile: Path
) -> None:
    """The probes before and after B = 1 average 2× the profile's (one 1.5×, one 2.5×), B = 4
    and 16 exactly 2×: the host model in that state gives the run back to the last digit."""
    p = PROFILE_PROBE_S
    probes = _record({1: [1.5 * p, 2.5 * p], 4: [2 * p, 2 * p], 16: [2 * p, 2 * p]})
    run = _slow_run(tmp_path, probed_profile, 2.0, probes)
    rows = check_run(run, probed_profile, service=ServiceModel.MEDIAN, host_speed=HostSpeed.PROBE)
    assert [r.speed_factor for r in rows] == [pytest.approx(2.0)] * 3
    for r in rows:
        assert r.within and all(abs(e) < 1e-6 for e in r.error_pct.values()), r
    plain = check_run(
        run, probed_profile, service=ServiceModel.MEDIAN, host_speed=HostSpeed.PROFILE
    )
    assert all(r.speed_factor is None for r in plain)
    # the profile's own speed: B = 1, all host work, comes out faster (here -19 %); at B = 16
    # the latency is mostly the wait for 16 arrivals and moves far less
    assert plain[0].error_pct["p50"] < -10 and not plain[0].within
    assert abs(plain[2].error_pct["p50"]) < abs(plain[0].error_pct["p50"]) / 4


def test_equal_probes_change_nothing(tmp_path: Path, probed_profile: Path) -> None:
    p = PROFILE_PROBE_S
    run = _slow_run(tmp_path, probed_profile, 1.0, _record({b: [p, p] for b in (1, 4, 16)}))
    on = check_run(run, probed_profile, service=ServiceModel.MEDIAN, host_speed=HostSpeed.PROBE)
    off = check_run(run, probed_profile, service=ServiceModel.MEDIAN, host_speed=HostSpeed.PROFILE)
    assert [r.speed_factor for r in on] == [pytest.approx(1.0)] * 3
    assert [r.simulated for r in on] == [r.simulated for r in off]


def test_repeats_report_the_mean_factor(tmp_path: Path, probed_profile: Path) -> None:
    p = PROFILE_PROBE_S
    runs = [
        _slow_run(tmp_path, probed_profile, f, _record({b: [f * p, f * p] for b in (1, 4, 16)}), s)
        for f, s in ((1.0, 5), (2.0, 6))
    ]
    rows = check_runs(runs, probed_profile, service=ServiceModel.MEDIAN, host_speed=HostSpeed.PROBE)
    assert [r.speed_factor for r in rows] == [pytest.approx(1.5)] * 3
    assert all(r.within for r in rows)


def test_no_probe_on_either_side_means_no_factor(tmp_path: Path, probed_profile: Path) -> None:
    unprobed = tmp_path / "plain.parquet"
    write_profile(host_profile_frame(), unprobed)
    probed = _record({1: [1e-4, 1e-4]})
    # runs too short for their own speed (too few alone gates): the probes would come next
    short = _slow_run(tmp_path, probed_profile, 1.0, probed, n_requests=240)
    bare_short = _slow_run(tmp_path, probed_profile, 1.0, None, seed=6, n_requests=240)
    for run, prof in ((short, unprobed), (bare_short, probed_profile)):
        rows = check_run(run, prof, host_speed=None)
        assert all(r.run_speed is None and r.speed_factor is None for r in rows)
    # by default the run's own alone gates come first: the probes are not read
    probed_run = _slow_run(tmp_path, probed_profile, 1.0, probed)
    rows = check_run(probed_run, probed_profile)
    assert all(r.run_speed is not None and r.speed_factor is None for r in rows)
    # the short run falls back to the probe where there is one (B = 1 here); B = 4 and 16
    # are replayed at the profile's speed
    rows = check_run(short, probed_profile)
    assert all(r.run_speed is None for r in rows)
    assert rows[0].speed_factor == pytest.approx(1e-4 / PROFILE_PROBE_S)
    assert rows[1].speed_factor is None and rows[2].speed_factor is None
    with pytest.raises(CheckError, match="no host speed probe for B = 4"):
        check_run(probed_run, probed_profile, host_speed=HostSpeed.PROBE)
    with pytest.raises(CheckError, match="shared-host model"):
        check_run(probed_run, probed_profile, host=False, host_speed=HostSpeed.PROBE)


def _host() -> HostTerms:
    host = HostTerms.from_profile(profile_from_frame(host_profile_frame()), 16)
    assert host is not None and host.duty and host.duty[-1] == pytest.approx(1.0)
    return host


@pytest.mark.parametrize("factor", [0.9, 1.5, 2.0, 3.0])
def test_the_idle_slowdown_takes_the_factor_at_the_probes_duty(factor: float) -> None:
    """At the probe's duty the host is exactly ×factor slower (1/v' = factor/v), busy it is
    as fast as before (v = 1), and every duty keeps its order (a busier host never slower)."""
    host = _host()
    for i in range(len(host.duty) - 1):  # each measured level in turn as the probe's duty
        u = host.duty[i]
        got = slowed_when_idle(host, factor, u)
        assert 1 / got.speed_at_duty(u) == pytest.approx(factor / host.speed_at_duty(u))
        assert got.speed_at_duty(1.0) == pytest.approx(1.0)
        assert list(got.duty_speed) == sorted(got.duty_speed)
        assert got.duty == host.duty and got.dispatch_s is host.dispatch_s  # costs kept
        # the slowdown 1/v - 1 is scaled by one α at every duty
        ratios = [
            (1 / a - 1) / (1 / b - 1)
            for a, b in zip(got.duty_speed, host.duty_speed, strict=True)
            if b < 1
        ]
        assert max(ratios) == pytest.approx(min(ratios))


def test_the_idle_slowdown_edge_cases() -> None:
    host = _host()
    u = host.duty[1]
    assert slowed_when_idle(host, 1.0, u).duty_speed == pytest.approx(host.duty_speed)
    fast = slowed_when_idle(host, 0.01, u)  # faster than busy is impossible: α = 0
    assert fast.duty_speed == pytest.approx((1.0,) * len(host.duty))
    assert slowed_when_idle(host, 2.0, 1.0) is host  # no slowdown where the probe ran: kept
    flat = HostTerms(dispatch_s=host.dispatch_s)
    assert slowed_when_idle(flat, 2.0, u) is flat  # no duty curve at all
    with pytest.raises(CheckError, match="> 0"):
        slowed_when_idle(host, 0.0, u)
    prof = profile_from_frame(_probe_frame())
    assert probe_duty(prof) == pytest.approx(PROFILE_PROBE_S / (PROFILE_PROBE_S + GAP_S))
    table = ServiceTable.from_profile(prof, 8, 16)
    assert at_host_speed(table, profile_from_frame(host_profile_frame()), 2.0) is table


def _cfg(extra: dict[str, Any]) -> ServeConfig:
    return ServeConfig(n_experts=2, b_values=(1,), rate_rps=10.0, extra=extra)


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        ({"speed_probe": [1, 2]}, "malformed"),
        ({"speed_probe": {"mean_gap_s": 0.002}}, "malformed"),
        ({"speed_probe": {"mean_gap_s": -1, "median_s": {"1": [1e-4, 1e-4]}}}, "mean_gap_s"),
        ({"speed_probe": {"mean_gap_s": "x", "median_s": {"1": [1e-4, 1e-4]}}}, "mean_gap_s"),
        ({"speed_probe": {"mean_gap_s": 0.002, "median_s": {"1": [0, 1e-4]}}}, "B = 1"),
        ({"speed_probe": {"mean_gap_s": 0.002, "median_s": {"1": []}}}, "B = 1"),
        ({"speed_probe": {"mean_gap_s": 0.002, "median_s": {"1": 3e-4}}}, "B = 1"),
        ({"speed_probe": {"mean_gap_s": 0.002, "median_s": {"1": [None, 1e-4]}}}, "B = 1"),
    ],
)
def test_a_malformed_run_record_is_an_error(record: dict[str, Any], needle: str) -> None:
    """A record that is there but broken would silently drop the correction: refuse it."""
    with pytest.raises(CheckError, match=needle):
        run_probe_s(_cfg(record), 1)


def test_the_readers() -> None:
    cfg = _cfg(_record({1: [2e-4, 4e-4], 2: [4e-4]}))
    assert run_probe_s(cfg, 1) == pytest.approx((3e-4, GAP_S))
    assert run_probe_s(cfg, 2) == pytest.approx((4e-4, GAP_S))
    assert run_probe_s(cfg, 3) is None and run_probe_s(_cfg({}), 1) is None
    prof = profile_from_frame(_probe_frame(5e-4))
    assert profile_probe_s(prof) == pytest.approx((5e-4, GAP_S))
    assert profile_probe_s(profile_from_frame(host_profile_frame())) is None
    assert speed_factor(cfg, prof, 1) == pytest.approx(0.6)
    other_gap = profile_from_frame(_probe_frame(5e-4, gap_s=1e-3))
    with pytest.raises(CheckError, match="do not compare"):
        speed_factor(cfg, other_gap, 1)


def test_cli_shows_and_emits_the_factor(tmp_path: Path, probed_profile: Path) -> None:
    p = PROFILE_PROBE_S
    run = _slow_run(tmp_path, probed_profile, 2.0, _record({b: [2 * p, 2 * p] for b in (1, 4, 16)}))
    args = ["check", str(run), "--profile", str(probed_profile), "--service", "median"]
    probe = [*args, "--host-speed", "probe"]
    res = runner.invoke(app, [*probe, "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [d["speed_factor"] for d in lines] == [pytest.approx(2.0)] * 3
    assert all(d["run_speed"] is None for d in lines)
    table = runner.invoke(app, probe)
    assert table.exit_code == 0 and "│ 2.00 │" in table.stdout  # the last column
    off = runner.invoke(app, [*args, "--host-speed", "profile", "--json"])
    assert off.exit_code == 1  # B = 1 now misses: the profile's host is twice as fast
    assert all(json.loads(x)["speed_factor"] is None for x in off.stdout.splitlines())
    for bad_args, needle in (
        ([*probe, "--no-host"], "shared-host model"),
        ([*args, "--host-speed", "fast"], "run, probe or profile"),
    ):
        bad = runner.invoke(app, bad_args)
        assert bad.exit_code == 2 and needle in bad.stderr, bad.output
        assert "Traceback" not in bad.output
