"""The shared host's lock won or lost whole (``sim.config.HostLock``): exact timelines per
draw, the draw's expected rates equal to the even ones, and what it does to a run.

Why it matters: in the real server a worker's step can wait out several gates in a row
(benchmarks/README.md, session 12); sharing the host evenly never lets it.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable
from pathlib import Path

import numpy as np
import pytest
import simpy
from typer.testing import CliRunner

from sim.check import HostSpeed
from sim.cli import app
from sim.config import HostLock, SimConfig
from sim.errors import SimConfigError
from sim.host import GATE, SharedHost, simulate_host
from sim.host_terms import HostTerms
from sim.service import ServiceTable
from sim.workload import make_workload
from traces.profile import profile_from_frame

from .test_host import _run_jobs, host_model_run, host_profile_frame

runner = CliRunner()


class _Draws:
    """Stands in for the generator: returns the given u's in turn, and counts them."""

    def __init__(self, values: Iterable[float]) -> None:
        self._values = iter(values)
        self.calls = 0

    def random(self) -> float:
        self.calls += 1
        return next(self._values)


def _run(
    jobs: list[tuple[int, float, float]], gate_rate: float, worker_rate: float, draws: _Draws
) -> dict[int, float]:
    """Each (thread, start, work) on one SharedHost whose lock is drawn from ``draws``;
    returns thread -> its finish time."""
    return _run_jobs(jobs, gate_rate, worker_rate, lock_draw=draws)


def test_the_holder_runs_at_the_sum_of_the_rates_while_the_other_waits() -> None:
    # Rates 0.25 (gate) and 0.5 (worker) sum to 0.75: the gate holds with probability
    # 0.25 / 0.75 = 1/3 (u below it), the worker otherwise. Gate 1.0 s of work from 0,
    # worker 0.5 s from 0.2 (the gate has 0.8 left then).
    jobs = [(GATE, 0.0, 1.0), (0, 0.2, 0.5)]
    gate_holds = _run(jobs, 0.25, 0.5, _Draws([0.3]))
    assert gate_holds[GATE] == pytest.approx(0.2 + 0.8 / 0.75)
    assert gate_holds[0] == pytest.approx(0.2 + 0.8 / 0.75 + 0.5)  # then alone, in full
    worker_holds = _run(jobs, 0.25, 0.5, _Draws([0.34]))
    assert worker_holds[0] == pytest.approx(0.2 + 0.5 / 0.75)
    assert worker_holds[GATE] == pytest.approx(0.2 + 0.5 / 0.75 + 0.8)


def test_rates_past_one_let_both_run_or_one_alone_at_full_speed() -> None:
    # Rates 0.8 and 0.6: both at full speed with probability 0.4 (u < 0.4), the gate alone
    # with 1 - 0.6 = 0.4 (u in [0.4, 0.8)), the worker alone with 1 - 0.8 = 0.2.
    jobs = [(GATE, 0.0, 1.0), (0, 0.2, 0.5)]
    assert _run(jobs, 0.8, 0.6, _Draws([0.39])) == {GATE: 1.0, 0: pytest.approx(0.7)}
    assert _run(jobs, 0.8, 0.6, _Draws([0.79])) == {GATE: 1.0, 0: pytest.approx(1.5)}
    assert _run(jobs, 0.8, 0.6, _Draws([0.8])) == {0: pytest.approx(0.7), GATE: 1.5}


@pytest.mark.parametrize(("a", "b"), [(0.2, 0.3), (0.5, 0.5), (0.8, 0.6), (1.0, 0.1), (0.9, 0.9)])
def test_each_threads_expected_rate_is_its_even_one(a: float, b: float) -> None:
    """Over u evenly spread on [0, 1), the mean of each thread's drawn rate is its rate
    shared evenly, whatever the two rates are (a quadrature of the draw, no sampling)."""
    n = 2000
    got = {GATE: 0.0, 0: 0.0}
    for u in (np.arange(n) + 0.5) / n:
        env = simpy.Environment()
        host = SharedHost(env, a, b, lock_draw=_Draws([u]))  # type: ignore[arg-type]
        env.process(host.work(GATE, 1.0))
        env.process(host.work(0, 1.0))
        env.run(until=1e-9)
        for t in got:
            got[t] += host.rate(t) / n
    assert got == {GATE: pytest.approx(a, abs=1e-3), 0: pytest.approx(b, abs=1e-3)}


