"""The stalls a measured run met, read from its own gates and replayed where they were
(:mod:`sim.run_stalls`, ``HostTerms.stall_times``, ``sim check --host-stalls run``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from sim.check import check_runs
from sim.cli import app
from sim.errors import SimConfigError
from sim.host_terms import HostTerms
from sim.run_stalls import MIN_STALL_GATES, matched_stalls, run_stalls, with_stalls
from sim.service import ServiceTable
from traces.profile import profile_from_frame, write_profile

from .test_host import host_model_run, host_profile_frame
from .test_host_preempt import host_timeline

runner = CliRunner()


def _gate_rows(
    n: int,
    planted: dict[int, tuple[int, float]],
    seed: int = 0,
    worker: dict[int, float] | None = None,
) -> pl.DataFrame:
    """Records of ``n`` requests, two slots each (the gate's times repeat per slot, each
    slot its own batch of one), a gate of about 200 µs every 2-3 ms, its expert calls of
    about 100 µs after it, then its combine of 20 µs; ``planted``: first request ->
    (gates, factor) slowed, with their expert calls; ``worker``: request -> a factor on its
    expert calls alone (its gate at its usual speed)."""
    rng = np.random.default_rng(seed)
    starts = 0.01 + np.cumsum(rng.uniform(2e-3, 3e-3, n))
    walls = 2e-4 * np.exp(0.15 * rng.standard_normal(n))
    calls = 1e-4 * np.exp(0.15 * rng.standard_normal(n))
    for first, (count, factor) in planted.items():
        walls[first : first + count] = 2e-4 * factor
        calls[first : first + count] = 1e-4 * factor
    for r, factor in (worker or {}).items():
        calls[r] = 1e-4 * factor
    slots = []
    for s in (0, 1):
        call_start = starts + walls + s * calls
        slots.append(
            pl.DataFrame(
                {
                    "request": np.arange(n),
                    "slot": s,
                    "gate_start_s": starts,
                    "gate_done_s": starts + walls,
                    "batch": 2 * np.arange(n) + s,
                    "batch_size": 1,
                    "batch_start_s": call_start,
                    "batch_end_s": call_start + calls,
                    "combine_start_s": starts + walls + 2 * calls,
                    "complete_s": starts + walls + 2 * calls + 2e-5,
                }
            )
        )
    return pl.concat(slots)


def test_the_stalls_a_run_met_are_read_from_its_gates() -> None:
    planted = {300: (3, 3.0), 1200: (5, 4.0)}
    rows = _gate_rows(2000, planted)
    got = run_stalls(rows)
    assert got is not None and len(got.starts_s) == 2
    gates = rows.filter(pl.col("slot") == 0).sort("request")
    start = gates["gate_start_s"].to_numpy()
    last_call = rows.filter(pl.col("slot") == 1).sort("request")["batch_end_s"].to_numpy()
    for i, (first, (count, factor)) in enumerate(planted.items()):
        last = first + count - 1
        assert got.starts_s[i] == pytest.approx(start[first])  # on the run's own clock
        # to the end of the last slow step: the last slow gate's second expert call
        assert got.spans_s[i] == pytest.approx(last_call[last] - start[first])
        assert got.factors[i] == pytest.approx(factor, rel=0.05)
    assert got.rate_hz == pytest.approx(2 / (gates["gate_done_s"][-1] - start[0]))
    assert run_stalls(rows.filter(pl.col("request") < MIN_STALL_GATES - 1)) is None
    assert run_stalls(rows.clear()) is None


def test_a_stall_begins_where_the_workers_steps_slowed_before_its_gates() -> None:
    """Requests 298 and 299's expert calls ran 10 times slower with their gates at their
    usual speed (one thread's CPU away), then three gates from 300 on ran 3 times slower:
    the episode the gates show begins at 298's first expert call, each slow call within
    RUN_STALL_GROW_S of the next. A lone slow worker far from any is no stall, and the
    planted stall alone is read as before."""
    planted = {300: (3, 3.0)}
    rows = _gate_rows(2000, planted, worker={298: 10.0, 299: 10.0, 1000: 10.0})
    got = run_stalls(rows)
    assert got is not None and len(got.starts_s) == 1
    calls = rows.filter(pl.col("slot") == 0).sort("request")["batch_start_s"].to_numpy()
    last_call = rows.filter(pl.col("slot") == 1).sort("request")["batch_end_s"].to_numpy()
    assert got.starts_s[0] == pytest.approx(calls[298])
    assert got.starts_s[0] + got.spans_s[0] == pytest.approx(last_call[302])
    assert got.factors[0] == pytest.approx(3.0, rel=0.05)  # the gates' factor still
    plain = run_stalls(_gate_rows(2000, planted))
    assert plain is not None and got.starts_s[0] < plain.starts_s[0] - 4e-3


def test_a_calm_run_replays_no_stalls_in_place_of_the_profiles() -> None:
    calm = run_stalls(_gate_rows(2000, {}))
    assert calm is not None and len(calm.starts_s) == 0
    drawn = HostTerms(
        np.zeros(2), stall_rate_hz=5.0, stall_span_s=(1e-3,) * 3, stall_factor=(3.0,) * 3
    )
    table = replace(ServiceTable.constant([[4e-4]]), host=drawn)
    host = with_stalls(table, calm).host
    assert host is not None and not host.stalls and host.stall_rate_hz == 0.0
    met = run_stalls(_gate_rows(2000, {500: (2, 3.0)}))
    assert met is not None
    host = with_stalls(table, met).host
    assert host is not None and host.stalls and host.stall_rate_hz == 0.0
    assert len(host.stall_times) == 1
    assert host.stall_times[0] == pytest.approx((met.starts_s[0], met.spans_s[0], met.factors[0]))
    plain = ServiceTable.constant([[4e-4]])
    assert with_stalls(plain, met) is plain  # no host model: nothing to stall


def _handoffs(stall_times: tuple[tuple[float, float, float], ...]) -> HostTerms:
    """No host costs but hand-offs (gate 50 µs, worker 30 µs) and the stalls replayed."""
    return HostTerms(
        np.zeros(2),
        handoff_idle_s=(0.0,),
        handoff_gate_s=(5e-5,),
        handoff_worker_s=(3e-5,),
        stall_times=stall_times,
    )


def test_replayed_stalls_slow_the_work_where_they_were() -> None:
    """Gate 1 ms, expert 0.4 ms. A stall at factor 3 from 5 to 9 ms: request 1, arriving at
    5 ms, has its hand-off at 150 µs and its gate at 3 ms (5.15-8.15 ms), the worker's
    hand-off 90 µs; its expert call starts at 8.24 ms, does 0.76 / 3 ms of its 0.4 ms by 9
    ms and the rest at full speed. Requests 0 and 2, outside it, run the plain timeline."""
    run = host_timeline([1e-3, 5e-3, 2e-2], _handoffs(((5e-3, 4e-3, 3.0),)))
    assert run.gate_start_s.tolist() == pytest.approx([1.05e-3, 5.15e-3, 2.005e-2])
    assert run.gate_done_s.tolist() == pytest.approx([2.05e-3, 8.15e-3, 2.105e-2])
    assert run.batch_start_s[1] == pytest.approx(8.24e-3)
    assert run.batch_end_s[1] == pytest.approx(9e-3 + 4e-4 - 0.76e-3 / 3)
    off = host_timeline([1e-3, 5e-3, 2e-2], _handoffs(((5e-3, 4e-3, 3.0),)), host_stalls=False)
    assert off.gate_done_s.tolist() == pytest.approx([2.05e-3, 6.05e-3, 2.105e-2])


def test_bad_replayed_stalls_are_one_clear_error() -> None:
    for bad in (
        ((2e-3, 1e-3, 3.0), (1e-3, 1e-3, 3.0)),  # out of order
        ((1e-3, 0.0, 3.0),),
        ((1e-3, 1e-3, 0.5),),
        ((float("nan"), 1e-3, 3.0),),
    ):
        with pytest.raises(SimConfigError, match="replayed stalls"):
            _handoffs(bad)


def _planted_run(tmp_path: Path) -> tuple[Path, Path, tuple[tuple[float, float, float], ...]]:
    """A 'measured' run at B = 1, 4, 16 made by the host model with three stalls of 12 ms at
    factor 3 where the check's profile (the same host terms) has none."""
    prof = tmp_path / "TEST-host-profile.parquet"
    write_profile(host_profile_frame(), prof)
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 16)
    planted = ((0.3, 0.012, 3.0), (0.7, 0.012, 3.0), (1.1, 0.012, 3.0))
    assert table.host is not None
    stalled = replace(table, host=replace(table.host, stall_times=planted))
    return host_model_run(tmp_path / "run.parquet", stalled), prof, planted


