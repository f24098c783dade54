"""The machine's stalls in the host model (``HostTerms.stall_*``, hw profile's ``stall_*`` rows):
in ``hw serve`` at B = 1 a few ms now and then in which every gate, expert call and hand-off
takes 3-5 times its wall time set the p99 (benchmarks/README.md, session 20)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import simpy
from typer.testing import CliRunner

from sim.cli import app
from sim.config import parse_host_stalls
from sim.errors import SimConfigError
from sim.host import SharedHost
from sim.host_terms import HostTerms
from sim.records import RunResult
from sim.service import ServiceTable
from traces.profile import STALL_GATE, STALL_SPAN, STALL_WATCH, profile_from_frame, write_profile

from .test_host import host_model_run, host_profile_frame
from .test_host_preempt import host_timeline

runner = CliRunner()


def test_a_stall_slows_the_work_under_way_by_its_factor() -> None:
    """1 ms of work from 0; a stall of factor 3 from 0.2 to 0.5 ms does 0.1 ms of it: the job
    ends at 0.2 + 0.3 + 0.7 = 1.2 ms."""
    env = simpy.Environment()
    cpu = SharedHost(env, 1.0, 1.0)
    done: list[float] = []

    def job() -> object:
        yield from cpu.work(0, 1e-3)
        done.append(env.now)

    def stall() -> object:
        yield env.timeout(2e-4)
        cpu.set_stall(3.0)
        assert cpu.stall == 3.0
        yield env.timeout(3e-4)
        cpu.set_stall(1.0)

    env.process(job())
    env.process(stall())
    env.run()
    assert done == [pytest.approx(1.2e-3)]


def _stalled(rate_hz: float, span_s: float, factor: float, **cfg: object) -> HostTerms:
    """No host costs but hand-offs (gate 50 µs, worker 30 µs at every wait) and stalls of a
    fixed span and factor."""
    return HostTerms(
        np.zeros(2),
        handoff_idle_s=(0.0,),
        handoff_gate_s=(5e-5,),
        handoff_worker_s=(3e-5,),
        stall_rate_hz=rate_hz,
        stall_span_s=(span_s,) * 3,
        stall_factor=(factor,) * 3,
        **cfg,  # type: ignore[arg-type]
    )


def test_inside_a_stall_every_step_and_hand_off_takes_its_factor() -> None:
    """A stall that starts at once and outlasts the run: gate 1 ms -> 3 ms, expert 0.4 ms ->
    1.2 ms, the gate's hand-off 50 -> 150 µs and the worker's 30 -> 90 µs; with stalls off,
    or none measured, the plain timeline."""
    arrivals = [1e-3, 1e-2]
    stalled = host_timeline(arrivals, _stalled(1e6, 1e3, 3.0))
    assert stalled.gate_start_s.tolist() == pytest.approx([1.15e-3, 1.015e-2])
    assert stalled.gate_done_s.tolist() == pytest.approx([4.15e-3, 1.315e-2])
    assert stalled.batch_start_s[0] == pytest.approx(4.15e-3 + 9e-5)
    assert stalled.batch_end_s[0] - stalled.batch_start_s[0] == pytest.approx(1.2e-3)
    for plain in (
        host_timeline(arrivals, _stalled(1e6, 1e3, 3.0), host_stalls=False),
        host_timeline(arrivals, _stalled(0.0, 1e3, 3.0)),
    ):
        assert plain.gate_start_s.tolist() == pytest.approx([1.05e-3, 1.005e-2])
        assert plain.gate_done_s.tolist() == pytest.approx([2.05e-3, 1.105e-2])
        assert plain.batch_start_s[0] == pytest.approx(2.05e-3 + 3e-5)
        assert plain.batch_end_s[0] - plain.batch_start_s[0] == pytest.approx(4e-4)


def test_stalls_come_as_often_and_last_as_long_as_measured() -> None:
    """Stalls of 10 ms at factor 3, one every 50 ms of calm on average: the machine is
    stalled 10 / 60 of the time. Gates of 1 ms 20 ms apart (never queued): those wholly
    inside a stall take 3 ms (a share of (10 - 3) / 60), those wholly outside 1 ms ((50 - 1)
    / 60), the rest between; the same seed gives the same run."""
    arrivals = (np.arange(20_000) * 2e-2).tolist()
    host = _stalled(20.0, 1e-2, 3.0)
    run = host_timeline(arrivals, host)
    wall = run.gate_done_s - run.gate_start_s
    assert np.mean(np.isclose(wall, 3e-3)) == pytest.approx(7 / 60, abs=0.01)
    assert np.mean(np.isclose(wall, 1e-3)) == pytest.approx(49 / 60, abs=0.01)
    assert ((wall > 1e-3 - 1e-12) & (wall < 3e-3 + 1e-12)).all()
    again = host_timeline(arrivals, host)
    assert np.array_equal(again.gate_done_s, run.gate_done_s)


def test_bad_stall_terms_and_options_are_one_clear_error() -> None:
    for bad in (
        {"stall_rate_hz": -1.0},
        {"stall_rate_hz": float("inf"), "stall_span_s": (1e-3,) * 3, "stall_factor": (2.0,) * 3},
        {"stall_rate_hz": 1.0},  # no spans nor factors
        {"stall_rate_hz": 1.0, "stall_span_s": (2e-3, 1e-3, 3e-3), "stall_factor": (2.0,) * 3},
        {"stall_rate_hz": 1.0, "stall_span_s": (1e-3,) * 3, "stall_factor": (0.5, 2.0, 3.0)},
    ):
        with pytest.raises(SimConfigError, match="stalls"):
            HostTerms(np.zeros(2), **bad)  # type: ignore[arg-type]
    assert parse_host_stalls("profile") == {} and parse_host_stalls(" off ") == {
        "host_stalls": False
    }
    with pytest.raises(SimConfigError, match="--host-stalls"):
        parse_host_stalls("sometimes")
    res = runner.invoke(app, ["run", "--B", "1", "--requests", "100", "--host-stalls", "often"])
    assert res.exit_code == 2 and "--host-stalls 'often'" in res.output


def stall_frame() -> pl.DataFrame:
    """The host test profile plus ``stall_*`` rows: 24 episodes in 30 s, spans 4 / 5 / 15
    ms, gates 2.7 / 3 / 3.5 times the watched median."""
    row = {"expert": -1, "batch_size": 1, "device": "cpu:test"}
    extra = pl.DataFrame(
        [
            {**row, "component": STALL_WATCH, "idle_s": 30.0, "samples": 12000,
             "latency_s": 2e-4, "latency_p10_s": 1.7e-4, "latency_p90_s": 3e-4},
            {**row, "component": STALL_SPAN, "idle_s": None, "samples": 24,
             "latency_s": 5e-3, "latency_p10_s": 4e-3, "latency_p90_s": 1.5e-2},
            {**row, "component": STALL_GATE, "idle_s": None, "samples": 24,
             "latency_s": 6e-4, "latency_p10_s": 5.4e-4, "latency_p90_s": 7e-4},
        ]
    )  # fmt: skip
    return pl.concat([host_profile_frame(), extra], how="diagonal_relaxed")


def test_the_profile_rows_become_the_models_stalls() -> None:
    terms = HostTerms.from_profile(profile_from_frame(stall_frame()), 1)
    assert terms is not None and terms.stall_rate_hz == pytest.approx(0.8)
    assert terms.stall_span_s == pytest.approx((4e-3, 5e-3, 1.5e-2))
    assert terms.stall_factor == pytest.approx((2.7, 3.0, 3.5))
    plain = HostTerms.from_profile(profile_from_frame(host_profile_frame()), 1)
    assert plain is not None and plain.stall_rate_hz == 0.0 and plain.stall_span_s == ()


def test_sim_run_and_check_say_whether_the_stalls_ran(tmp_path: Path) -> None:
    prof = tmp_path / "TEST-stall-profile.parquet"
    write_profile(stall_frame(), prof)
    run = ["run", "--B", "1", "--rate", "800", "--requests", "400", "--profile", str(prof)]
    shown = runner.invoke(app, run)
    assert shown.exit_code == 0, shown.output
    assert "stalls" in " ".join(shown.stdout.split())
    off = runner.invoke(app, [*run, "--host-stalls", "off"])
    assert off.exit_code == 0 and "stalls" not in " ".join(off.stdout.split())
    table = ServiceTable.from_profile(profile_from_frame(host_profile_frame()), 8, 16)
    out = host_model_run(tmp_path / "run.parquet", table)
    docs = {}
    for name, extra in (("on", ["--host-stalls", "profile"]), ("off", ["--host-stalls", "off"])):
        # at the profile's host speed: whether the stalls ran does not hang on the speed search
        check = ["check", str(out), "--profile", str(prof), "--B", "1", "--json"]
        res = runner.invoke(app, [*check, "--host-speed", "profile", *extra])
        assert res.exit_code in (0, 1), res.output
        docs[name] = json.loads(res.stdout.splitlines()[0])
    assert docs["on"]["stalls"] is True and docs["off"]["stalls"] is False


def _latency(run: RunResult) -> np.ndarray:
    return run.completion_s - run.arrival_s


def test_stalls_lengthen_the_tail_not_the_median() -> None:
    """Poisson arrivals at 200 req/s on the timeline's server (gate 1 ms): stalls of 10 ms
    at factor 3 twice a second (2 % of the time) leave the median as it was and lift the
    p99 by a third or more."""
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.exponential(1 / 200, 6000)).tolist()
    on = _latency(host_timeline(arrivals, _stalled(2.0, 1e-2, 3.0)))
    off = _latency(host_timeline(arrivals, _stalled(2.0, 1e-2, 3.0), host_stalls=False))
    assert np.median(on) / np.median(off) == pytest.approx(1.0, abs=0.02)
    assert np.quantile(on, 0.99) / np.quantile(off, 0.99) > 1.3
