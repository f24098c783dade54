"""The machine's state in the shared-host model (``SimConfig.state_sigma``): a log-normal
factor on every step's wall time, AR(1) over windows, which builds a queue in front of the
gate in slow spells (benchmarks/README.md, "Fidelity, session 13")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.config import SimConfig, parse_host_state
from sim.errors import SimConfigError
from sim.host import SharedHost, simulate_host
from sim.host_terms import HostTerms
from sim.machine_state import fit_state
from sim.records import RunResult
from sim.service import ServiceTable
from sim.workload import make_workload
from traces.profile import STATE_BLOCK_S, STATE_WINDOW, Z90, profile_from_frame, write_profile

from .test_host import host_model_run, host_profile_frame

runner = CliRunner()


# (window s, the state's spread in log) as hw profile measures it
STATE_ROWS = ((0.1, 0.2), (0.25, 0.17), (0.5, 0.15), (1.0, 0.13))


def state_profile_frame(rows: tuple[tuple[float, float], ...] = STATE_ROWS) -> pl.DataFrame:
    """The host test profile plus hw profile's ``state_window`` rows of these spreads."""
    extra = pl.DataFrame(
        [
            {
                "expert": -1,
                "batch_size": 1,
                "latency_s": 1e-4,
                "latency_p10_s": 1e-4 * float(np.exp(-Z90 * sigma)),
                "latency_p90_s": 1e-4 * float(np.exp(Z90 * sigma)),
                "samples": 100,
                "component": STATE_WINDOW,
                "device": "cpu:test",
                "idle_s": window,
            }
            for window, sigma in rows
        ]
    )
    return pl.concat([host_profile_frame(), extra], how="diagonal_relaxed")


def host_b1_run(frame: pl.DataFrame, rate_rps: float, seed: int, **kw: object) -> RunResult:
    """4000 requests at B = 1 in the host model of the profile ``frame`` (its gate and
    combine costs); ``kw``: more SimConfig fields."""
    prof = profile_from_frame(frame)
    table = ServiceTable.from_profile(prof, 8, 1)
    host = HostTerms.from_profile(prof, 1)
    assert host is not None
    cfg = SimConfig(
        batch_size=1, rate_rps=rate_rps, n_requests=4000, max_backlog=None, host=True,
        gate_latency_s=prof.component_latency_s("gate") or 0.0,
        combine_latency_s=prof.component_latency_s("combine") or 0.0, seed=seed, **kw,
    )  # fmt: skip
    return simulate_host(cfg, table, make_workload(cfg), host)


def _b1(seed: int = 3, frame: pl.DataFrame | None = None, **state: float) -> np.ndarray:
    """Latency per request after the warm-up at B = 1, 600 req/s, the test profile's host
    (``frame``: another profile)."""
    res = host_b1_run(host_profile_frame() if frame is None else frame, 600.0, seed, **state)
    return (res.completion_s - res.arrival_s)[res.config.warmup_requests :]


def test_the_state_process_has_its_sigma_and_correlation(monkeypatch) -> None:
    """Every window a new factor: mean 1, log spread sigma, lag-one correlation rho."""
    seen: list[float] = []
    original = SharedHost.set_state

    def record(self: SharedHost, factor: float) -> None:
        seen.append(factor)
        original(self, factor)

    monkeypatch.setattr(SharedHost, "set_state", record)
    _b1(state_sigma=0.3, state_rho=0.8, state_window_s=0.002)
    z = np.log(np.array(seen))
    assert len(z) > 2000  # a run of ~6.7 s in 2 ms windows
    assert np.std(z) == pytest.approx(0.3, rel=0.15)
    assert np.corrcoef(z[:-1], z[1:])[0, 1] == pytest.approx(0.8, abs=0.06)
    assert np.mean(np.array(seen)) == pytest.approx(1.0, abs=0.05)  # mean 1: no net slowdown


