"""`hw profile`: the timing helper, per-expert profiles, checkpoints, the CLI, SLURM via submitit.

Timing assertions are about structure (ordering, counts, lower bounds from a
known sleep), never tight speeds: the box is shared.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from hw.cli import app
from hw.profiling.errors import CheckpointError, ProfilingError, UnknownExpertError
from hw.profiling.model import ServedModel, load_checkpoint, random_model, save_checkpoint
from hw.profiling.profile import ProfileConfig, run_profile
from hw.timing import LatencyStats, TimingError, measure_latency, measure_samples
from traces.profile import (
    COMPANY_PENALTY_COMPONENTS,
    PREEMPT_HANDOFF,
    busy_handoff_curve,
    preempt_curve,
    read_profile,
    sched_tick_s,
    steps_path,
    write_profile,
)

runner = CliRunner()
TINY = {"n_experts": 2, "d_model": 8, "expert_hidden": 8, "seed": 0}
FAST = dict(
    warmup=1, min_calls=3, min_time_s=0.0, repeats=2, idle_calls=3, duty_phase_s=0.04,
    speed_probe_s=0.03, state_s=0.4, preempt_pairs=8,
)  # fmt: skip


def _error_line(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


# --- hw.timing ---------------------------------------------------------------------------------


def test_measure_latency_sees_a_known_sleep() -> None:
    st = measure_latency(lambda: time.sleep(0.002), warmup=1, min_calls=5, min_time_s=0.0)
    assert st.samples >= 5
    assert 0.002 <= st.p10_s <= st.median_s <= st.p90_s
    assert st.mean_s >= 0.002


def test_measure_samples_honours_warmup_calls_and_time() -> None:
    calls = []

    def call() -> None:  # slow enough that max_calls (100,000) is never what stops the run
        calls.append(1)
        time.sleep(0.001)

    t0 = time.perf_counter()
    samples = measure_samples(call, warmup=3, min_calls=7, min_time_s=0.05)
    assert time.perf_counter() - t0 >= 0.05
    assert len(samples) >= 7 and len(calls) == 3 + len(samples)
    capped = measure_samples(lambda: time.sleep(0.01), warmup=0, min_calls=1000, max_time_s=0.05)
    assert 1 <= len(capped) < 50  # max_time_s bounds the run whatever min_calls says


def test_zero_length_samples_still_give_positive_latency() -> None:
    st = LatencyStats.from_samples([0.0, 0.0, 0.0])
    assert st.median_s > 0 and st.p10_s > 0


@pytest.mark.parametrize(
    "kw", [{"warmup": -1}, {"min_calls": 0}, {"max_time_s": 0.0}, {"min_time_s": -1.0}]
)
def test_impossible_timing_settings_are_errors(kw: dict) -> None:
    with pytest.raises(TimingError):
        measure_samples(lambda: None, **kw)


# --- models and checkpoints --------------------------------------------------------------------


def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    model = random_model(3, 8, 8, k=2, seed=4)
    path = tmp_path / "m.pt"
    save_checkpoint(model, path)
    back = load_checkpoint(path)
    x = torch.randn(5, model.cfg.n_features)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), back(x))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "absent.pt")


def test_served_steps_reproduce_the_model_forward() -> None:
    model = random_model(4, 8, 16, k=2, seed=1)
    served = ServedModel(model)
    x = torch.randn(3, model.cfg.n_features)
    h, ex, w = served.gate(x)
    outs = torch.stack(
        [torch.stack([served.expert(int(e), h[i : i + 1])[0] for e in ex[i]]) for i in range(3)]
    )
    with torch.no_grad():
        assert torch.allclose(served.combine(outs, w), model(x), atol=1e-6)
    with pytest.raises(UnknownExpertError, match="unknown expert 4"):
        served.check_expert(4)


# --- run_profile -------------------------------------------------------------------------------


def test_profile_of_a_tiny_expert_is_positive_complete_and_valid(tmp_path: Path) -> None:
    res = run_profile(ProfileConfig(model=TINY, batch_sizes=(1, 4, 16), host_terms=False, **FAST))
    f = res.frame
    assert f.height == (2 + 2) * 3  # two experts, gate, combine; three sizes
    assert (f["latency_s"] > 0).all()
    assert (f["latency_p10_s"] <= f["latency_s"]).all()
    assert (f["latency_s"] <= f["latency_p90_s"]).all()
    assert set(f["component"].to_list()) == {"expert", "gate", "combine"}
    assert f["device"][0].startswith("cpu:")
    assert res.variation is not None and res.variation.max_rel >= res.variation.median_rel >= 0
    path = tmp_path / "p.csv"
    write_profile(f, path)
    prof = read_profile(path)
    assert prof.experts == [0, 1]
    gate = prof.component_latency_s("gate", 1)
    assert gate is not None and gate > 0
    assert prof.component_latency_s("combine", 4) == pytest.approx(
        f.filter((f["component"] == "combine") & (f["batch_size"] == 4))["latency_s"][0]
    )


def _short_state_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's state in 0.2 s blocks, so that FAST's 0.4 s of chains give a row (the
    real 5 s blocks need 5 s)."""
    import functools

    import hw.profiling.host as host
    from hw.profiling.host_state import state_rows

    monkeypatch.setattr(host, "state_rows", functools.partial(state_rows, block_s=0.2))


