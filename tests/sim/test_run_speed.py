"""The host's speed taken from a run's own alone gates (sim.run_speed, HostSpeed.RUN): the
scale itself (exact where the host works alone), its recovery from a run the host model
made at a known scale, and the choice `sim check` makes between the sources."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sim.check import HostSpeed, check_run
from sim.config import GateSpec, ServiceModel, SimConfig
from sim.engine import simulate
from sim.errors import CheckError, SimConfigError
from sim.host import simulate_host
from sim.host_terms import HostTerms
from sim.output import records_of
from sim.records import RunResult
from sim.run_speed import (
    WARM_WITHIN_S,
    RunSpeeds,
    at_combine_factor,
    at_expert_factor,
    at_handoff_factor,
    at_run_speeds,
    at_scale,
    run_combine_factor,
    run_expert_factor,
    run_handoff_factor,
    run_speed_scale,
    run_speeds,
)
from sim.service import ServiceTable
from sim.workload import Workload, make_workload
from traces.alone_gates import alone_combines_s, alone_expert_calls_s, alone_gates_s
from traces.profile import profile_from_frame
from traces.run_wakes import worker_handoffs_s

from .test_host import host_model_run, host_profile_frame


def test_the_scale_divides_every_step_of_a_host_alone() -> None:
    """Requests 10 ms apart, each alone on the host: at scale s every stamp of a request is
    its arrival plus the time at full speed divided by s, with or without a duty curve."""
    g, e, n = 1e-4, 2e-4, 20
    cfg = SimConfig(
        batch_size=1, n_experts=1, gate=GateSpec(k=1), n_requests=n, max_backlog=None,
        gate_latency_s=g, warmup=0, host=True,
    )  # fmt: skip
    work = Workload.from_lists([i * 1e-2 for i in range(n)], [[0]] * n)
    arrival = np.asarray(work.arrival_s)
    table = ServiceTable.constant([[e]])
    for duty in ((), (0.0, 1.0)):
        host = HostTerms(np.zeros(2), duty=duty, duty_speed=(1.0,) * len(duty))
        for s in (0.5, 1.0, 2.0):
            res = simulate_host(cfg, table, work, replace(host, speed_scale=s))
            np.testing.assert_allclose(res.gate_done_s - arrival, g / s, rtol=1e-9)
            np.testing.assert_allclose(res.completion_s - arrival, (g + e) / s, rtol=1e-9)
    host = HostTerms(np.zeros(2), duty=(0.0, 1.0), duty_speed=(0.5, 1.0), speed_scale=0.8)
    assert host.speed_at_duty(0.0) == pytest.approx(0.4)
    assert host.speed_at_duty(1.0) == pytest.approx(0.8)
    assert HostTerms(np.zeros(2), speed_scale=1.5).speed_at_duty(0.3) == 1.5
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(SimConfigError, match="speed_scale"):
            HostTerms(np.zeros(2), speed_scale=bad)


def _table() -> ServiceTable:
    return ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 16)


def _b1(n: int = 2000, seed: int = 5) -> tuple[SimConfig, Workload]:
    cfg = SimConfig(
        batch_size=1, n_experts=8, rate_rps=800.0, n_requests=n, max_backlog=None,
        gate_latency_s=200e-6, combine_latency_s=60e-6, seed=seed, host=True, warmup=200,
    )  # fmt: skip
    return cfg, make_workload(cfg)


def _cold(table: ServiceTable) -> ServiceTable:
    """``table`` with the gate's cold start: 0 after no idle time, 150 µs after 2 ms."""
    assert table.host is not None
    cold = replace(table.host, gate_cold_idle_s=(0.0, 2e-3), gate_cold_cost_s=(0.0, 150e-6))
    return replace(table, host=cold)


@pytest.mark.parametrize("cold", [False, True])
@pytest.mark.parametrize("truth", [0.7, 1.0, 1.3])
def test_a_run_made_at_a_known_scale_gives_it_back(truth: float, cold: bool) -> None:
    """The host model's own run at scale ``truth`` (the same workload as the replay's, so
    only the scale moves): the scale found from its alone gates (the warm ones; all of them
    where the gate's cold start is modelled) is ``truth`` to the search's tolerance. The
    model stamps its gate where the server does (the call and the loop's stamped overhead),
    so a run's stamps and its replay's compare whole."""
    cfg, work = _b1()
    table = _cold(_table()) if cold else _table()
    assert table.host is not None and table.host.gate_overhead_s == 0.0
    stamped = replace(table.host, gate_overhead_s=40e-6, gate_stamped_overhead_s=16e-6)
    table = replace(table, host=stamped)
    run = records_of(simulate(cfg, at_scale(table, truth), work))
    assert len(alone_gates_s(run, WARM_WITHIN_S)) >= 100  # enough to read a median from
    assert run_speed_scale(run, cfg, table, work) == pytest.approx(truth, rel=0.03)
    # a model that put none of the loop inside the stamps (a profile before the row) reads
    # the same run's longer gates as a slower host: the bias the stamped overhead removes
    unstamped = replace(table, host=replace(stamped, gate_stamped_overhead_s=0.0))
    scale = run_speed_scale(run, cfg, unstamped, work)
    assert scale is not None and scale < truth * 0.96


