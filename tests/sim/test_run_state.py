"""The machine's state read from a run's own alone gates (``sim.run_state``): runs the host
model made with a known state process give it back, runs made without one read none, and
``sim check`` replays each B with the state its run had by default."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sim.check import check_run
from sim.config import ServiceModel, SimConfig
from sim.engine import simulate
from sim.machine_state import MachineState, StatePath
from sim.output import records_of
from sim.run_state import MIN_STATE_WINDOWS, run_state, with_state
from sim.service import ServiceTable
from sim.workload import make_workload
from traces.alone_gates import alone_gates, alone_gates_s
from traces.profile import profile_from_frame

from .test_host import host_model_run, host_profile_frame


def _table() -> ServiceTable:
    return ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 16)


def _b1_run(n: int, rate_rps: float, seed: int = 3, **state: float) -> object:
    """The records of the host model's own run at B = 1 (``state``: SimConfig state fields)."""
    cfg = SimConfig(
        batch_size=1, n_experts=8, rate_rps=rate_rps, n_requests=n, max_backlog=None,
        gate_latency_s=200e-6, combine_latency_s=60e-6, seed=seed, host=True, warmup=200,
        **state,
    )  # fmt: skip
    return records_of(simulate(cfg, _table(), make_workload(cfg)))


@pytest.mark.parametrize(("sigma", "rho"), [(0.2, 0.7), (0.3, 0.3)])
def test_a_run_made_with_a_known_state_gives_it_back(sigma: float, rho: float) -> None:
    """16 s at 250 req/s in a state of σ per 0.1 s and lag-one ρ: the alone gates' windows
    read σ back within a fifth, and a process whose spells last (ρ 0.7) apart from a quick
    one (ρ 0.3); the same run without a state reads (nearly) none."""
    run = _b1_run(4000, 250.0, state_sigma=sigma, state_rho=rho, state_window_s=0.1)
    got = run_state(run)  # type: ignore[arg-type]
    assert got is not None and got.state is not None
    assert got.state.window_s == 0.1
    assert got.state.sigma == pytest.approx(sigma, rel=0.2)
    assert sorted(got.sigmas) == [0.1, 0.25, 0.5, 1.0]
    assert (got.state.rho > 0.5) == (rho > 0.5)
    quiet = run_state(_b1_run(4000, 250.0, state_sigma=0.0))  # type: ignore[arg-type]
    assert quiet is not None
    assert quiet.state is None or quiet.state.sigma < 0.03


def test_a_run_shorter_than_a_block_is_read_within_its_own_length() -> None:
    """At 500 req/s 1800 counted requests last under 4 s, less than the profile's 5 s block:
    the state is read within the run's span, over the windows that fit twice in it."""
    run = _b1_run(2000, 500.0, state_sigma=0.25, state_rho=0.5, state_window_s=0.1)
    starts, walls = alone_gates(run)  # type: ignore[arg-type]
    assert np.array_equal(walls, alone_gates_s(run))  # type: ignore[arg-type]
    assert np.all(np.diff(starts) > 0)
    assert starts.max() - starts.min() < 4.0
    got = run_state(run)  # type: ignore[arg-type]
    assert got is not None and got.state is not None
    assert max(got.sigmas) <= (starts.max() - starts.min()) / 2
    assert got.state.sigma == pytest.approx(0.25, rel=0.3)


def test_too_few_alone_gates_read_no_state() -> None:
    """240 requests (a short run): fewer than MIN_STATE_WINDOWS windows of 0.1 s hold enough
    alone gates, so nothing is read (the profile's state applies); no rows: nothing."""
    run = _b1_run(240, 250.0)
    assert len(alone_gates_s(run)) > 0  # type: ignore[arg-type]
    assert run_state(run) is None  # type: ignore[arg-type]
    assert run_state(run.head(0)) is None  # type: ignore[attr-defined]
    assert MIN_STATE_WINDOWS >= 10


def test_with_state_replaces_the_state_only() -> None:
    table = _table()
    state = MachineState(0.2, 0.5, 0.1)
    got = with_state(table, state)
    assert got.host is not None and table.host is not None
    assert got.host.state == state and replace(got.host, state=None).duty == table.host.duty
    assert got.host.state_path is None
    path = StatePath(0.0, 0.1, (1.2, 0.8))
    along = with_state(table, state, path).host
    assert along is not None and along.state_path == path
    assert with_state(replace(table, host=None), state).host is None


def _planted_path(seconds: float, window_s: float = 0.1) -> StatePath:
    """Slow (1.5) for the first 1.2 s, fast (0.7) for the next 1.2 s, then 1, repeating;
    scaled to mean 1."""
    t = np.arange(round(seconds / window_s)) * window_s
    raw = np.where(t % 3.6 < 1.2, 1.5, np.where(t % 3.6 < 2.4, 0.7, 1.0))
    return StatePath(0.0, window_s, tuple((raw / raw.mean()).tolist()))