def test_profile_measures_the_host_terms_of_the_shared_host_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU server's host-side costs (docs/system-model.md §8) land in the steps file, one
    row each (the duty and hand-off curves one row per idle level), and the simulator reads
    them back into rates and curves it can use."""
    from hw.profiling.host import IDLE_S
    from hw.profiling.preemption import PREEMPT_GAPS_S
    from hw.profiling.speed_probe import PROBE_GAP_S
    from sim.host_terms import HOST_COMPONENTS, HostTerms
    from sim.machine_state import fit_state
    from traces.profile import (
        PREEMPT_BUSY,
        PREEMPT_HANDOFF,
        PREEMPT_HELD,
        PREEMPT_SHARED,
        PREEMPT_WALL,
        SPEED_PROBE,
        STALL_WATCH,
        STATE_BLOCK_S,
        STATE_WINDOW,
        Z90,
        stall_terms,
    )

    _short_state_blocks(monkeypatch)
    res = run_profile(ProfileConfig(model=TINY, batch_sizes=(1, 4), **FAST))
    f = res.frame
    assert f.filter(f["component"] == "dispatch")["batch_size"].to_list() == [1, 4]
    for comp in HOST_COMPONENTS[1:]:
        assert f.filter(f["component"] == comp).height == 1, comp
    curves = f.filter(f["idle_s"].is_not_null())
    hand_offs = ("handoff_gate", "handoff_worker")
    chain = ("handoff_worker_chain", "chain_first_step", "chain_next_step",
             "chain_first_gather", "chain_next_gather", "handoff_gate_chain")  # fmt: skip
    found = set(curves["component"].to_list())
    assert found - {PREEMPT_HELD, PREEMPT_SHARED, PREEMPT_HANDOFF} == {
        "duty_threads", *hand_offs, *chain, SPEED_PROBE, STATE_WINDOW, PREEMPT_BUSY, PREEMPT_WALL,
        "chain_gate", STALL_WATCH,
    }  # fmt: skip
    # the gate's preemption: per level of load (idle_s its mean gap) the work and wall time
    # per request over 8 pairs (16 requests), and the gates counted (held or shared) at most
    # all of them
    for comp in (PREEMPT_BUSY, PREEMPT_WALL):
        got = curves.filter(curves["component"] == comp).sort("idle_s")
        assert got["idle_s"].to_list() == list(PREEMPT_GAPS_S) and (got["samples"] == 16).all()
        assert (got["latency_s"] > 0).all()
    busy, wall = (
        curves.filter(curves["component"] == c).sort("idle_s")["latency_s"]
        for c in (PREEMPT_BUSY, PREEMPT_WALL)
    )
    assert (busy <= wall).all()
    counted = curves.filter(curves["component"].is_in([PREEMPT_HELD, PREEMPT_SHARED]))
    assert set(counted["idle_s"].to_list()) <= set(PREEMPT_GAPS_S)
    for (idle,), level in counted.group_by("idle_s"):
        assert 1 <= level["samples"].sum() <= 16, idle
    # the hand-off to a gate woken while a worker step ran: at most one per request
    handoff = curves.filter(curves["component"] == PREEMPT_HANDOFF)
    assert set(handoff["idle_s"].to_list()) <= set(PREEMPT_GAPS_S)
    assert (handoff["samples"] <= 16).all() and (handoff["latency_s"] > 0).all()
    # the machine's state: 0.4 s of chains fill two 0.2 s blocks of two 0.1 s windows each
    state = curves.filter(curves["component"] == STATE_WINDOW)
    assert state["idle_s"].to_list() == [0.1] and state["samples"][0] >= 2
    assert state["latency_p10_s"][0] <= state["latency_s"][0] <= state["latency_p90_s"][0]
    # the stalls in the same chains: the watch covers them all (0.4 s), rate >= 0
    watch = curves.filter(curves["component"] == STALL_WATCH)
    assert watch.height == 1 and 0.3 < watch["idle_s"][0] < 1.0 and watch["samples"][0] >= 8
    stalls = stall_terms(f)
    assert stalls is not None and stalls.rate_hz >= 0
    # the host speed probe: one row pooled over its phases among the duty curve's (as many
    # as each duty level's visits, 3), each of at least 5 calls after idle gaps of its mean
    probe = curves.filter(curves["component"] == SPEED_PROBE)
    assert probe.height == 1 and probe["idle_s"][0] == PROBE_GAP_S
    assert probe["samples"][0] >= 3 * 5 and probe["latency_s"][0] > 0
    for comp in chain:  # at the worker's mean wait of each duty level: gap + gate
        got = curves.filter(curves["component"] == comp).sort("idle_s")
        assert got.height == len(IDLE_S) and (got["latency_s"] > 0).all()
    for which in ("first", "next"):  # a step's gather is a part of it
        step, gather = (
            curves.filter(curves["component"] == f"chain_{which}_{part}").sort("idle_s")
            for part in ("step", "gather")
        )
        assert (gather["latency_s"] < step["latency_s"]).all()
    for comp in hand_offs:
        got = curves.filter(curves["component"] == comp).sort("idle_s")
        assert got["idle_s"].to_list() == list(IDLE_S) and (got["latency_s"] > 0).all()
    duty = curves.filter(curves["component"] == "duty_threads").sort("idle_s")
    assert duty.height == len(IDLE_S)
    # the chain's gate at each level's gap: a part of the chain's work
    gate = curves.filter(curves["component"] == "chain_gate").sort("idle_s")
    assert gate["idle_s"].to_list() == duty["idle_s"].to_list()
    assert ((gate["latency_s"] > 0) & (gate["latency_s"] < duty["latency_s"])).all()
    from hw.profiling.model import model_from_spec

    k = min(model_from_spec(TINY).cfg.k, TINY["n_experts"])
    assert duty["batch_size"].to_list() == [k] * len(IDLE_S)  # the chain's worker steps
    # the measured mean gap: back to back ~0, else at least most of the requested mean
    assert duty["idle_s"][0] < 1e-3 and duty["idle_s"][-1] > 0.5 * IDLE_S[-1]
    path = tmp_path / "p.parquet"
    write_profile(f, path)
    import polars as pl

    assert "idle_s" not in pl.read_parquet(path).columns  # the contract's file is unchanged
    terms = HostTerms.from_profile(read_profile(path), 4)
    assert terms is not None
    assert 0 < terms.gate_rate <= 1 and 0 < terms.worker_rate <= 1
    assert terms.dispatch_s[4] > 0 and terms.collect_s > 0
    assert len(terms.duty) == len(IDLE_S) and terms.duty[-1] > 0.5  # back to back: busy
    assert all(0 < v <= 1 for v in terms.duty_speed)
    assert list(terms.duty_speed) == sorted(terms.duty_speed)
    assert terms.handoff_idle_s == IDLE_S and terms.gate_handoff(0.0) > 0
    assert len(terms.wake_cost_s) == len(IDLE_S) and min(terms.wake_cost_s) >= 0
    assert terms.gate_cold_idle_s == tuple(gate["idle_s"].to_list())
    assert terms.gate_cold_cost_s[0] == 0.0 and min(terms.gate_cold_cost_s) >= 0
    assert terms.worker_handoff(1e-3) > 0
    # the state process sim fits to the one window's spread (none if it showed none)
    spread = float(np.log(state["latency_p90_s"][0] / state["latency_p10_s"][0]) / (2 * Z90))
    assert terms.state == fit_state((0.1,), (spread,), STATE_BLOCK_S)
    curve = preempt_curve(f)  # one point per level where a gate was counted
    assert len(curve) == len(set(counted["idle_s"].to_list()))
    assert list(terms.preempt_duty) == [pt.duty for pt in curve]
    assert list(terms.preempt_p) == [pt.p for pt in curve]
    assert all(0 < pt.duty <= 1 and 0 <= pt.p <= 1 for pt in curve)
    from traces.profile import LOOP_COMPONENTS

    for comp in LOOP_COMPONENTS:  # the server's own loops and the generator's penalties
        assert f.filter(f["component"] == comp).height == 1, comp
    pair = {  # the combine's own contended pair
        c: f.filter(f["component"] == c)["latency_s"].to_list()
        for c in ("completion_alone", "completion_contended")
    }
    assert all(len(v) == 1 and v[0] > 0 for v in pair.values())
    extra = max(0.0, pair["completion_contended"][0] - pair["completion_alone"][0])
    assert terms.worker_contention_s[2] == pytest.approx(extra)
    assert min(terms.gate_overhead_s, terms.batch_overhead_s, terms.completion_overhead_s) > 0
    # the part of the gate loop inside the server's gate stamps: written, and read as a part
    stamped = f.filter(f["component"] == "gate_stamped_overhead")["latency_s"].to_list()
    assert len(stamped) == 1 and 0 < terms.gate_stamped_overhead_s <= terms.gate_overhead_s
    assert min(terms.arrival_penalty_gate_s, terms.arrival_penalty_worker_s) > 0


def test_the_duty_chain_runs_in_the_servers_two_threads() -> None:
    """The duty curve's chain runs as the server does: the gate in one thread, the worker's
    steps in another (neither the caller's), each step timed; its work is the two threads'
    run times summed, the hand-off between them apart; an error in either thread reaches
    the caller."""
    import threading

    from hw.profiling.host import _server_chain

    seen: dict[str, int] = {}

    def gate() -> None:
        seen["gate"] = threading.get_ident()
        time.sleep(0.002)

    def step() -> None:
        seen["step"] = threading.get_ident()
        time.sleep(0.003)

    with _server_chain(gate, (step, step)) as chain:
        for _ in range(3):
            got = chain()
            assert got.gate_start < got.gate_end <= got.worker_start < got.end
            assert len(got.steps_s) == 2 and min(got.steps_s) >= 0.003
            assert got.work_s + got.handoff_s == pytest.approx(got.end - got.start)
            assert got.work_s >= 0.008
    assert len({seen["gate"], seen["step"], threading.get_ident()}) == 3

    def broken() -> None:
        raise RuntimeError("gate failed")

    with _server_chain(broken, (step,)) as chain, pytest.raises(RuntimeError, match="gate failed"):
        chain()


def test_chain_curves_are_the_chains_work_hand_off_and_cold_first_step() -> None:
    """Each level gives the chains' work at their mean gap, and at the worker's mean wait
    (gap + gate) the hand-off and the first and second worker steps; with one worker step
    (k = 1) there is no warm step to compare, so no step curves."""
    from hw.profiling.host import ChainTiming, chain_curves

    # gate 0-100 µs, worker from 130: steps of 60 (cold: gather 25 + expert 35) and 20
    # (warm: gather 5 + expert 15) µs, each timed in its two parts, then the combine, 40
    a = ChainTiming(0.0, 100e-6, 130e-6, (155e-6, 190e-6, 195e-6, 210e-6, 250e-6))
    b = ChainTiming(0.0, 200e-6, 240e-6, (265e-6, 300e-6, 305e-6, 320e-6, 360e-6))
    got = chain_curves([[(1e-3, a), (3e-3, b)], []])
    idle = {name: at for name, at in got}
    assert idle["duty_threads"] == pytest.approx(2e-3)  # the mean gap between chains
    assert idle["chain_gate"] == pytest.approx(2e-3)  # the gate, woken after those gaps
    chain = ("handoff_worker_chain", "chain_first_step", "chain_next_step")
    for name in (*chain, "chain_first_gather", "chain_next_gather"):
        assert idle[name] == pytest.approx(2.15e-3)  # the worker's mean wait: gap + gate
    by_name = {name: v for (name, _), v in got.items()}
    assert by_name["duty_threads"] == pytest.approx([220e-6, 320e-6])
    assert by_name["chain_gate"] == pytest.approx([100e-6, 200e-6])
    assert by_name["handoff_worker_chain"] == pytest.approx([30e-6, 40e-6])
    assert by_name["chain_first_step"] == pytest.approx([60e-6, 60e-6])
    assert by_name["chain_next_step"] == pytest.approx([20e-6, 20e-6])
    assert by_name["chain_first_gather"] == pytest.approx([25e-6, 25e-6])
    assert by_name["chain_next_gather"] == pytest.approx([5e-6, 5e-6])
    one = ChainTiming(0.0, 100e-6, 130e-6, (150e-6, 190e-6, 230e-6))  # k = 1: gather, expert
    assert {name for name, _ in chain_curves([[(1e-3, one)]])} == {
        "duty_threads",
        "chain_gate",
        "handoff_worker_chain",
    }
    # without their puts stamped (as above), no gate hand-off: with them, the put to the
    # gate's start, at the gate's mean wait: the gap less the hand-off plus a worker part
    # (chain end - gate end: 150 and 160 µs)
    put_a = ChainTiming(1.0, 1.0 + 100e-6, 1.0 + 130e-6, (1.0 + 250e-6,), put=1.0 - 20e-6)
    put_b = ChainTiming(2.0, 2.0 + 200e-6, 2.0 + 240e-6, (2.0 + 360e-6,), put=2.0 - 40e-6)
    found = chain_curves([[(1e-3, put_a), (3e-3, put_b)]])
    gate_hand = {at: v for (name, at), v in found.items() if name == "handoff_gate_chain"}
    assert list(gate_hand.values()) == [pytest.approx([20e-6, 40e-6])]
    want = np.mean([1e-3 - 20e-6 + 150e-6, 3e-3 - 40e-6 + 160e-6])
    assert list(gate_hand) == [pytest.approx(want)]
    half = chain_curves([[(1e-3, put_a), (3e-3, b)]])  # one chain without its put: none
    assert "handoff_gate_chain" not in {name for name, _ in half}


def test_host_terms_are_skipped_when_asked_or_without_gate() -> None:
    for kw in ({"host_terms": False}, {"gate_and_combine": False}):
        f = run_profile(ProfileConfig(model=TINY, batch_sizes=(1,), **kw, **FAST)).frame
        assert not set(f["component"].to_list()) & {
            "dispatch", "duty_threads", "gate_contended", "speed_probe"
        }  # fmt: skip
    f = run_profile(ProfileConfig(model=TINY, batch_sizes=(1,), **{**FAST, "speed_probe_s": 0}))
    assert "speed_probe" not in f.frame["component"].to_list()  # asked for none
    assert "duty_threads" in f.frame["component"].to_list()


def test_profile_is_monotone_ish_in_batch_size() -> None:
    """A bigger batch never costs much less; 64 samples of a wider expert cost clearly more."""
    tiny = run_profile(
        ProfileConfig(model=TINY, batch_sizes=(1, 64), gate_and_combine=False, **FAST)
    )
    for e in (0, 1):
        lat = tiny.frame.filter(tiny.frame["expert"] == e)["latency_s"].to_numpy()
        assert lat[1] >= 0.5 * lat[0]
    wide = {"n_experts": 1, "d_model": 256, "expert_hidden": 1024, "seed": 0}
    res = run_profile(
        ProfileConfig(
            model=wide,
            batch_sizes=(1, 64),
            gate_and_combine=False,
            min_calls=5,
            min_time_s=0.0,
            warmup=2,
            repeats=1,
        )
    )
    lat = res.frame["latency_s"].to_numpy()
    assert lat[1] > 1.5 * lat[0], lat


def test_unknown_expert_in_profile_is_an_error() -> None:
    with pytest.raises(UnknownExpertError):
        run_profile(ProfileConfig(model=TINY, batch_sizes=(1,), experts=(0, 2), **FAST))


# --- CLI ---------------------------------------------------------------------------------------

ARGS = ["--experts", "2", "--d-model", "8", "--expert-hidden", "8", "--batch-sizes", "1,2",
        "--min-calls", "3", "--min-time-s", "0", "--warmup", "1", "--idle-calls", "3",
        "--duty-phase-s", "0.04", "--speed-probe-s", "0.03", "--state-s", "0.4",
        "--preempt-pairs", "8"]  # fmt: skip


def test_cli_writes_profile_and_how_it_was_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _short_state_blocks(monkeypatch)
    out = tmp_path / "prof.parquet"
    result = runner.invoke(app, ["profile", "--out", str(out), *ARGS, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    from hw.profiling.host import IDLE_S

    # 2 experts, gate, combine at 2 sizes; dispatch at 2 sizes; 5 host terms and the
    # completion pair; 10 idle curves (duty, 2 hand-offs, the chain's gate, its two hand-offs
    # (the put to the gate, the gate to the worker) and first and next worker step and their
    # gathers); 3 server-loop overheads, 2 arrival penalties;
    # the speed probe; the machine's state over 0.1 s windows (in 0.2 s blocks here); the
    # gate's preemption: a busy row per level of load, and a held, a shared and a busy
    # hand-off row at most; the woken worker's join: up to four rows; the stalls' watch, and
    # their spans and gates where it found any; the scheduler's tick where the kernel says
    from hw.profiling.preemption import PREEMPT_GAPS_S
    from hw.profiling.sched_tick import kernel_tick_s

    tick = kernel_tick_s()
    fixed = 8 + 2 + 5 + 2 + 10 * len(IDLE_S) + 5 + 1 + 1 + 2 * len(PREEMPT_GAPS_S) + 1
    fixed += tick is not None
    assert fixed <= doc["rows"] <= fixed + 3 * len(PREEMPT_GAPS_S) + 4 + 2
    assert doc["variation"]["median_rel"] >= 0
    assert read_profile(out).experts == [0, 1]
    meta = json.loads((tmp_path / "prof.parquet.meta.json").read_text())
    assert meta["config"]["min_calls"] == 3 and meta["device"].startswith("cpu")
    again = runner.invoke(app, ["profile", "--out", str(out), *ARGS])
    assert "exists" in _error_line(again)
    shown = runner.invoke(app, ["profile", "--out", str(out), *ARGS, "--force"])
    assert shown.exit_code == 0, shown.output
    printed = " ".join(shown.stdout.split())
    assert "host terms (µs, b=1): dispatch" in printed
    assert "request chain in the server's threads busiest/idlest" in printed
    assert "its gate busiest/idlest" in printed
    assert "machine state σ" in printed and "over 0.1 s windows" in printed
    assert meta["config"]["state_s"] == 0.4
    assert "worker wake hand-off" in printed and "cold start" in printed
    assert "gate wake hand-off" in printed  # the chains' own, which the model reads
    assert "per arrival +" in printed and "speed probe" in printed
    assert "of the gate's loop inside its stamps" in printed
    assert ", stalls " in printed and "/s" in printed  # the watch, found any or none
    steps = pl.read_parquet(steps_path(out))
    # the hand-off is shown where the model reads one: at every level that timed one
    timed = steps.filter(pl.col("component") == PREEMPT_HANDOFF).height
    assert ("busy gate hand-off" in printed) == bool(timed)
    assert len(busy_handoff_curve(steps)) == timed
    assert sched_tick_s(steps) == tick  # read from the kernel, where it says
    assert ("scheduler tick" in printed) == (tick is not None)
    # the penalties in company, where a loop could be read (one row each at most)
    company = steps.filter(pl.col("component").is_in(COMPANY_PENALTY_COMPONENTS))
    assert company.height <= 2
    assert ("in company +" in printed) == (company.height > 0)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--only-experts", "0,5"], "unknown expert 5"),
        (["--batch-sizes", "0,4"], "--batch-sizes"),
        (["--dtype", "float8"], "dtype"),
        (["--device", "tpu"], "device"),
        (["--checkpoint", "/nonexistent/m.pt"], "no such checkpoint"),
        (["--warmup", "-1"], "--warmup"),
        (["--duty-phase-s", "0"], "--duty-phase-s"),
        (["--duty-visits", "0"], "--duty-visits"),
        (["--speed-probe-s", "-1"], "--speed-probe-s"),
        (["--state-s", "-1"], "--state-s"),
        (["--preempt-pairs", "-1"], "--preempt-pairs"),
    ],
)
def test_cli_bad_arguments_are_one_line_and_write_nothing(
    tmp_path: Path, extra: list[str], needle: str
) -> None:
    out = tmp_path / "p.parquet"
    line = _error_line(runner.invoke(app, ["profile", "--out", str(out), *ARGS, *extra]))
    assert needle in line
    assert list(tmp_path.iterdir()) == []


def test_cli_slurm_through_submitit_local_executor(tmp_path: Path) -> None:
    """The --slurm path end to end, with submitit's local executor standing in for SLURM."""
    out = tmp_path / "remote.csv"
    args = ["profile", "--out", str(out), *ARGS, "--repeats", "1", "--slurm", "gpu_test",
            "--slurm-folder", str(tmp_path / "jobs"), "--cluster", "local", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    prof = read_profile(out)
    assert prof.experts == [0, 1]
    meta = json.loads((tmp_path / "remote.csv.meta.json").read_text())
    assert meta["slurm_job"]
    assert any((tmp_path / "jobs").iterdir())  # submitit's job folder: logs and pickles


@pytest.mark.gpu
def test_profile_on_cuda() -> None:
    res = run_profile(ProfileConfig(model=TINY, batch_sizes=(1, 8), device="cuda", **FAST))
    assert res.frame["device"][0].startswith("cuda:")
    assert (res.frame["latency_s"] > 0).all()
    assert np.isfinite(res.frame["latency_p90_s"].to_numpy()).all()


def test_default_cpu_profile_ships_for_the_default_model() -> None:
    import traces
    from hw.profiling.profile import DEFAULT_BATCH_SIZES

    path = Path(traces.__file__).parent / "data" / "profiles" / "cpu-default.parquet"
    prof = read_profile(path)
    assert prof.experts == list(range(8))  # MoEConfig's default M
    for e in prof.experts:
        assert tuple(prof.points(e)[0].tolist()) == DEFAULT_BATCH_SIZES
    assert (prof.component_latency_s("gate") or 0) > 0
    assert (prof.component_latency_s("combine") or 0) > 0
    assert prof.frame["device"][0].startswith("cpu:")
    meta = json.loads(path.with_name(path.name + ".meta.json").read_text())
    assert meta["config"]["model"] == {"n_experts": 8, "d_model": 64, "expert_hidden": 64,
                                       "seed": 0, "k": 2}  # fmt: skip
    assert meta["variation"]["median_rel"] >= 0


def test_cli_profiles_a_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.pt"
    save_checkpoint(random_model(3, 8, 8, seed=2), ckpt)
    out = tmp_path / "c.parquet"
    # the host terms as briefly as ARGS measures them: what is checked here is the checkpoint
    fast_host = ARGS[ARGS.index("--idle-calls") :]
    args = ["profile", "--out", str(out), "--checkpoint", str(ckpt), "--batch-sizes", "1,4",
            "--min-calls", "2", "--min-time-s", "0", "--repeats", "1", *fast_host,
            "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    prof = read_profile(out)
    assert prof.experts == [0, 1, 2]
    assert prof.component_latency_s("gate") is not None  # the checkpoint's own gate, timed


def test_profile_component_rows_are_validated() -> None:
    import polars as pl

    from traces.profile import ProfileError, profile_from_frame

    base = {"expert": [0, 0, -1], "batch_size": [1, 2, 1], "latency_s": [1e-4, 2e-4, 5e-4]}
    prof = profile_from_frame(pl.DataFrame({**base, "component": ["expert", None, "gate"]}))
    assert prof.experts == [0] and prof.component_latency_s("gate") == pytest.approx(5e-4)
    assert prof.component_latency_s("combine") is None
    with pytest.raises(ProfileError, match="component"):
        profile_from_frame(pl.DataFrame({**base, "component": ["expert", "expert", "router"]}))
    with pytest.raises(ProfileError, match="-1"):
        profile_from_frame(
            pl.DataFrame({**base, "expert": [0, 0, 3], "component": ["expert", "expert", "gate"]})
        )
    with pytest.raises(ProfileError, match=">= 0"):  # no component column: the old contract
        profile_from_frame(pl.DataFrame(base))


@pytest.mark.parametrize("json_", [False, True])
def test_cli_warns_when_the_profiles_passes_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_: bool
) -> None:
    import dataclasses

    import hw.profiling.profile as profiling
    from hw.profiling.profile import Variation
    from traces.profile import profile_variation

    small = {"n_experts": 2, "d_model": 8, "expert_hidden": 8}
    cfg = ProfileConfig(model=small, batch_sizes=(1,), min_calls=3, min_time_s=0.0, rounds=1,
                        host_terms=False)  # fmt: skip
    measured = run_profile(cfg)  # a real result; only its recorded variation is replaced
    for median, says in ((0.6, True), (0.05, False)):
        moved = dataclasses.replace(measured, variation=Variation(median, 0.9, 1.2, "gate b=1"))
        monkeypatch.setattr(profiling, "run_profile", lambda cfg, *a, _r=moved, **k: _r)
        out = tmp_path / f"p-{median}.parquet"
        res = runner.invoke(app, ["profile", "--out", str(out), *ARGS, *(["--json"] * json_)])
        assert res.exit_code == 0, res.output
        assert ("differ by 60%" in " ".join(res.stderr.split())) is says
        assert profile_variation(out) == pytest.approx(median)  # what sim reads back


def test_speed_probe_times_the_gate_after_idle_gaps() -> None:
    """The probe (hw.profiling.speed_probe) times single gate calls after idle gaps: with
    2 ms gaps it makes far fewer calls in the same time than back to back, each a gate's."""
    from types import SimpleNamespace

    from hw.profiling.speed_probe import probe_samples

    served = ServedModel(random_model(2, 8, 8, seed=0), [torch.device("cpu")])
    t0 = time.perf_counter()
    gapped = probe_samples(served, 0.05, 2e-3, seed=1)
    wall = time.perf_counter() - t0
    assert len(gapped) >= 5 and all(0 < s < wall for s in gapped)
    assert sum(gapped) < 0.8 * wall  # most of the time went to the gaps
    back_to_back = probe_samples(served, 0.05, 0.0)
    assert len(back_to_back) > 2 * len(gapped)
    for bad in ({"seconds": 0.0}, {"mean_gap_s": -1.0}):
        with pytest.raises(TimingError, match="speed probe"):
            probe_samples(served, **bad)
    gpu = SimpleNamespace(devices=[torch.device("cuda", 0)])
    with pytest.raises(TimingError, match="on a CPU"):
        probe_samples(gpu, 0.01)  # type: ignore[arg-type]


def test_duty_visits_sets_how_often_each_duty_level_and_the_probe_are_visited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``duty_visits`` reaches the duty curve: the probe, one phase per visit among the duty
    levels' phases, runs that often, and its row pools every phase's samples."""
    import hw.profiling.host as host

    probes: list[float] = []
    real_probe = host.probe_samples

    def counted(*args: Any, **kwargs: Any) -> list[float]:
        got = real_probe(*args, **kwargs)
        probes.append(len(got))
        return got

    monkeypatch.setattr(host, "probe_samples", counted)
    for visits in (1, 4):
        probes.clear()
        cfg = ProfileConfig(model=TINY, batch_sizes=(1,), **{**FAST, "repeats": 1})
        res = run_profile(replace(cfg, duty_visits=visits))
        assert len(probes) == visits
        probe_row = res.frame.filter(pl.col("component") == "speed_probe")
        assert probe_row["samples"][0] == sum(probes)
    with pytest.raises(ProfilingError, match="duty_visits"):
        ProfileConfig(model=TINY, duty_visits=0)


def test_the_speed_probe_is_visited_among_the_duty_phases() -> None:
    """The probe's phases are shuffled in with the duty levels' (as often as each level), so
    its reference sees the same states of the machine as the curve it is compared with."""
    from hw.profiling.host import ChainTiming, duty_curve

    seen: list[str] = []

    def chain() -> ChainTiming:
        seen.append("chain")
        t = time.perf_counter()
        return ChainTiming(t, t + 1e-6, t + 2e-6, (time.perf_counter() + 1e-3,))

    def probe() -> list[float]:
        seen.append("probe")
        return [1e-4, 2e-4]

    levels, probed = duty_curve(chain, (0.0, 1e-4), 0.01, 3, seed=6, probe=probe)
    assert len(levels) == 2 and all(levels)
    assert seen.count("probe") == 3 and probed == [1e-4, 2e-4] * 3
    phases = [k for i, k in enumerate(seen) if i == 0 or k != seen[i - 1]]
    first, last = phases.index("probe"), len(phases) - 1 - phases[::-1].index("probe")
    assert "chain" in phases[first:last]  # not one block: chains between the probe's phases
    levels, probed = duty_curve(chain, (0.0,), 0.01, 2, seed=4)
    assert probed == [] and len(levels) == 1