def test_a_worker_step_waits_out_each_gate_that_wins_the_lock() -> None:
    """A worker's 0.5 s step from 0; the gate runs three 0.2 s jobs back to back from 0.1.
    Rates 0.5 each: the holder runs at 1.0. Every draw goes to the gate: the step is done
    0.1 + 0.6 (three whole gates) + 0.4 = 1.1 s later. Every draw to the worker: it ends at
    0.5 and the gates after it. A draw at every job's start or end with two at work."""
    jobs = [(0, 0.0, 0.5), (GATE, 0.1, 0.2), (GATE, 0.3, 0.2), (GATE, 0.5, 0.2)]
    draws = _Draws([0.0] * 10)
    env = simpy.Environment()
    host = SharedHost(env, 0.5, 0.5, lock_draw=draws)  # type: ignore[arg-type]
    ends: dict[int, list[float]] = {GATE: [], 0: []}

    def thread(me: int, steps: list[tuple[float, float]]) -> Generator[simpy.Event, None, None]:
        for start, work in steps:
            yield env.timeout(max(0.0, start - env.now))
            yield from host.work(me, work)
            ends[me].append(env.now)

    env.process(thread(0, [(0.0, 0.5)]))
    env.process(thread(GATE, [(s, w) for t, s, w in jobs if t == GATE]))
    env.run()
    assert ends[GATE] == pytest.approx([0.3, 0.5, 0.7])
    assert ends[0] == pytest.approx([1.1])
    assert draws.calls == 3  # each gate's start finds the worker at work
    # the worker wins at 0.1: done at 0.5, when the gate (0.2 left) runs alone to 0.7
    assert _run(jobs[:2], 0.5, 0.5, _Draws([0.99])) == {0: 0.5, GATE: pytest.approx(0.7)}


def test_three_threads_at_work_share_evenly() -> None:
    draws = _Draws([0.0])  # drawn once, when the second thread starts
    env = simpy.Environment()
    host = SharedHost(env, 0.3, 0.6, lock_draw=draws)  # type: ignore[arg-type]
    for t in (GATE, 0, 1):
        env.process(host.work(t, 1.0))
    env.run(until=1e-9)
    assert [host.rate(t) for t in (GATE, 0, 1)] == [0.3, 0.6, 0.6]
    assert draws.calls == 1


def _b1_run(lock: HostLock, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """B = 1 at a load that keeps both threads busy, host terms of the test profile:
    (latency, gate start, gate done, completion) per request after the warm-up."""
    prof = profile_from_frame(host_profile_frame())
    table = ServiceTable.from_profile(prof, 8, 1)
    host = HostTerms.from_profile(prof, 1)
    assert host is not None and host.gate_contention_s
    cfg = SimConfig(
        batch_size=1, rate_rps=1000.0, n_requests=3000, max_backlog=None, host=True,
        gate_latency_s=prof.component_latency_s("gate") or 0.0,
        combine_latency_s=prof.component_latency_s("combine") or 0.0,
        seed=seed, host_lock=lock,
    )  # fmt: skip
    res = simulate_host(cfg, table, make_workload(cfg), host)
    keep = slice(cfg.warmup_requests, None)
    lat = (res.completion_s - res.arrival_s)[keep]
    return lat, res.gate_start_s[keep], res.gate_done_s[keep], res.completion_s[keep]


def _gates_spanned(gate_start: np.ndarray, gate_done: np.ndarray, done: np.ndarray) -> np.ndarray:
    """Per request, how many later gates ran (started) between its gate's end and its
    completion: the gates its worker steps shared the host with."""
    return np.searchsorted(gate_start, done) - np.searchsorted(gate_start, gate_done)


def test_the_whole_lock_keeps_the_mean_and_lets_a_request_wait_out_several_gates() -> None:
    even, whole = _b1_run(HostLock.EVEN), _b1_run(HostLock.WHOLE)
    assert np.array_equal(whole[0], _b1_run(HostLock.WHOLE)[0])  # the seed fixes the draws
    assert not np.array_equal(whole[0], _b1_run(HostLock.WHOLE, seed=4)[0])
    # the same expected speeds at every draw: the mean latency moves little (a long job that
    # wins keeps the lock longer than a short one); the tail grows
    assert np.mean(whole[0]) == pytest.approx(np.mean(even[0]), rel=0.15)
    ratio = {n: np.percentile(r[0], 99) / np.median(r[0]) for n, r in (("e", even), ("w", whole))}
    assert ratio["w"] > 1.1 * ratio["e"], ratio
    spans = {n: _gates_spanned(*r[1:]) for n, r in (("e", even), ("w", whole))}
    assert np.mean(spans["w"] >= 3) > 2 * max(np.mean(spans["e"] >= 3), 1e-3), spans


def test_the_lock_sharing_is_part_of_the_config() -> None:
    assert SimConfig().host_lock is HostLock.EVEN
    cfg = SimConfig(host_lock="whole")  # type: ignore[arg-type]
    assert cfg.host_lock is HostLock.WHOLE
    assert SimConfig.from_json(cfg.to_json()) == cfg
    stored = cfg.to_dict()
    del stored["host_lock"]  # a sweep spec that does not set it
    assert SimConfig.from_dict(stored).host_lock is HostLock.EVEN
    assert SimConfig.from_dict({**stored, "host_lock": "even"}).host_lock is HostLock.EVEN
    with pytest.raises(SimConfigError, match="whole or even"):
        SimConfig(host_lock="shared")  # type: ignore[arg-type]


def test_sim_run_and_check_take_the_lock_sharing(tmp_path: Path, host_profile_path: Path) -> None:
    prof = host_profile_path
    args = ["run", "--profile", str(prof), "--B", "1", "--rate", "1000", "--requests", "1500",
            "--json"]  # fmt: skip
    p99 = {}
    for lock in ("whole", "even"):
        res = runner.invoke(app, [*args, "--host-lock", lock])
        assert res.exit_code == 0, res.output
        p99[lock] = json.loads(res.stdout)["latency_p99_s"]
    default = runner.invoke(app, args)
    assert json.loads(default.stdout)["latency_p99_s"] == p99["even"]
    assert p99["whole"] != p99["even"]
    bad = runner.invoke(app, [*args, "--host-lock", "shared"])
    assert bad.exit_code == 2 and "shared" in bad.stderr
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 16)
    out = host_model_run(tmp_path / "run.parquet", table)  # on "cpu:test": the host model
    # B = 1 at the profile's host speed: the lock sharing does not hang on the speed search
    check = ["check", str(out), "--profile", str(prof), "--B", "1", "--host-speed", "profile"]
    checked = {}
    for lock in ("whole", "even"):
        res = runner.invoke(app, [*check, "--json", "--host-lock", lock])
        assert res.exit_code in (0, 1), res.output
        first = json.loads(res.stdout.splitlines()[0])
        assert first["host_lock"] == lock  # the output says which model made it
        checked[lock] = first["simulated"]["p99"]
    assert checked["whole"] != checked["even"]
    ideal = runner.invoke(app, [*check, "--json", "--no-host"])
    assert json.loads(ideal.stdout.splitlines()[0])["host_lock"] is None
    table = runner.invoke(app, [*check, "--host-lock", "whole"])
    assert "shared-host model, lock won whole" in table.stdout