def test_slow_spells_that_last_raise_the_tail_not_the_median() -> None:
    plain = _b1()
    assert np.array_equal(plain, _b1(state_sigma=0.0))  # sigma 0: no state at all
    state = _b1(state_sigma=0.25, state_rho=0.7, state_window_s=0.1)
    assert np.array_equal(state, _b1(state_sigma=0.25, state_rho=0.7, state_window_s=0.1))
    assert np.median(state) == pytest.approx(np.median(plain), rel=0.15)
    assert np.percentile(state, 99) > 1.15 * np.percentile(plain, 99)
    # the same spread redrawn independently every 1 ms (no spells) moves the tail far less
    short = _b1(state_sigma=0.25, state_rho=0.0, state_window_s=0.001)
    assert np.percentile(short, 99) < np.percentile(state, 99)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"state_sigma": -0.1, "host": True}, "state sigma"),
        ({"state_sigma": 0.2, "state_rho": 1.0, "host": True}, "lag-one"),
        ({"state_sigma": 0.2, "state_window_s": 0.0, "host": True}, "state window"),
        ({"state_sigma": 0.2}, "needs the shared-host model"),
    ],
)
def test_bad_state_is_one_clear_error(kw: dict, needle: str) -> None:
    with pytest.raises(SimConfigError, match=needle):
        SimConfig(**kw)


def test_parse_host_state() -> None:
    got = parse_host_state("0.19, 0.7, 0.1")
    assert got == {"state_sigma": 0.19, "state_rho": 0.7, "state_window_s": 0.1}
    assert parse_host_state("profile") == {} and parse_host_state("off") == {"state_sigma": 0.0}
    for bad in ("0.2,0.7", "a,b,c", ""):
        with pytest.raises(SimConfigError, match="SIGMA,RHO,WINDOW_S"):
            parse_host_state(bad)


def test_sim_run_and_check_take_the_state(tmp_path: Path, host_profile_path: Path) -> None:
    prof = host_profile_path
    args = ["run", "--profile", str(prof), "--B", "1", "--rate", "800", "--requests", "1500",
            "--json"]  # fmt: skip
    plain = runner.invoke(app, args)
    spells = runner.invoke(app, [*args, "--host-state", "0.3,0.8,0.05"])
    assert plain.exit_code == 0 and spells.exit_code == 0, spells.output
    p99 = [json.loads(r.stdout)["latency_p99_s"] for r in (plain, spells)]
    assert p99[1] != p99[0]
    for bad, needle in ((["--host-state", "0.3"], "SIGMA,RHO,WINDOW_S"),
                        (["--host-state", "run"], "choice of `sim check`"),
                        (["--host-state", "0.3,0.8,0.05", "--no-host"], "--host")):  # fmt: skip
        res = runner.invoke(app, [*args, *bad])
        assert res.exit_code == 2 and needle in res.stderr, res.output
        assert len(res.stderr.strip().splitlines()) == 1
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 16)
    out = host_model_run(tmp_path / "run.parquet", table)  # on "cpu:test": the host model
    check = ["check", str(out), "--profile", str(prof), "--json", "--B", "1"]
    check += ["--host-speed", "profile"]  # the state given does not hang on the speed search
    got = {}
    for extra in ([], ["--host-state", "0.3,0.8,0.05"]):
        res = runner.invoke(app, [*check, *extra])
        assert res.exit_code in (0, 1), res.output
        doc = json.loads(res.stdout.splitlines()[0])
        got[bool(extra)] = doc["simulated"]["p99"]
        assert doc.get("host_state") == (
            {"state_sigma": 0.3, "state_rho": 0.8, "state_window_s": 0.05} if extra else None
        )
    assert got[True] != got[False]
    res = runner.invoke(app, [*check, "--no-host", "--host-state", "0.3,0.8,0.05"])
    assert res.exit_code == 2 and "--host" in res.stderr


