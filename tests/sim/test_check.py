"""``sim check`` on synthetic measured runs (no ``hw serve`` run is shipped yet).

The "measured" runs are made by the plain SimPy model (``sim.naive``, an
independent implementation) with noisy service times drawn from the profile's
p10/p90 spread, and written in the ``serve-records/1`` schema with their
``ServeConfig``, exactly as ``hw serve`` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from sim.check import CheckRow, HostSpeed, Terms, check_run, check_runs, parse_tolerance
from sim.cli import app
from sim.config import GateSpec, HostLock, ServiceModel, SimConfig
from sim.errors import CheckError
from sim.naive import simulate_naive
from sim.output import records_of, serve_config
from sim.service import ServiceTable
from sim.workload import make_workload
from traces.cli_support import out_console
from traces.profile import ProfileError, profile_from_frame, write_profile
from traces.serving import write_records

from .conftest import profile_with_variation, sim_fixture_profile_frame

runner = CliRunner()


def _slowed_frame(slowdown: float) -> pl.DataFrame:
    """The test profile's table with every cost ×``slowdown``."""
    return sim_fixture_profile_frame().with_columns(
        pl.col("latency_s", "latency_p10_s", "latency_p90_s") * slowdown
    )


def _measured(tmp_path: Path, slowdown: float, name: str, rate_rps: float = 2000.0) -> Path:
    """A fake measured run: B in {1, 4, 16}, noisy service, ``slowdown`` x the profile."""
    table = ServiceTable.from_profile(profile_from_frame(_slowed_frame(slowdown)), 8, 16)
    configs = [
        SimConfig(
            batch_size=b,
            n_experts=8,
            gate=GateSpec(k=2),
            rate_rps=rate_rps,
            n_requests=3000,
            n_devices=2,
            gate_latency_s=2e-5,
            combine_latency_s=1e-5,
            service=ServiceModel.SPREAD,
            seed=4,
        )
        for b in (1, 4, 16)
    ]
    work = make_workload(configs[0])
    records = pl.concat([records_of(simulate_naive(c, table, work)) for c in configs])
    path = tmp_path / name
    write_records(path, records, serve_config(configs))
    return path


