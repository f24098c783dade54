"""The hand-off to a gate woken while a worker is at work (``HostTerms.busy_handoff_*``, hw
profile's ``preempt_handoff`` rows): in the server such a wake-up takes a median 51-58 µs
and a p90 of 270-310 µs against 28-34 µs on an idle host (benchmarks/README.md, session 19)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from sim.errors import SimConfigError
from sim.host_terms import HostTerms
from sim.records import RunResult
from sim.service import two_piece_lognormal
from traces.errors import FormatError
from traces.profile import (
    PREEMPT_HANDOFF,
    busy_handoff_curve,
    preempt_curve,
    profile_from_frame,
)

from .test_host_preempt import host_timeline, preempt_frame

# per level (its mean gap, naming it): the busy hand-off's p10, median, p90
HANDOFFS = {3e-3: (2e-5, 6e-5, 3e-4), 1e-4: (1e-5, 3e-5, 1e-4)}


def handoff_frame(handoffs: dict[float, tuple[float, float, float]] = HANDOFFS) -> pl.DataFrame:
    """The preemption test profile (levels at duty 0.2 and 0.8) plus ``preempt_handoff``
    rows, as hw profile writes them."""
    extra = pl.DataFrame(
        [
            {
                "expert": -1,
                "batch_size": 1,
                "latency_s": med,
                "latency_p10_s": p10,
                "latency_p90_s": p90,
                "samples": 50,
                "component": PREEMPT_HANDOFF,
                "device": "cpu:test",
                "idle_s": idle,
            }
            for idle, (p10, med, p90) in handoffs.items()
        ]
    )
    return pl.concat([preempt_frame(), extra], how="diagonal_relaxed")


def test_the_rows_give_the_busy_handoff_at_each_levels_duty() -> None:
    """Per level its (p10, median, p90) at the level's duty (busy / wall: 0.2 for the 3 ms
    gaps, 0.8 for the 0.1 ms ones), interpolated between, flat outside; without the rows,
    None (the idle host's hand-off holds)."""
    curve = busy_handoff_curve(handoff_frame())
    assert curve == [(pytest.approx(0.2), HANDOFFS[3e-3]), (pytest.approx(0.8), HANDOFFS[1e-4])]
    terms = HostTerms.from_profile(profile_from_frame(handoff_frame()), 1)
    assert terms is not None
    assert terms.busy_handoff_duty == pytest.approx((0.2, 0.8))
    assert terms.gate_busy_handoff(0.5) == pytest.approx((1.5e-5, 4.5e-5, 2e-4))
    assert terms.gate_busy_handoff(0.05) == pytest.approx(HANDOFFS[3e-3])
    assert terms.gate_busy_handoff(1.0) == pytest.approx(HANDOFFS[1e-4])
    older = HostTerms.from_profile(profile_from_frame(preempt_frame()), 1)
    assert older is not None and older.gate_busy_handoff(0.5) is None
    assert busy_handoff_curve(preempt_frame()) == []


def test_a_level_with_no_counted_gate_keeps_its_handoff() -> None:
    """The 10 ms level (duty 1/9) counted no woken gate, so the preemption curve skips it,
    but its hand-off was timed on the arrivals put while a worker step ran: the hand-off
    curve keeps it, and the model reads it below the 0.2 level's."""
    low = (4e-5, 9e-5, 5e-4)
    frame = handoff_frame({**HANDOFFS, 1e-2: low})
    assert [pt.duty for pt in preempt_curve(frame)] == pytest.approx([0.2, 0.8])
    curve = busy_handoff_curve(frame)
    assert [duty for duty, _ in curve] == pytest.approx([1 / 9, 0.2, 0.8])
    assert curve[0][1] == low
    terms = HostTerms.from_profile(profile_from_frame(frame), 1)
    assert terms is not None
    assert terms.busy_handoff_duty == pytest.approx((1 / 9, 0.2, 0.8))
    assert terms.gate_busy_handoff(0.05) == pytest.approx(low)
    assert terms.preempt_duty == pytest.approx((0.2, 0.8))


def test_a_bad_handoff_row_is_one_clear_error() -> None:
    backwards = handoff_frame({3e-3: (7e-5, 6e-5, 3e-4)})  # p10 above the median
    with pytest.raises(FormatError, match="preempt_handoff"):
        HostTerms.from_profile(profile_from_frame(backwards), 1)
    for kw in (
        {"busy_handoff_duty": (0.2,), "busy_handoff_s": ((1e-5, 2e-5, 3e-5),) * 2},
        {"busy_handoff_duty": (0.2,), "busy_handoff_s": ((0.0, 2e-5, 3e-5),)},
        {"busy_handoff_duty": (0.8, 0.2), "busy_handoff_s": ((1e-5, 2e-5, 3e-5),) * 2},
    ):
        with pytest.raises(SimConfigError, match="busy hand-off"):
            HostTerms(np.zeros(2), **kw)


def test_the_draw_hits_the_three_quantiles_with_a_long_right_tail() -> None:
    """200,000 draws: p10, median and p90 within 1 % of the asked values (their sampling
    error is under 0.5 %); the tail beyond p90 is a lognormal's: p99 at median ×
    (p90 / median)^(Z99 / Z90)."""
    rng = np.random.default_rng(3)
    got = np.array([two_piece_lognormal(rng, 2e-5, 6e-5, 3e-4) for _ in range(200_000)])
    assert np.quantile(got, [0.1, 0.5, 0.9]) == pytest.approx([2e-5, 6e-5, 3e-4], rel=0.01)
    assert np.quantile(got, 0.99) == pytest.approx(6e-5 * 5 ** (2.326348 / 1.281552), rel=0.03)
    assert two_piece_lognormal(rng, 4e-5, 4e-5, 4e-5) == pytest.approx(4e-5)


def _timeline(arrivals: list[float], handoff_s: float, preempt: bool = True) -> RunResult:
    """:func:`host_timeline` with no other host costs; the lock shared evenly at 0.5 each; no
    preemption (p = 0); a gate woken while a worker is at work starts ``handoff_s`` after
    its arrival (p10 = median = p90: every draw is that), one woken on an idle host at once
    (no idle hand-off curve)."""
    host = HostTerms(
        np.zeros(2),
        gate_rate=0.5,
        worker_rate=0.5,
        preempt_duty=(0.0, 1.0),
        preempt_p=(0.0, 0.0),
        busy_handoff_duty=(0.5,),
        busy_handoff_s=((handoff_s,) * 3,),
    )
    return host_timeline(arrivals, host, gate_preempt=preempt)


def test_a_gate_woken_while_a_worker_is_at_work_starts_after_the_busy_handoff() -> None:
    """Request 0 at 0: gate 0-1 ms, its expert call from 1 ms. Request 1 arrives at 1.2 ms,
    inside that call: its gate starts 0.1 ms later, at 1.3 ms; the call, 0.3 ms done by
    then, shares at 0.5 and ends at 1.5 ms; the gate has 0.9 ms left then, alone: 2.4 ms.
    Request 2 arrives at 5 ms on an idle host: its gate starts at once. With the
    preemption off, request 1's gate starts at its arrival."""
    arrivals = [0.0, 1.2e-3, 5e-3]
    busy = _timeline(arrivals, 1e-4)
    assert busy.gate_start_s.tolist() == pytest.approx([0.0, 1.3e-3, 5e-3])
    assert busy.batch_end_s[0] == pytest.approx(1.5e-3)
    assert busy.gate_done_s[1] == pytest.approx(2.4e-3)
    off = _timeline(arrivals, 1e-4, preempt=False)
    assert off.gate_start_s.tolist() == pytest.approx([0.0, 1.2e-3, 5e-3])
    assert off.batch_end_s[0] == pytest.approx(1.6e-3)  # shared from 1.2 ms: 0.2 at 0.5