def test_check_replays_the_stalls_its_run_met(tmp_path: Path) -> None:
    """sim check reads the three planted stalls back from the run's gates at every B (each
    where it began, nearly all its span) and, replaying them, meets B = 1's p99; with the
    profile's stalls (none), its replay misses it."""
    run, prof, planted = _planted_run(tmp_path)
    from traces.serving import read_records

    records, _ = read_records(run)
    for b in (1, 4, 16):
        met = run_stalls(records.filter(pl.col("B") == b))
        assert met is not None and len(met.starts_s) == len(planted), b
        found = zip(planted, met.starts_s, met.spans_s, met.factors, strict=True)
        for (start, span, factor), t, got_span, f in found:
            assert start - 1e-3 <= t < start + 2e-3  # a gate under way then, or the next
            assert 0.85 * span <= got_span <= span + 2e-3
            assert f == pytest.approx(factor, rel=0.1)  # from the gates that ran alone
    met = run_stalls(records.filter(pl.col("B") == 1))
    assert met is not None
    by_mode = {}
    for name, stalls_from_run in (("run", True), ("profile", False)):
        rows = check_runs([run], prof, stalls_from_run=stalls_from_run, replays=3, only_b=[1])
        by_mode[name] = {r.B: r for r in rows}
    b1 = by_mode["run"][1]
    assert b1.run_stalls_hz == pytest.approx(met.rate_hz) and b1.stalls
    assert abs(b1.error_pct["p99"]) < 10.0
    assert by_mode["profile"][1].run_stalls_hz is None and not by_mode["profile"][1].stalls
    assert by_mode["profile"][1].error_pct["p99"] < -10.0  # past the tolerance
    assert abs(b1.error_pct["p50"]) < 5.0 and abs(by_mode["profile"][1].error_pct["p50"]) < 5.0