def test_check_replays_average_the_models_own_draws(
    tmp_path: Path, host_profile_path: Path, monkeypatch
) -> None:
    """`sim check --replays K`: each B predicted as the mean of K replays at the model's seeds
    seed, seed + 1, ... (the run's arrivals and routing unchanged); K = 1 is the plain check."""
    import polars as pl

    import sim.check as check
    from sim.config import ServiceModel
    from sim.runner import load_service
    from traces.profile import read_profile
    from traces.serving import read_records

    prof = host_profile_path
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 16)
    run = host_model_run(tmp_path / "run.parquet", table)
    at_profile = HostSpeed.PROFILE  # the replays do not hang on the run's speed search
    assert check.check_run(run, prof, replays=1, host_speed=at_profile) == check.check_run(
        run, prof, host_speed=at_profile
    )
    seeds: list[int] = []
    real = check.simulate
    monkeypatch.setattr(check, "simulate", lambda c, *a: seeds.append(c.seed) or real(c, *a))
    rows = check.check_run(run, prof, replays=3, host_speed=at_profile)
    assert seeds == [5, 6, 7] * 3  # per B (1, 4, 16), the run's seed 5 and the next two
    assert all(r.replays == 3 and r.to_json()["replays"] == 3 for r in rows)
    monkeypatch.setattr(check, "simulate", real)
    # the mean, by hand, at B = 1
    records, cfg = read_records(run)
    records = records.filter(pl.col("B") == 1)
    work = check._workload(records)
    profile = read_profile(prof)
    b_table, _ = load_service(profile, cfg.n_experts, 1)
    sim_cfg = check.replay_config(cfg, 1, work.n_requests, ServiceModel.SPREAD, profile)
    one = [
        check._predict(sim_cfg.with_(seed=sim_cfg.seed + i), b_table, work, None, cfg)
        for i in range(3)
    ]
    mean = check._predict(sim_cfg, b_table, work, None, cfg, 3)
    assert mean == {k: pytest.approx(np.mean([o[k] for o in one]), rel=1e-12) for k in mean}
    assert len({o["p99"] for o in one}) > 1  # the seeds do differ
    bad = runner.invoke(app, ["check", str(run), "--profile", str(prof), "--replays", "0"])
    assert bad.exit_code == 2 and "--replays must be >= 1" in bad.stderr