@pytest.mark.parametrize("truth", [0.8, 1.0, 1.4])
def test_a_run_with_slower_expert_calls_gives_their_factor_back(truth: float) -> None:
    """The host model's own run at scale 0.9 with every expert call ``truth`` × its table's:
    the gate's speed and the factor on the expert table (from the calls with no gate
    running), searched together, are 0.9 and ``truth`` to the search's tolerance; without
    host terms, or with too few such calls, there is no factor."""
    cfg, work = _b1()
    table = _table()
    run = records_of(simulate(cfg, at_expert_factor(at_scale(table, 0.9), truth), work))
    assert len(alone_expert_calls_s(run)) >= 100
    # searched together: slower calls keep the host busier, which speeds its gates up
    scale, factor, combine, handoff = run_speeds(run, cfg, table, work)
    assert scale == pytest.approx(0.9, rel=0.03)
    assert factor == pytest.approx(truth, rel=0.03)
    assert combine == pytest.approx(1.0, rel=0.03)  # the combines ran at the host's speed
    assert handoff == pytest.approx(1.0, rel=0.03)  # and the worker's hand-offs as profiled
    assert run_expert_factor(run, cfg, replace(table, host=None), work) is None
    few_cfg, few_work = _b1(n=215)  # 15 counted requests: 30 expert calls
    few = records_of(simulate(few_cfg, table, few_work))
    assert run_expert_factor(few, few_cfg, table, few_work) is None


@pytest.mark.parametrize(("expert", "combine"), [(1.0, 1.5), (1.4, 1.25), (1.2, 0.8)])
def test_a_run_with_slower_combines_gives_every_factor_back(expert: float, combine: float) -> None:
    """The host model's own run at scale 0.9, its expert calls ``expert`` × and its combine
    job ``combine`` × their tables': the three, searched together, come back to the search's
    tolerance; the combine's factor alone, from the run at the true speed and expert factor,
    too. Without host terms, or with too few combines with no gate running, none."""
    cfg, work = _b1()
    table = _table()
    truth = at_combine_factor(at_expert_factor(at_scale(table, 0.9), expert), combine)
    run = records_of(simulate(cfg, truth, work))
    assert len(alone_combines_s(run)) >= 100
    scale, factor, found, _ = run_speeds(run, cfg, table, work)
    assert scale == pytest.approx(0.9, rel=0.03)
    assert factor == pytest.approx(expert, rel=0.03)
    assert found == pytest.approx(combine, rel=0.03)
    at_truth = at_expert_factor(at_scale(table, 0.9), expert)
    assert run_combine_factor(run, cfg, at_truth, work) == pytest.approx(combine, rel=0.02)
    # a longer combine is what the replay runs: its alone combines' median moves with it
    assert np.median(alone_combines_s(run)) > np.median(
        alone_combines_s(records_of(simulate(cfg, at_combine_factor(truth, 0.5), work)))
    )
    assert run_combine_factor(run, cfg, replace(table, host=None), work) is None
    assert at_combine_factor(replace(table, host=None), 2.0).host is None
    few_cfg, few_work = _b1(n=230)  # 30 counted requests: 30 combines
    few = records_of(simulate(few_cfg, table, few_work))
    assert run_combine_factor(few, few_cfg, table, few_work) is None
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(SimConfigError, match="combine_factor"):
            HostTerms(np.zeros(2), combine_factor=bad)