@pytest.fixture(scope="module")
def faithful(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _measured(tmp_path_factory.mktemp("check"), 1.0, "faithful.parquet")


@pytest.fixture(scope="module")
def slower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _measured(tmp_path_factory.mktemp("check"), 1.6, "slow.parquet")


def test_check_passes_on_a_faithful_run(faithful: Path, test_profile_path: Path) -> None:
    path = faithful
    rows = check_run(path, test_profile_path)
    assert [r.B for r in rows] == [1, 4, 16]
    for r in rows:
        assert r.within, r
        assert abs(r.error_pct["throughput"]) < 1.0  # same arrivals: same throughput
    res = runner.invoke(app, ["check", str(path), "--profile", str(test_profile_path), "--json"])
    assert res.exit_code == 0, res.stderr
    docs = [json.loads(x) for x in res.stdout.splitlines()]
    assert [d["B"] for d in docs] == [1, 4, 16] and all(d["within"] for d in docs)


def test_check_flags_a_profile_measured_while_the_machine_changed_speed(
    faithful: Path, tmp_path: Path
) -> None:
    noisy = str(profile_with_variation(tmp_path, 0.5))
    res = runner.invoke(app, ["check", str(faithful), "--profile", noisy, "--json"])
    assert res.exit_code == 0, res.stderr  # the same prediction: still within tolerance
    assert "differ by 50%" in " ".join(res.stderr.split())
    docs = [json.loads(x) for x in res.stdout.splitlines()]
    assert [d["profile_variation"] for d in docs] == [0.5] * 3  # for the report's caveat
    assert all(r.profile_variation == 0.5 for r in check_runs([faithful, faithful], noisy))
    assert check_run(faithful, noisy, terms=Terms.REPLAY)[0].profile_variation is None
    # --terms replay takes every cost from the run, none from the profile: nothing to say
    res = runner.invoke(app, ["check", str(faithful), "--profile", noisy, "--terms", "replay"])
    assert "warning" not in res.stderr


def test_check_exits_1_when_the_hardware_is_slower(slower: Path, test_profile_path: Path):
    path = slower
    rows = check_run(path, test_profile_path)
    assert not all(r.within for r in rows)
    # Service time 1.6x: the simulated low-B p50 is well below the measured one.
    assert rows[0].error_pct["p50"] < -10
    res = runner.invoke(app, ["check", str(path), "--profile", str(test_profile_path)])
    assert res.exit_code == 1
    assert "past tolerance" in res.stderr and "p50" in res.stdout
    # A loose enough tolerance accepts it.
    res = runner.invoke(
        app, ["check", str(path), "--profile", str(test_profile_path), "--tolerance", "1000"]
    )
    assert res.exit_code == 0


def test_repeated_runs_are_judged_on_their_means(
    faithful: Path, slower: Path, test_profile_path: Path
) -> None:
    """Two runs of one command: each metric is the mean of the single-run checks, the error
    that of the means, the range their min and max, and 'runs ok' counts the single passes."""
    singles = [{r.B: r for r in check_run(p, test_profile_path)} for p in (faithful, slower)]
    rows = check_runs([faithful, slower], test_profile_path)
    assert [r.B for r in rows] == [1, 4, 16]
    for r in rows:
        one, two = singles[0][r.B], singles[1][r.B]
        assert r.runs == 2 and r.runs_within == one.within + two.within
        for k in ("throughput", "p50", "p99"):
            pair = (one.measured[k], two.measured[k])
            assert r.measured[k] == pytest.approx(sum(pair) / 2)
            assert r.simulated[k] == pytest.approx((one.simulated[k] + two.simulated[k]) / 2)
            assert r.measured_range is not None and r.measured_range[k] == (min(pair), max(pair))
            want = 100 * (r.simulated[k] - r.measured[k]) / r.measured[k]
            assert r.error_pct[k] == pytest.approx(want)
            # two runs: the paired differences' standard error is half their distance
            d1, d2 = (x.simulated[k] - x.measured[k] for x in (one, two))
            assert r.error_se_pct is not None
            assert r.error_se_pct[k] == pytest.approx(100 * abs(d1 - d2) / 2 / r.measured[k])
    # the faithful run passes alone, the 1.6x slower one does not: the pair's count says so
    assert rows[0].runs_within == 1
    assert check_runs([faithful], test_profile_path)[0].runs == 1  # one run: check_run itself
    res = runner.invoke(
        app, ["check", str(faithful), str(slower), "--profile", str(test_profile_path), "--json"]
    )
    docs = [json.loads(x) for x in res.stdout.splitlines()]
    assert docs[0]["runs"] == 2 and docs[0]["runs_within"] == 1
    assert docs[0]["error_se_pct"]["p50"] == pytest.approx(rows[0].error_se_pct["p50"])
    assert docs[0]["measured_min"]["p50"] == min(s[1].measured["p50"] for s in singles)
    assert docs[0]["measured_max"]["p50"] == max(s[1].measured["p50"] for s in singles)
    res = runner.invoke(
        app, ["check", str(faithful), str(slower), "--profile", str(test_profile_path)]
    )
    assert "mean of 2 runs" in res.stdout and "1/2" in res.stdout


@pytest.fixture(scope="module")
def slower_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test profile with every cost ×1.6: a profile taken in a slower state."""
    path = tmp_path_factory.mktemp("profiles") / "slower.parquet"
    write_profile(_slowed_frame(1.6), path)
    return path


def test_several_profiles_predict_the_mean_of_their_predictions(
    faithful: Path,
    slower: Path,
    test_profile_path: Path,
    slower_profile: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each run is predicted as the mean of every profile's prediction of it; the error is
    that of the mean, and the range holds each profile's own prediction over the runs."""
    runs = [faithful, slower]
    own = [{r.B: r for r in check_runs(runs, p)} for p in (test_profile_path, slower_profile)]
    per_run = [
        [{r.B: r for r in check_run(run, p)} for p in (test_profile_path, slower_profile)]
        for run in runs
    ]
    rows = check_runs(runs, [test_profile_path, slower_profile])
    assert [r.B for r in rows] == [1, 4, 16]
    for r in rows:
        a, b = own[0][r.B], own[1][r.B]
        assert r.profiles == 2 and r.runs == 2 and r.simulated_range is not None
        for k in ("throughput", "p50", "p99"):
            assert r.measured[k] == pytest.approx(a.measured[k])
            assert r.simulated[k] == pytest.approx((a.simulated[k] + b.simulated[k]) / 2)
            assert r.simulated_range[k] == pytest.approx(
                (min(a.simulated[k], b.simulated[k]), max(a.simulated[k], b.simulated[k]))
            )
            assert r.error_pct[k] == pytest.approx(
                100 * (r.simulated[k] - r.measured[k]) / r.measured[k]
            )
        # a run passes on its own when the mean of the two profiles' predictions of it does
        passes = 0
        for singles in per_run:
            sim = {k: (singles[0][r.B].simulated[k] + singles[1][r.B].simulated[k]) / 2
                   for k in ("throughput", "p50", "p99")}  # fmt: skip
            meas = singles[0][r.B].measured
            errs = {k: abs(100 * (sim[k] - meas[k]) / meas[k]) for k in sim}
            passes += errs["throughput"] <= 5 and errs["p50"] <= 5 and errs["p99"] <= 10
        assert r.runs_within == passes
    # the slow run sits between the profiles at low B: the mean fits better than the one
    # profile taken in the other state (the faithful run's), and worse than its own
    slow_only = check_runs([slower], [test_profile_path, slower_profile])[0]
    assert slow_only.profiles == 2 and slow_only.runs == 1
    fast, slow = (check_run(slower, p)[0] for p in (test_profile_path, slower_profile))
    assert abs(slow.error_pct["p50"]) < abs(slow_only.error_pct["p50"])
    assert abs(slow_only.error_pct["p50"]) < abs(fast.error_pct["p50"])
    # past tolerance, but measured between the two profiles' own predictions: they disagree
    # by more than the miss, and the CLI says so; one profile twice has no such range
    tol = parse_tolerance("throughput=5,p50=5,p99=10")
    assert not slow_only.within and slow_only.between_profiles(tol)
    assert slow_only.simulated_range is not None
    lo, hi = slow_only.simulated_range["p50"]
    assert lo < slow_only.measured["p50"] < hi
    alone = check_runs([slower], [test_profile_path, test_profile_path])[0]
    assert not alone.within and not alone.between_profiles(tol)
    res = runner.invoke(
        app, ["check", str(slower), "--profile", str(test_profile_path), "--profile",
              str(slower_profile)],
    )  # fmt: skip
    assert res.exit_code == 1
    assert "lie between the profiles' own predictions" in " ".join(res.stderr.split())
    # one profile given twice is that profile
    twice = check_runs(runs, [test_profile_path, test_profile_path])
    for r, single in zip(twice, own[0].values(), strict=True):
        assert r.simulated == pytest.approx(single.simulated)
        assert r.simulated_range is not None
        assert r.simulated_range["p50"][0] == pytest.approx(r.simulated_range["p50"][1])
    with pytest.raises(CheckError, match="at least one profile"):
        check_runs(runs, [])
    # the CLI: --profile twice, the mean in the JSON with each profile's range, a table column
    args = ["check", str(faithful), str(slower), "--profile", str(test_profile_path),
            "--profile", str(slower_profile)]  # fmt: skip
    res = runner.invoke(app, [*args, "--json"])
    docs = [json.loads(x) for x in res.stdout.splitlines()]
    assert [d["profiles"] for d in docs] == [2, 2, 2]
    assert docs[0]["simulated"]["p50"] == pytest.approx(rows[0].simulated["p50"])
    assert docs[0]["simulated_min"]["p50"] == pytest.approx(rows[0].simulated_range["p50"][0])
    assert docs[0]["simulated_max"]["p50"] == pytest.approx(rows[0].simulated_range["p50"][1])
    monkeypatch.setattr(out_console, "width", 400)  # every column's header in full
    res = runner.invoke(app, args)
    assert "mean of 2 profiles" in res.stdout and "p50 sim by profile ms" in res.stdout
    # each noisy profile is named in a warning of its own
    noisy = profile_with_variation(tmp_path, 0.5)
    res = runner.invoke(app, [*args, "--profile", str(noisy)])
    assert " ".join(res.stderr.split()).count("differ by 50%") == 1
    assert noisy.name in "".join(res.stderr.split())
    # the rows carry the largest recorded variation among the profiles, for the report
    mixed = check_runs(runs, [test_profile_path, noisy])
    assert all(r.profile_variation == 0.5 for r in mixed)


def test_runs_of_different_commands_are_refused(
    tmp_path: Path, faithful: Path, test_profile_path: Path
) -> None:
    other = _measured(tmp_path, 1.0, "other-rate.parquet", rate_rps=1500.0)
    res = runner.invoke(
        app, ["check", str(faithful), str(other), "--profile", str(test_profile_path)]
    )
    assert res.exit_code == 2
    assert "not a repeat" in res.stderr and "rate_rps" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_parse_tolerance() -> None:
    assert parse_tolerance("7") == {"throughput": 7.0, "p50": 7.0, "p99": 7.0}
    assert parse_tolerance("p99=20") == {"throughput": 5.0, "p50": 5.0, "p99": 20.0}
    for bad in ("x", "p42=3", "p50=-1"):
        with pytest.raises(CheckError):
            parse_tolerance(bad)


def test_check_bad_input_exit_2(tmp_path: Path, test_profile_path: Path, faithful: Path) -> None:
    res = runner.invoke(app, ["check", str(test_profile_path)])  # a profile, not records
    assert res.exit_code == 2 and "serve-records/1" in res.stderr
    res = runner.invoke(app, ["check", str(tmp_path / "none.parquet")])
    assert res.exit_code == 2 and "no such file" in res.stderr
    path = faithful
    res = runner.invoke(
        app, ["check", str(path), "--profile", str(test_profile_path), "--tolerance", "q"]
    )
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1


def test_profile_missing_an_expert_of_the_run(tmp_path: Path, faithful: Path) -> None:
    path = faithful
    small = tmp_path / "small.parquet"
    sim_fixture_profile_frame(4).write_parquet(small)
    with pytest.raises(ProfileError, match="expert 4 is not in the profile"):
        check_run(path, small)


def test_replay_terms_reproduce_the_measured_run(faithful: Path, slower: Path, test_profile_path):
    # With the run's own per-item service times and gaps, only the queue rules are left:
    # the model must land on the measured numbers, even for the 1.6x slower "hardware".
    for path in (faithful, slower):
        rows = check_run(path, test_profile_path, terms=Terms.REPLAY)
        for r in rows:
            for name in ("throughput", "p50", "p99"):
                assert abs(r.error_pct[name]) < 0.01, (path.name, r)


def test_gate_times_with_per_request_service() -> None:
    from sim.engine import gate_times

    start, done = gate_times(np.array([0.0, 0.1, 0.15, 1.0]), np.array([0.3, 0.05, 0.2, 0.1]))
    # Lindley by hand: 0→0.3; max(0.1, 0.3)=0.3→0.35; max(0.15, 0.35)=0.35→0.55; 1.0→1.1
    assert start.tolist() == pytest.approx([0.0, 0.3, 0.35, 1.0])
    assert done.tolist() == pytest.approx([0.3, 0.35, 0.55, 1.1])


SHIPPED = ("cpu-r100.parquet", "cpu-r400.parquet")


@pytest.mark.parametrize("name", SHIPPED)
def test_regression_shipped_measured_runs(name: str) -> None:
    """The measured `hw serve` runs shipped in traces/data (recorded on this machine).

    Replaying the run's own service times and overhead gaps, the model must land
    within the issue's tolerance (throughput and p50 5%, p99 10%) at every B: the
    queue rules of the model and of the server agree. With the latency profile
    instead (a prediction), throughput at these sub-capacity rates is the offered
    rate in both, while latency misses by the in-server slowdown that
    benchmarks/README.md ("Simulator") quantifies.
    """
    from traces import data_path

    path = data_path(f"serve/{name}")
    if not path.exists():
        pytest.skip(f"{path} is not shipped")
    rows = check_run(path, terms=Terms.REPLAY)
    assert rows and all(r.within for r in rows), rows
    res = runner.invoke(app, ["check", str(path), "--terms", "replay"])
    assert res.exit_code == 0, res.stderr
    for r in check_run(path):  # default: the bundled profile
        assert abs(r.error_pct["throughput"]) < 5.0
        assert r.simulated["p50"] < r.measured["p50"]  # the profile is the isolated best case


PROFILE = HostSpeed.PROFILE  # the recorded regressions predate the run's own speed
# and the run's own state (sim.run_state): both from the profile, as recorded; and the
# workers' absences (sim.run_absences): none replayed; company priced by the profile
AS_RECORDED = {
    "host_speed": PROFILE,
    "state_from_run": False,
    "absences_from_run": False,
    "contention_from_run": False,
}


def test_regression_shipped_run_predicted_by_the_shared_host_model() -> None:
    """A quiet `hw serve --B 1,4,16 --rate 250 --requests 600` run and the `hw profile` taken
    with it on this machine (both in traces/data), predicted from the profile alone. Where
    requests wait for B the shared-host model is within the issue's tolerance; at B = 1 it
    misses, but by far less than the ideal model (docs/system-model.md §8; the spread of the
    real server at B = 1 is in benchmarks/README.md, "Simulator"). The host's speed from the
    profile (these recorded numbers predate the run's own speed, the default since session
    16: from this run's alone gates, 1.34 × the profile's, B = 1 p50 reads -20 %)."""
    from traces import data_path

    run = data_path("serve/cpu-q250.parquet")
    profile = data_path("profiles/cpu-host.parquet")
    if not (run.exists() and profile.exists()):
        pytest.skip("the host-model regression data is not shipped")
    host = {r.B: r for r in check_run(run, profile, **AS_RECORDED)}
    ideal = {r.B: r for r in check_run(run, profile, host=False)}
    assert all(r.host for r in host.values()) and not any(r.host for r in ideal.values())
    assert host[4].within and host[16].within
    assert abs(host[1].error_pct["throughput"]) < 1.0
    assert abs(host[1].error_pct["p50"]) < 15.0  # recorded: -9.4 % (-11.1 % with ratio contention)
    assert abs(host[1].error_pct["p50"]) < abs(ideal[1].error_pct["p50"]) / 3  # ideal: -46 %
    # shared evenly (the default) B = 1's p99 is low in this run; with the lock won whole it
    # comes within the tolerance (recorded: p50 -5.2 / p99 -16.5 % even, -5.0 / -3.7 whole;
    # before session 25 took each run's spells and preemption at its own duty, not the step
    # before's, -3.7 / -13.5 and -1.1 / -8.3; over 24 runs of session 13 whole overshoots
    # it instead, benchmarks/README.md)
    whole = {r.B: r for r in check_run(run, profile, host_lock=HostLock.WHOLE, **AS_RECORDED)}
    assert abs(whole[1].error_pct["p99"]) < 10.0 and abs(whole[1].error_pct["p50"]) < 6.0
    assert not host[1].within
    assert host[1].error_pct["p99"] < whole[1].error_pct["p99"] < 0


def test_regression_shipped_run_predicted_from_a_two_thread_profile() -> None:
    """A quiet `hw serve --B 1,2,4,16 --rate 500 --requests 1000 --warmup 200` run and the
    `hw profile` taken just before it (2026-12-02, this machine; both in traces/data), the
    profile with the duty chain timed in the server's two threads and the worker's wake
    from it: B >= 2 within the issue's tolerance (the ideal model misses B = 2), B = 1 p50
    within it too, with the spells drawn from the chain's spread (recorded: -2.2 %; -12.7 %
    before the spells were modelled, -54.8 % from the ideal model). B = 1's p99 in this one
    run of 800 requests is overshot (+55 % with the lock won whole, +24 % shared evenly).
    The host's speed from the profile, as recorded (from the run's alone gates, 0.89 × the
    profile's at B = 1: p50 +5.4 %, p99 +36 %)."""
    from sim.host_terms import HostTerms
    from traces import data_path
    from traces.profile import read_profile

    run = data_path("serve/cpu-q500-threads.parquet")
    profile = data_path("profiles/cpu-host-threads.parquet")
    if not (run.exists() and profile.exists()):
        pytest.skip("the two-thread regression data is not shipped")
    terms = HostTerms.from_profile(read_profile(profile), 16)
    assert terms is not None and terms.wake_cost_s and terms.duty_speed and terms.duty_chain_s
    host = {r.B: r for r in check_run(run, profile, **AS_RECORDED)}
    ideal = {r.B: r for r in check_run(run, profile, host=False)}
    assert all(host[b].within for b in (2, 4, 16)) and not ideal[2].within
    assert abs(host[1].error_pct["throughput"]) < 1.0
    assert abs(host[1].error_pct["p50"]) < 5.0
    assert abs(host[1].error_pct["p50"]) < abs(ideal[1].error_pct["p50"]) / 10


def test_a_miss_inside_the_runs_own_spread_is_unresolved() -> None:
    """Past tolerance with every error within two standard errors: more runs are needed."""
    metrics = ("throughput", "p50", "p99")

    def row(err: float, se: float | None, within: bool = False) -> CheckRow:
        return CheckRow(
            B=1,
            measured=dict.fromkeys(metrics, 1.0),
            simulated=dict.fromkeys(metrics, 1.0 + err / 100),
            error_pct=dict.fromkeys(metrics, err),
            within=within,
            overloaded=False,
            runs=6,
            error_se_pct=None if se is None else dict.fromkeys(metrics, se),
        )

    assert row(-30.0, 16.0).unresolved()
    assert not row(-30.0, 14.0).unresolved()  # resolved: a model error
    assert not row(-30.0, None).unresolved()  # one run: nothing to tell by
    assert not row(1.0, 16.0, within=True).unresolved()


def test_check_only_some_b_values(faithful: Path, slower: Path, test_profile_path: Path):
    """--B picks B values of the run(s); each row is the full check's own row for that B."""
    full = {r.B: r for r in check_runs([faithful, slower], test_profile_path)}
    some = check_runs([faithful, slower], test_profile_path, only_b=[1, 16])
    assert [r.B for r in some] == [1, 16]
    for r in some:
        assert r.simulated == full[r.B].simulated and r.measured == full[r.B].measured
    args = ["check", str(faithful), "--profile", str(test_profile_path), "--json"]
    res = runner.invoke(app, [*args, "--B", "4"])
    assert res.exit_code == 0, res.stderr
    assert [json.loads(x)["B"] for x in res.stdout.splitlines()] == [4]
    for bad, needle in (("2", "has no B = [2] (it has B = [1, 4, 16])"), ("0", "--B")):
        res = runner.invoke(app, [*args, "--B", bad])
        assert res.exit_code == 2 and needle in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