def test_a_profiles_measured_state_runs_by_default() -> None:
    """A profile with state_window rows: the host model runs the process fitted to them
    unless told otherwise; one without runs none (as before the rows existed)."""
    frame = state_profile_frame()
    terms = HostTerms.from_profile(profile_from_frame(frame), 1)
    assert terms is not None
    fitted = fit_state(
        tuple(w for w, _ in STATE_ROWS), tuple(s for _, s in STATE_ROWS), STATE_BLOCK_S
    )
    assert terms.state is not None and fitted is not None and fitted.rho > 0.3
    assert terms.state.rho == fitted.rho and terms.state.window_s == fitted.window_s
    assert terms.state.sigma == pytest.approx(fitted.sigma, rel=1e-9)
    fitted = terms.state
    default = _b1(frame=frame)
    same = _b1(
        frame=frame,
        state_sigma=fitted.sigma,
        state_rho=fitted.rho,
        state_window_s=fitted.window_s,
    )
    assert np.array_equal(default, same)
    off = _b1(frame=frame, state_sigma=0.0)
    assert np.array_equal(off, _b1())  # the rows change nothing else
    assert np.percentile(default, 99) > np.percentile(off, 99)
    other = _b1(frame=frame, state_sigma=0.3, state_rho=0.0, state_window_s=0.01)
    assert not np.array_equal(other, default)  # a set process replaces the profile's
    assert HostTerms.from_profile(profile_from_frame(host_profile_frame()), 1).state is None


def test_bad_state_rows_are_one_clear_error() -> None:
    frame = state_profile_frame()
    for broken in (
        frame.with_columns(
            pl.when(pl.col("component") == STATE_WINDOW)
            .then(None)
            .otherwise(pl.col("latency_p10_s"))
            .alias("latency_p10_s")
        ),
        frame.with_columns(
            pl.when(pl.col("component") == STATE_WINDOW)
            .then(pl.col("latency_p10_s") * 1e3)
            .otherwise(pl.col("latency_p10_s"))
            .alias("latency_p10_s")
        ),
    ):
        with pytest.raises(SimConfigError, match="state_window rows"):
            HostTerms.from_profile(profile_from_frame(broken), 1)


def test_sim_run_and_check_say_which_state_ran(tmp_path: Path) -> None:
    prof = tmp_path / "TEST-state-profile.parquet"
    write_profile(state_profile_frame(), prof)
    fitted = HostTerms.from_profile(profile_from_frame(state_profile_frame()), 1)
    assert fitted is not None and fitted.state is not None
    run = ["run", "--profile", str(prof), "--B", "1", "--rate", "800", "--requests", "800"]
    shown = " ".join(runner.invoke(app, run).stdout.split())
    assert f"machine state σ {fitted.state.sigma:.2f} ρ {fitted.state.rho:.2f} per 0.1 s" in shown
    off = " ".join(runner.invoke(app, [*run, "--host-state", "off"]).stdout.split())
    assert "no machine state" in off
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 16)
    out = host_model_run(tmp_path / "run.parquet", table)
    # at the profile's host speed: which state ran does not hang on the run's speed search
    # (tests/sim/test_run_speed.py), and skipping it keeps this test short
    check = ["check", str(out), "--profile", str(prof), "--B", "1", "--host-speed", "profile"]
    got, from_run = {}, {}
    for extra in (
        [], ["--host-state", "run"], ["--host-state", "profile"], ["--host-state", "off"],
        ["--host-state", "0.3,0.8,0.05"],
    ):  # fmt: skip
        res = runner.invoke(app, [*check, "--json", *extra])
        assert res.exit_code in (0, 1), res.output
        doc = json.loads(res.stdout.splitlines()[0])
        got[tuple(extra)], from_run[tuple(extra)] = doc["state"], doc["state_from_run"]
    s = fitted.state
    # the default reads the run's own alone gates: this run was made without a state
    assert from_run[()] is True and got[()] == got[("--host-state", "run")]
    assert got[()] is None or got[()]["sigma"] < 0.02
    assert not any(v for k, v in from_run.items() if k not in ((), ("--host-state", "run")))
    assert got[("--host-state", "profile")] == {
        "sigma": s.sigma, "rho": s.rho, "window_s": s.window_s,
    }  # fmt: skip
    assert got[("--host-state", "off")] is None
    assert got[("--host-state", "0.3,0.8,0.05")] == {"sigma": 0.3, "rho": 0.8, "window_s": 0.05}
    shown = " ".join(runner.invoke(app, check).stdout.split())
    assert "machine state along each B's alone gates" in shown
    shown = " ".join(runner.invoke(app, [*check, "--host-state", "profile"]).stdout.split())
    assert f"machine state σ {s.sigma:.2f}" in shown
    res = runner.invoke(app, [*check, "--no-host", "--host-state", "off"])
    assert res.exit_code in (0, 1), res.output  # off needs no host model