@pytest.mark.parametrize(("expert", "handoff"), [(1.0, 0.6), (1.2, 1.5)])
def test_a_run_with_another_handoff_gives_every_factor_back(expert: float, handoff: float) -> None:
    """The host model's own run at scale 0.9, its expert calls ``expert`` ×, its combines
    1.2 × and its worker's way to a batch (the wake, the gather's cold start, the dispatch)
    ``handoff`` × their tables': the four, searched together, come back to the search's
    tolerance; the hand-off's factor alone too. A longer way is what the replay runs; without
    host terms, or with too few alone ways, no factor."""
    cfg, work = _b1()
    table = _table()
    at_truth = at_combine_factor(at_expert_factor(at_scale(table, 0.9), expert), 1.2)
    truth = at_handoff_factor(at_truth, handoff)
    run = records_of(simulate(cfg, truth, work))
    assert len(worker_handoffs_s(run)) >= 100
    got = run_speeds(run, cfg, table, work)
    assert got == pytest.approx(RunSpeeds(0.9, expert, 1.2, handoff), rel=0.03)
    assert run_handoff_factor(run, cfg, at_truth, work) == pytest.approx(handoff, rel=0.02)
    assert np.median(worker_handoffs_s(run)) < np.median(
        worker_handoffs_s(records_of(simulate(cfg, at_handoff_factor(truth, 2.0), work)))
    )
    assert run_handoff_factor(run, cfg, replace(table, host=None), work) is None
    assert at_handoff_factor(replace(table, host=None), 2.0).host is None
    few_cfg, few_work = _b1(n=230)  # 30 counted requests: at most 30 alone ways
    few = records_of(simulate(few_cfg, table, few_work))
    assert run_handoff_factor(few, few_cfg, table, few_work) is None
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(SimConfigError, match="handoff_factor"):
            HostTerms(np.zeros(2), handoff_factor=bad)