def _along(path: StatePath, rate_rps: float = 500.0, n: int = 2200) -> object:
    """The host model's own run at B = 1 with its state along ``path``."""
    cfg = SimConfig(
        batch_size=1, n_experts=8, rate_rps=rate_rps, n_requests=n, max_backlog=None,
        gate_latency_s=200e-6, combine_latency_s=60e-6, seed=4, host=True, warmup=200,
    )  # fmt: skip
    table = with_state(_table(), MachineState(0.3, 0.9, 0.1), path)
    return records_of(simulate(cfg, table, make_workload(cfg)))


def test_the_path_a_run_took_is_read_back_where_it_was() -> None:
    """A run the model made along a planted path (slow 1.2 s, fast 1.2 s, ...) over 4.4 s
    at 500 req/s: the path read from its alone gates follows it window by window
    (correlation of the logs over 0.9), slow against fast by the planted 1.5 / 0.7 within
    a tenth, starting at the run's first arrival; made without a state, it reads flat."""
    planted = _planted_path(4.6)
    run = _along(planted)
    got = run_state(run)  # type: ignore[arg-type]
    assert got is not None and got.path is not None and got.state is not None
    assert got.path.start_s == pytest.approx(float(run["arrival_s"].min()))  # type: ignore[index]
    assert got.path.window_s == pytest.approx(got.state.window_s)
    mid = got.path.start_s + got.path.window_s * (np.arange(len(got.path.factors)) + 0.5)
    read, truth = np.log(got.path.factors), np.log(planted.at(mid))
    inside = mid > 0.5  # after the warm-up, where alone gates read it
    assert np.corrcoef(read[inside], truth[inside])[0, 1] > 0.9
    slow, fast = truth > np.log(1.2), truth < np.log(0.8)
    ratio = np.exp(read[inside & slow].mean() - read[inside & fast].mean())
    assert ratio == pytest.approx(1.5 / 0.7, rel=0.1)
    assert np.mean(got.path.factors) == pytest.approx(1.0)
    flat = run_state(_b1_run(2200, 500.0, state_sigma=0.0))  # type: ignore[arg-type]
    assert flat is None or flat.path is None or np.ptp(np.log(flat.path.factors)) < 0.15


def test_the_model_runs_a_state_path_where_it_was() -> None:
    """Gate 1 ms, expert 0.4 ms: in a window at factor 2 (10-20 ms) the gate takes 2 ms,
    outside it 1 ms; an explicitly set state (SimConfig.state_sigma) runs instead."""
    from sim.host_terms import HostTerms

    from .test_host_preempt import host_timeline

    path = StatePath(0.01, 0.01, (2.0,))
    host = HostTerms(np.zeros(2), state=MachineState(0.1, 0.5, 0.01), state_path=path)
    run = host_timeline([0.0, 0.012, 0.03], host)
    assert (run.gate_done_s - run.gate_start_s).tolist() == pytest.approx([1e-3, 2e-3, 1e-3])
    off = host_timeline([0.0, 0.012, 0.03], host, state_sigma=0.0)
    assert (off.gate_done_s - off.gate_start_s).tolist() == pytest.approx([1e-3] * 3)


def test_check_replays_each_b_with_its_runs_state(tmp_path: Path, host_profile_path: Path) -> None:
    """A run the host model made at 250 req/s in a state of σ 0.3 per 0.1 s (its profile
    has none): by default the check reads the state from the run (state_from_run, the state
    in --json) and the replay's B = 1 p50 and p99 come within tolerance; replayed with the
    profile's (none), the p99 falls a quarter short and the p50 a tenth (its alone gates,
    the ones that found the host fast, read the host as faster than it was)."""
    table = _table()
    assert table.host is not None and table.host.state is None
    made = with_state(table, MachineState(0.3, 0.7, 0.1))
    run = host_model_run(
        tmp_path / "state.parquet", made, rate_rps=250.0, n_requests=4000, b_values=(1,)
    )
    b1 = check_run(run, host_profile_path, service=ServiceModel.MEDIAN)[0]
    plain = check_run(run, host_profile_path, service=ServiceModel.MEDIAN, state_from_run=False)[0]
    assert b1.B == 1 and b1.state_from_run and not plain.state_from_run
    assert b1.state is not None and b1.state.sigma == pytest.approx(0.3, rel=0.2)
    assert plain.state is None
    assert b1.to_json()["state_from_run"] is True and b1.to_json()["state"] is not None
    assert b1.within, b1.error_pct
    assert plain.error_pct["p99"] < -20 and plain.error_pct["p50"] < -5