def test_sim_check_host_stalls_run_is_the_default(tmp_path: Path) -> None:
    run, prof, _ = _planted_run(tmp_path)
    # at the profile's host speed: which stalls ran does not hang on the run's speed search
    check = ["check", str(run), "--profile", str(prof), "--B", "1", "--host-speed", "profile"]
    docs = {}
    for name, extra in (
        ("default", []),
        ("run", ["--host-stalls", "run"]),
        ("profile", ["--host-stalls", "profile"]),
        ("off", ["--host-stalls", "off"]),
    ):
        res = runner.invoke(app, [*check, "--json", *extra])
        assert res.exit_code in (0, 1), res.output
        docs[name] = json.loads(res.stdout.splitlines()[0])
    docs["run"].pop("host_state")  # the options given, echoed
    assert docs["default"] == docs["run"]
    assert docs["run"]["stalls"] is True and docs["run"]["run_stalls_hz"] > 0
    for name in ("profile", "off"):
        assert docs[name]["stalls"] is False and docs[name]["run_stalls_hz"] is None
    table = runner.invoke(app, check)
    assert "stalls from each B's gates" in " ".join(table.stdout.split())
    bad = runner.invoke(app, ["check", str(run), "--profile", str(prof), "--host-stalls", "x"])
    assert bad.exit_code == 2 and "--host-stalls 'x'" in bad.output
    sim_run = runner.invoke(app, ["run", "--B", "1", "--requests", "100", "--host-stalls", "run"])
    assert sim_run.exit_code == 2 and "--host-stalls 'run'" in sim_run.output


def _b1_stalled(stall_times: tuple[tuple[float, float, float], ...], **host: object) -> tuple:
    """(config, workload, table, records) of the host model's own run at B = 1, 500 req/s,
    with these stalls replayed (``host``: more HostTerms fields)."""
    from sim.config import SimConfig
    from sim.engine import simulate
    from sim.output import records_of
    from sim.workload import make_workload

    cfg = SimConfig(
        batch_size=1, n_experts=8, rate_rps=500.0, n_requests=2000, max_backlog=None,
        gate_latency_s=200e-6, combine_latency_s=60e-6, seed=6, host=True, warmup=200,
    )  # fmt: skip
    work = make_workload(cfg)
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 1)
    assert table.host is not None
    table = replace(table, host=replace(table.host, stall_times=stall_times, **host))
    return cfg, work, table, records_of(simulate(cfg, table, work))


PLANTED = ((0.8, 0.015, 3.0), (1.8, 0.015, 3.0), (2.8, 0.015, 3.0))


def test_matching_gives_each_stall_the_factor_its_gates_say() -> None:
    """Replayed with factors 6, 1.5 and 3 where the run stalled at 3: after two matching
    replays each factor is 3 within a tenth (the replay's gates inside each as slow as the
    run's); without replayed stalls the table is left as it is."""
    cfg, work, table, run = _b1_stalled(PLANTED)
    assert table.host is not None
    wrong = tuple((t, span, f) for (t, span, _), f in zip(PLANTED, (6.0, 1.5, 3.0), strict=True))
    guess = replace(table, host=replace(table.host, stall_times=wrong))
    got = matched_stalls(run, cfg, guess, work)
    assert got.host is not None
    assert [f for _, _, f in got.host.stall_times] == pytest.approx([3.0] * 3, rel=0.1)
    assert [(t, span) for t, span, _ in got.host.stall_times] == [(t, s) for t, s, _ in PLANTED]
    calm = replace(table, host=replace(table.host, stall_times=()))
    assert matched_stalls(run, cfg, calm, work) is calm


def test_a_stall_inside_a_slow_spell_is_read_against_the_spell() -> None:
    """The run's state at 1.5 from 0.6 to 1.2 s, a stall of factor 3 inside it at 0.8 s: its
    gates took about 4.5 times the run's median. Read against the state's path the stall's
    factor is its own 3; against the run's median alone, well above."""
    from sim.machine_state import MachineState, StatePath
    from sim.run_state import run_state

    t = np.arange(50) * 0.1
    raw = np.where((t >= 0.6) & (t < 1.2), 1.5, 1.0)
    path = StatePath(0.0, 0.1, tuple((raw / raw.mean()).tolist()))
    *_, run = _b1_stalled(PLANTED[:1], state=MachineState(0.3, 0.9, 0.1), state_path=path)
    read = run_state(run)
    assert read is not None and read.path is not None
    against_state = run_stalls(run, read.path)
    against_median = run_stalls(run)
    assert against_state is not None and against_median is not None
    assert list(against_state.factors) == pytest.approx([3.0], rel=0.15)
    assert against_median.factors.max() > 1.25 * against_state.factors.max()