def test_searched_together_each_replay_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_speeds`` finds exactly what the four searches in turn find (each from the others'
    last values, two rounds) with the same replays, yet runs none twice: each search's first
    replay is the one that ended the search before it."""
    import sim.run_speed as run_speed

    cfg, work = _b1(n=700)
    table = _table()
    truth = at_combine_factor(at_expert_factor(at_scale(table, 0.9), 1.2), 1.3)
    truth = at_handoff_factor(truth, 0.8)
    run = records_of(simulate(cfg, truth, work))
    replayed: list[tuple[float, ...]] = []  # each replay's scale, call, combine, hand-off
    real = run_speed.simulate

    def counted(c: SimConfig, t: ServiceTable, w: Workload) -> RunResult:
        assert t.host is not None
        h = t.host
        replayed.append((h.speed_scale, float(t.median[0, 1]), h.combine_factor, h.handoff_factor))
        return real(c, t, w)

    monkeypatch.setattr(run_speed, "simulate", counted)
    scale = expert = combine = handoff = None
    for _ in range(2):  # the searches in turn, as run_speeds' docstring says
        at = at_run_speeds(table, RunSpeeds(None, expert, combine, handoff))
        scale = run_speed_scale(run, cfg, at, work, scale or 1.0)
        at = at_run_speeds(table, RunSpeeds(scale, None, combine, handoff))
        expert = run_expert_factor(run, cfg, at, work, expert or 1.0)
        at = at_run_speeds(table, RunSpeeds(scale, expert, None, handoff))
        combine = run_combine_factor(run, cfg, at, work, combine or 1.0)
        at = at_run_speeds(table, RunSpeeds(scale, expert, combine, None))
        handoff = run_handoff_factor(run, cfg, at, work, handoff or 1.0)
    in_turn, replayed[:] = list(replayed), []
    assert run_speeds(run, cfg, table, work) == (scale, expert, combine, handoff)
    assert None not in (scale, expert, combine, handoff)
    assert set(replayed) == set(in_turn) and len(replayed) == len(set(replayed))
    assert len(in_turn) >= len(replayed) + 7  # the seven searches after the first


def test_the_run_speeds_land_on_their_own_parts_of_the_table() -> None:
    """``at_run_speeds`` puts the scale on the host, the expert factor on every expert
    call (median and spread), the combine factor on the combine job and the hand-off factor
    on the worker's way to a batch, each part alone and in any order of the single setters;
    None leaves that part as profiled, and all but the calls' ask for host terms (without
    them only the calls move)."""
    table = _table()
    both = at_run_speeds(table, RunSpeeds(0.8, 1.3, 0.7, 0.9))
    assert both.host.speed_scale == 0.8 and both.host.combine_factor == 0.7
    assert both.host.handoff_factor == 0.9
    np.testing.assert_allclose(both.median, table.median * 1.3)
    if table.p90 is not None:
        np.testing.assert_allclose(both.p90, table.p90 * 1.3)
    other = at_scale(
        at_handoff_factor(at_combine_factor(at_expert_factor(table, 1.3), 0.7), 0.9), 0.8
    )
    assert (other.host.speed_scale, other.host.combine_factor) == (0.8, 0.7)
    assert other.host.handoff_factor == 0.9
    np.testing.assert_array_equal(other.median, both.median)
    assert at_run_speeds(table, RunSpeeds(None, None, None, None)) is table
    only = at_run_speeds(table, RunSpeeds(None, 2.0, None, None))
    assert only.host is table.host
    np.testing.assert_allclose(only.median, table.median * 2.0)
    bare = at_run_speeds(replace(table, host=None), RunSpeeds(0.8, 1.3, 0.7, 0.9))
    assert bare.host is None
    np.testing.assert_allclose(bare.median, table.median * 1.3)


def test_too_few_alone_gates_give_no_scale() -> None:
    cfg, work = _b1(n=240)  # 40 counted requests
    table = _table()
    run = records_of(simulate(cfg, table, work))
    assert run_speed_scale(run, cfg, table, work) is None
    assert run_speed_scale(run, cfg, replace(table, host=None), work) is None
    # at 100 req/s most gates come after an idle gap: too few warm ones to read, but with the
    # cold start modelled every alone gate counts, and the scale is read
    sparse = replace(cfg, rate_rps=100.0, n_requests=600)
    work = make_workload(sparse)
    run = records_of(simulate(sparse, table, work))
    assert len(alone_gates_s(run, WARM_WITHIN_S)) < 50 <= len(alone_gates_s(run))
    assert run_speed_scale(run, sparse, table, work) is None
    cold = _cold(table)
    run = records_of(simulate(sparse, at_scale(cold, 0.8), work))
    assert run_speed_scale(run, sparse, cold, work) == pytest.approx(0.8, rel=0.03)


def test_check_takes_the_runs_own_speed_by_default(tmp_path: Path, host_profile_path: Path) -> None:
    """A run the model made on a host 0.7 × the profile's speed: by default the check reads
    the speed from the run and replays it within tolerance at every B; at the profile's
    speed B = 1 misses. A run at the profile's speed replays to the last digit at scale 1."""
    slow = host_model_run(tmp_path / "slow.parquet", at_scale(_table(), 0.7), rate_rps=800.0)
    rows = check_run(slow, host_profile_path, service=ServiceModel.MEDIAN)
    assert [r.run_speed for r in rows] == [pytest.approx(0.7, rel=0.03)] * 3
    assert all(r.speed_factor is None for r in rows)
    assert all(r.within for r in rows), rows
    assert all(r.to_json()["run_speed"] == r.run_speed for r in rows)
    # its expert calls ran at the host's speed too: no factor of their own beyond the search's
    assert all(r.run_expert_factor == pytest.approx(1.0, rel=0.03) for r in rows)
    assert all(r.to_json()["run_expert_factor"] == r.run_expert_factor for r in rows)
    assert all(r.run_combine_factor == pytest.approx(1.0, rel=0.03) for r in rows)
    assert all(r.to_json()["run_combine_factor"] == r.run_combine_factor for r in rows)
    assert all(r.run_handoff_factor == pytest.approx(1.0, rel=0.03) for r in rows[:1])
    assert all(r.to_json()["run_handoff_factor"] == r.run_handoff_factor for r in rows)
    plain = check_run(
        slow, host_profile_path, service=ServiceModel.MEDIAN, host_speed=HostSpeed.PROFILE
    )
    assert all(r.run_speed is None and r.run_expert_factor is None for r in plain)
    assert all(r.run_combine_factor is None and r.run_handoff_factor is None for r in plain)
    assert plain[0].error_pct["p50"] < -15 and not plain[0].within
    same = host_model_run(tmp_path / "same.parquet", _table(), rate_rps=800.0)
    rows = check_run(same, host_profile_path, service=ServiceModel.MEDIAN)
    assert [r.run_speed for r in rows] == [1.0] * 3
    assert [r.run_expert_factor for r in rows] == [1.0] * 3
    assert [r.run_combine_factor for r in rows] == [1.0] * 3
    assert [r.run_handoff_factor for r in rows][:1] == [1.0]
    assert all(abs(e) < 1e-9 for r in rows for e in r.error_pct.values())


def test_too_short_a_run_falls_back_or_refuses(tmp_path: Path, host_profile_path: Path) -> None:
    short = host_model_run(tmp_path / "short.parquet", _table(), n_requests=240)
    rows = check_run(short, host_profile_path, service=ServiceModel.MEDIAN)
    assert all(r.run_speed is None for r in rows)  # no probes either: the profile's speed
    with pytest.raises(CheckError, match="fewer than 50 gates"):
        check_run(short, host_profile_path, host_speed=HostSpeed.RUN)
    with pytest.raises(CheckError, match="shared-host model"):
        check_run(short, host_profile_path, host=False, host_speed=HostSpeed.RUN)
