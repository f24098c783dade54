"""A woken gate taking the host whole from a worker at work (``HostTerms.preempt_*``, hw
profile's ``preempt_*`` rows): in the server about 60 % of the gates woken while the worker
is inside an expert call end before that call does (benchmarks/README.md, session 15)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.config import GateSpec, SimConfig, parse_host_preempt
from sim.errors import SimConfigError
from sim.host import GATE, simulate_host
from sim.host_terms import HostTerms
from sim.records import RunResult
from sim.service import ServiceTable
from sim.workload import Workload
from traces.errors import FormatError
from traces.profile import (
    PREEMPT_BUSY,
    PREEMPT_HELD,
    PREEMPT_SHARED,
    PREEMPT_WALL,
    preempt_curve,
    profile_from_frame,
    write_profile,
)

from .test_host import _run_jobs, host_model_run, host_profile_frame
from .test_host_state import host_b1_run

runner = CliRunner()

# per level: (mean gap s, busy s and wall s per request, held gates, shared gates)
LEVELS = ((3e-3, 1e-3, 5e-3, 30, 10), (1e-4, 1e-3, 1.25e-3, 5, 15), (1e-2, 1e-3, 9e-3, 0, 0))


def preempt_frame(
    levels: tuple[tuple[float, float, float, int, int], ...] = LEVELS,
) -> pl.DataFrame:
    """The host test profile plus hw profile's ``preempt_*`` rows for these levels (a count
    of 0 writes no row, as hw profile does)."""
    rows = []
    for idle, busy, wall, held, shared in levels:
        rows += [(PREEMPT_BUSY, busy, 40, idle), (PREEMPT_WALL, wall, 40, idle)]
        rows += [(PREEMPT_HELD, 3e-4, held, idle)] if held else []
        rows += [(PREEMPT_SHARED, 7e-4, shared, idle)] if shared else []
    extra = pl.DataFrame(
        [
            {
                "expert": -1,
                "batch_size": 1,
                "latency_s": v,
                "samples": n,
                "component": c,
                "device": "cpu:test",
                "idle_s": idle,
            }
            for c, v, n, idle in rows
        ]
    )
    return pl.concat([host_profile_frame(), extra], how="diagonal_relaxed")


def test_the_rows_give_the_held_share_at_each_levels_duty() -> None:
    """Per level the held gates' share of those counted, at busy / wall; a level where no
    gate was counted gives no point; points by increasing duty."""
    curve = preempt_curve(preempt_frame())
    assert [pt.p for pt in curve] == [0.75, 0.25]
    assert [pt.duty for pt in curve] == pytest.approx([0.2, 0.8])
    terms = HostTerms.from_profile(profile_from_frame(preempt_frame()), 1)
    assert terms is not None
    assert terms.preempt_duty == pytest.approx((0.2, 0.8)) and terms.preempt_p == (0.75, 0.25)
    assert terms.gate_preempt_p(0.5) == pytest.approx(0.5)  # interpolated
    assert terms.gate_preempt_p(0.05) == 0.75 and terms.gate_preempt_p(1.0) == 0.25  # flat
    plain = HostTerms.from_profile(profile_from_frame(host_profile_frame()), 1)
    assert plain is not None and plain.preempt_p == () and plain.gate_preempt_p(0.3) == 0.0


def test_bad_preempt_rows_are_one_clear_error() -> None:
    busier = preempt_frame(((1e-3, 2e-3, 1e-3, 3, 1),))  # busy longer than the wall time
    with pytest.raises(FormatError, match="busy <= wall"):
        HostTerms.from_profile(profile_from_frame(busier), 1)
    no_wall = preempt_frame().filter(pl.col("component") != PREEMPT_WALL)
    with pytest.raises(FormatError, match="preempt_wall"):
        preempt_curve(no_wall)
    no_busy = preempt_frame().filter(pl.col("component") != PREEMPT_BUSY)
    with pytest.raises(FormatError, match="preempt_busy"):
        preempt_curve(no_busy)
    no_count = preempt_frame().with_columns(
        pl.when(pl.col("component") == PREEMPT_HELD)
        .then(None)
        .otherwise(pl.col("samples"))
        .alias("samples")
    )
    with pytest.raises(FormatError, match="samples"):
        preempt_curve(no_count)


def test_preemption_terms_are_checked() -> None:
    for kw in (
        {"preempt_duty": (0.2,), "preempt_p": (0.5, 0.6)},
        {"preempt_duty": (0.2, 0.8), "preempt_p": (0.5, 1.5)},
        {"preempt_duty": (0.8, 0.2), "preempt_p": (0.5, 0.6)},
        {"preempt_duty": (0.2, 1.8), "preempt_p": (0.5, 0.6)},
    ):
        with pytest.raises(SimConfigError, match="preemption"):
            HostTerms(np.zeros(2), **kw)


def test_parse_host_preempt() -> None:
    assert parse_host_preempt("profile") == {}
    assert parse_host_preempt(" off ") == {"gate_preempt": False}
    with pytest.raises(SimConfigError, match="profile or off"):
        parse_host_preempt("on")


# --- the shared host ----------------------------------------------------------------------------


def test_a_whole_job_runs_alone_and_the_others_wait_until_it_ends() -> None:
    """Worker 0: 1.0 s of work from 0; the gate's 0.3 s from 0.4; worker 1: 0.1 s from 0.5.
    Shared evenly (gate at 0.25, a worker at 0.8 of full speed) the gate crawls; whole, it
    runs alone 0.4-0.7 while both workers wait, and they share from 0.7 on."""
    even = _run_jobs([(0, 0.0, 1.0), (GATE, 0.4, 0.3)], 0.25, 0.8)
    assert even[0] == pytest.approx(0.4 + 0.6 / 0.8)  # 1.15
    assert even[GATE] == pytest.approx(1.15 + (0.3 - 0.75 * 0.25))  # alone after 1.15
    jobs = [(0, 0.0, 1.0), (GATE, 0.4, 0.3), (1, 0.5, 0.1)]
    whole = _run_jobs(jobs, 0.25, 0.8, whole=frozenset({GATE}))
    assert whole[GATE] == pytest.approx(0.7)
    # from 0.7 the two workers share at 0.8 each: worker 1 done after 0.125 s; worker 0
    # has 0.6 - 0.1 = 0.5 left at 0.825, alone from then
    assert whole[1] == pytest.approx(0.825)
    assert whole[0] == pytest.approx(0.825 + 0.5)
    # a held job runs at the host's speed, as if alone: on a host twice as fast it and the
    # worker's wait take half as long
    fast = _run_jobs(jobs[:2], 0.25, 0.8, speed=2.0, whole=frozenset({GATE}))
    assert fast[GATE] == pytest.approx(0.4 + 0.3 / 2)  # the worker did 0.8 by 0.4
    assert fast[0] == pytest.approx(0.55 + (1.0 - 0.8) / 2)
    # the hold ends with the job: a later gate job shares again
    later = _run_jobs(
        [(0, 0.0, 2.0), (GATE, 0.2, 0.1), (GATE - 1, 1.0, 0.25)], 1.0, 0.5, whole=frozenset({GATE})
    )
    assert later[GATE] == pytest.approx(0.3)
    # worker 0 loses the 0.1 s held and, sharing at 0.5 with thread -2 for 0.5 s, 0.25 s
    assert later[0] == pytest.approx(2.0 + 0.1 + 0.25)


# --- the host model -------------------------------------------------------------------------


def host_timeline(arrivals: list[float], host: HostTerms, **cfg: object) -> RunResult:
    """B = 1, k = 1 over three experts in turn, gate 1 ms, expert 0.4 ms, no warm-up, on
    ``host`` (``cfg``: further SimConfig fields)."""
    config = SimConfig(
        batch_size=1, n_experts=3, gate=GateSpec(k=1), n_requests=len(arrivals),
        max_backlog=None, gate_latency_s=1e-3, warmup=0, host=True, **cfg,
    )  # fmt: skip
    work = Workload.from_lists(arrivals, [[e % 3] for e in range(len(arrivals))])
    return simulate_host(config, ServiceTable.constant([[4e-4]] * 3), work, host)


def preempt_timeline(p: float, arrivals: list[float], **terms: Any) -> RunResult:
    """:func:`host_timeline` with no other host costs; the lock shared evenly at 0.5 each; a
    woken gate preempts a worker at work with probability ``p`` and then runs at the host's
    speed (``terms``: more HostTerms fields)."""
    host = HostTerms(
        np.zeros(2),
        gate_rate=0.5,
        worker_rate=0.5,
        preempt_duty=(0.0, 1.0),
        preempt_p=(p, p),
        **terms,
    )
    return host_timeline(arrivals, host)


def test_a_preempting_gate_keeps_the_host_while_it_goes_straight_on() -> None:
    """Request 0 at 0: gate 0-1 ms, its expert call from 1 ms. Request 1 arrives at 1.2 ms
    and wakes the gate, which takes the host whole: the expert call (0.2 ms done) waits.
    Request 2 arrives at 1.5 ms, during gate 1: the gate goes straight on, still holding,
    so the call resumes only at 3.2 ms and ends at 3.4 ms."""
    held = preempt_timeline(1.0, [0.0, 1.2e-3, 1.5e-3])
    assert held.gate_done_s.tolist() == pytest.approx([1e-3, 2.2e-3, 3.2e-3])
    assert held.batch_start_s[0] == pytest.approx(1e-3)
    assert held.batch_end_s[0] == pytest.approx(3.4e-3)
    shared = preempt_timeline(0.0, [0.0, 1.2e-3, 1.5e-3])
    # shared at 0.5 each from 1.2 ms: the call's last 0.2 ms take 0.4; the gate has 0.8 ms
    # left then, alone
    assert shared.batch_end_s[0] == pytest.approx(1.6e-3)
    assert shared.gate_done_s[1] == pytest.approx(1.6e-3 + 0.8e-3)


def test_a_gate_woken_while_no_worker_is_at_work_takes_nothing() -> None:
    """Requests 2 ms apart: each gate and its expert call run alone, with or without
    preemption."""
    arrivals = [0.0, 2e-3, 4e-3]
    a, b = preempt_timeline(1.0, arrivals), preempt_timeline(0.0, arrivals)
    assert a.completion_s.tolist() == pytest.approx(b.completion_s.tolist())
    assert a.completion_s.tolist() == pytest.approx([1.4e-3, 3.4e-3, 5.4e-3])


def _woken_gates_in_calls(res: RunResult) -> tuple[int, int]:
    """(woken gates that started inside an expert call, of them those the call outlasted)."""
    starts, ends = res.batch_start_s, res.batch_end_s
    order = np.argsort(starts)
    starts, ends = starts[order], ends[order]
    prev_done = np.concatenate([[-1.0], res.gate_done_s[:-1]])
    woken = res.gate_start_s > prev_done + 1e-12
    j = np.searchsorted(starts, res.gate_start_s, side="right") - 1
    inside = woken & (j >= 0) & (ends[np.maximum(j, 0)] > res.gate_start_s)
    held = inside & (ends[np.maximum(j, 0)] >= res.gate_done_s)
    return int(inside.sum()), int(held.sum())


def _b1(frame: pl.DataFrame, **kw: object) -> RunResult:
    return host_b1_run(frame, 1500.0, 5, **kw)


def test_the_profiles_preemption_runs_by_default_and_off_changes_nothing_else() -> None:
    """With the rows, woken gates that start inside an expert call hold the host in the
    share the curve gives at the run's duty (here the curve is 0.75 to 0.25 over duty 0.2
    to 0.8); without them, or with gate_preempt off, every such call is shared and the run
    is exactly the one of a profile without the rows."""
    frame = preempt_frame()
    on = _b1(frame)
    off = _b1(frame, gate_preempt=False)
    plain = _b1(host_profile_frame())
    np.testing.assert_array_equal(off.completion_s, plain.completion_s)
    assert not np.array_equal(on.completion_s, off.completion_s)
    inside, held = _woken_gates_in_calls(on)
    assert inside > 100
    assert 0.2 < held / inside < 0.8
    inside_off, held_off = _woken_gates_in_calls(off)
    assert inside_off > 100 and held_off / inside_off < 0.1  # shared: the gate is the slower
    always = _b1(preempt_frame(((3e-3, 1e-3, 5e-3, 10, 0),)))  # held every time, any duty
    inside, held = _woken_gates_in_calls(always)
    assert inside > 100 and held == inside


def test_sim_run_and_check_say_whether_the_preemption_ran(tmp_path: Path) -> None:
    prof = tmp_path / "TEST-preempt-profile.parquet"
    write_profile(preempt_frame(), prof)
    run = ["run", "--profile", str(prof), "--B", "1", "--rate", "800", "--requests", "800"]
    shown = " ".join(runner.invoke(app, run).stdout.split())
    assert "gate preemption" in shown
    off = runner.invoke(app, [*run, "--host-preempt", "off"])
    assert off.exit_code == 0 and "gate preemption" not in " ".join(off.stdout.split())
    bad = runner.invoke(app, [*run, "--host-preempt", "sometimes"])
    assert bad.exit_code == 2 and "profile or off" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    got = {}
    for extra in ([], ["--host-preempt", "off"]):
        res = runner.invoke(app, [*run, "--json", *extra])
        got[tuple(extra)] = json.loads(res.stdout.splitlines()[0])["latency_p99_s"]
    assert got[()] != got[("--host-preempt", "off")]
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 16)
    out = host_model_run(tmp_path / "run.parquet", table)
    # at the profile's host speed: whether the preemption ran does not hang on the speed search
    check = ["check", str(out), "--profile", str(prof), "--B", "1", "--host-speed", "profile"]
    docs = {}
    for extra in ([], ["--host-preempt", "off"]):
        res = runner.invoke(app, [*check, "--json", *extra])
        assert res.exit_code in (0, 1), res.output
        docs[tuple(extra)] = json.loads(res.stdout.splitlines()[0])
    assert docs[()]["gate_preempt"] is True
    assert docs[("--host-preempt", "off")]["gate_preempt"] is False
    assert docs[("--host-preempt", "off")]["host_state"] == {"gate_preempt": False}
    assert " ".join(runner.invoke(app, check).stdout.split()).count("gate preemption") == 1
    no_host = runner.invoke(app, [*check, "--json", "--no-host"])
    assert json.loads(no_host.stdout.splitlines()[0])["gate_preempt"] is None
