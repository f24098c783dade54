"""A hold ends at the scheduler's next tick (``HostTerms.sched_tick_s``, hw profile's
``sched_tick`` row): in the server a worker kept waiting by a gate that took its core
finished nothing in 14 % of the gate's busy spells of 2-3 ms, 2 % of 3-5 ms and none longer,
on a kernel that ticks every 4 ms (blocks 36-37, ``--B 1`` at 500 req/s)."""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import polars as pl
import pytest
import simpy

from sim.errors import SimConfigError
from sim.host import GATE, SharedHost
from sim.host_terms import HostTerms
from sim.machine_state import StatePath
from sim.records import RunResult
from sim.workload import streams
from traces.errors import FormatError
from traces.profile import SCHED_TICK, profile_from_frame, sched_tick_s

from .test_host import host_profile_frame
from .test_host_preempt import preempt_timeline


def _tick_frame(latency_s: float | None, rows: int = 1) -> pl.DataFrame:
    extra = pl.DataFrame(
        [
            {"expert": -1, "batch_size": 1, "latency_s": latency_s, "samples": 1}
            | {"component": SCHED_TICK, "device": "cpu:test"}
        ]
        * rows
    )
    return pl.concat([host_profile_frame(), extra], how="diagonal_relaxed")


def test_the_profiles_tick_is_read_and_none_is_no_bound() -> None:
    terms = HostTerms.from_profile(profile_from_frame(_tick_frame(0.004)), 1)
    assert terms is not None and terms.sched_tick_s == 0.004
    plain = HostTerms.from_profile(profile_from_frame(host_profile_frame()), 1)
    assert plain is not None and plain.sched_tick_s == 0.0
    assert sched_tick_s(host_profile_frame()) is None


@pytest.mark.parametrize(
    ("latency_s", "rows", "needle"),
    [
        (2.0, 1, "sched_tick: needs one row with 0 < latency_s < 1 s"),
        (0.0, 1, "must be positive"),  # the rows' own checks see these first
        (None, 1, "missing values"),
        (0.004, 2, "duplicate rows"),
    ],
)
def test_a_bad_tick_row_is_one_clear_error(latency_s: float | None, rows: int, needle: str) -> None:
    with pytest.raises(FormatError, match=needle):
        HostTerms.from_profile(profile_from_frame(_tick_frame(latency_s, rows)), 1)


@pytest.mark.parametrize("tick_s", [-0.004, 1.0, float("nan")])
def test_hand_built_terms_with_a_bad_tick_are_one_clear_error(tick_s: float) -> None:
    with pytest.raises(SimConfigError, match="scheduler tick"):
        HostTerms(np.zeros(2), sched_tick_s=tick_s)


@pytest.mark.parametrize(
    "path",
    [
        StatePath(0.0, 0.0, (1.0,)),
        StatePath(0.0, float("inf"), (1.0,)),
        StatePath(float("nan"), 0.1, (1.0,)),
        StatePath(0.0, 0.1, (1.0, 0.0)),
        StatePath(0.0, 0.1, (float("nan"),)),
    ],
)
def test_hand_built_terms_with_a_bad_state_path_are_one_clear_error(path: StatePath) -> None:
    with pytest.raises(SimConfigError, match="state path"):
        HostTerms(np.zeros(2), state_path=path)


def test_a_released_host_is_shared_again() -> None:
    """Worker: 1.0 s of work from 0; the gate takes the host whole at 0.2 for 0.5 s of work
    and gives it back at 0.4: from then both share (gate at 0.25, worker at 0.8)."""
    env = simpy.Environment()
    host = SharedHost(env, 0.25, 0.8)
    done: dict[int, float] = {}

    def job(thread: int, start: float, work: float, whole: bool) -> Generator[simpy.Event]:
        yield env.timeout(start)
        yield from host.work(thread, work, None, whole)
        done[thread] = env.now

    env.process(job(0, 0.0, 1.0, False))
    env.process(job(GATE, 0.2, 0.5, True))
    env.timeout(0.4).callbacks.append(lambda _ev: host.release(GATE))
    env.timeout(0.3).callbacks.append(lambda _ev: host.release(0))  # not the holder: nothing
    env.run()
    # the gate has 0.3 left at 0.4, at 0.25; the worker 0.8 left at 0.8: done at 1.4
    assert done[0] == pytest.approx(1.4)
    assert done[GATE] == pytest.approx(1.4 + (0.3 - 1.0 * 0.25))


def _held(tick_s: float) -> RunResult:
    """Request 0 at 0: gate 0-1 ms, its expert call (0.4 ms) from 1 ms. Request 1 arrives at
    1.2 ms and wakes the gate, which takes the host whole; request 2 arrives at 1.5 ms and
    the gate goes straight on to it."""
    return preempt_timeline(1.0, [0.0, 1.2e-3, 1.5e-3], sched_tick_s=tick_s)


def test_a_hold_ends_at_the_schedulers_next_tick() -> None:
    """Without a tick the call waits out both gates (it resumes at 3.2 ms, ends at 3.4).
    With ticks every 0.5 ms (their phase the run's 'tick' draw), it resumes at the first
    tick after 1.2 ms and, sharing at 0.5 with the gate, ends 0.4 ms later; the gate loses
    those 0.2 ms of work to it and ends gate 1 at 2.4 ms whenever the tick fell."""
    untimed = _held(0.0)
    assert untimed.batch_end_s[0] == pytest.approx(3.4e-3)
    tick = 5e-4
    phase = float(streams(0)["tick"].uniform(0.0, tick))
    released = phase + (np.floor((1.2e-3 - phase) / tick) + 1) * tick
    assert 1.2e-3 < released <= 1.7e-3
    ticked = _held(tick)
    assert ticked.batch_end_s[0] == pytest.approx(released + 4e-4)
    assert ticked.gate_done_s.tolist() == pytest.approx([1e-3, 2.4e-3, 3.4e-3])
