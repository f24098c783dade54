"""The machine's stalls found in a series of timed calls (``traces.stalls``) and read back from
a profile's ``stall_*`` rows (``traces.profile.stall_terms``): known episodes planted in
noisy calls are found with their spans and factors; call noise, a lone slow call and a slow
block are not stalls."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from traces.errors import FormatError
from traces.profile import STALL_GATE, STALL_SPAN, STALL_WATCH, stall_terms
from traces.stalls import STALL_MIN_RUN, STALL_THRESHOLD, StallEpisodes, find_stalls


def _calls(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A call every 2.5 ms (±0.5) of about 200 µs, log-normal noise of 0.2 (p99 / median
    1.6): no call near 2.5 times its block's median."""
    rng = np.random.default_rng(seed)
    starts = np.cumsum(rng.uniform(2e-3, 3e-3, int(seconds / 2.5e-3)))
    starts = starts[starts < seconds]
    return starts, 2e-4 * np.exp(0.2 * rng.standard_normal(len(starts)))


def test_planted_episodes_are_found_with_their_spans_and_factors() -> None:
    starts, walls = _calls(20.0)
    planted = {1000: (4, 3.0), 3000: (2, 4.0), 6000: (7, 5.0)}  # first call: (calls, factor)
    for first, (n, factor) in planted.items():
        walls[first : first + n] = 2e-4 * factor
    got = find_stalls(starts, walls)
    assert len(got.spans_s) == 3
    found = zip(got.starts_s, got.spans_s, got.factors, planted.items(), strict=True)
    for start, span, factor, (first, (n, f)) in found:
        last = first + n - 1
        assert start == starts[first]  # on the calls' own clock
        assert span == pytest.approx(starts[last] + walls[last] - starts[first])
        assert factor == pytest.approx(f, rel=0.05)  # over the block's median (~2e-4)
    assert got.calls == len(starts) and got.median_s == pytest.approx(2e-4, rel=0.02)
    assert got.watched_s == pytest.approx(starts[-1] + walls[-1] - starts[0])
    assert got.rate_hz == pytest.approx(3 / got.watched_s)


def test_noise_a_lone_slow_call_and_a_slow_block_are_not_stalls() -> None:
    starts, walls = _calls(20.0, seed=1)
    assert len(find_stalls(starts, walls).spans_s) == 0
    walls[500] = walls[900] = walls[902] = 2e-3  # alone, or with a normal call between
    assert len(find_stalls(starts, walls).spans_s) == 0
    assert len(find_stalls(starts, walls, min_run=1).spans_s) == 3
    # a whole 5 s block three times slower moves its own median: no stall in it
    slow_block = walls * np.where((starts >= 5.0) & (starts < 10.0), 3.0, 1.0)
    assert len(find_stalls(starts, slow_block).spans_s) == 0
    assert STALL_THRESHOLD > 2.0 and STALL_MIN_RUN >= 2  # above a gate's own p99 / median


def test_a_bridge_joins_slow_calls_with_a_few_others_between() -> None:
    """Slow calls 100-102, 104-105 and 107 (factor 3; 103 and 106 normal): without a bridge
    one episode of 3 calls and one of 2 (107 alone is none); bridged over one call, one of
    all six, from 100's start to 107's end, its factor theirs."""
    starts, walls = _calls(20.0, seed=2)
    slow = [100, 101, 102, 104, 105, 107]
    walls[slow] = 6e-4
    assert [len(g) for g in _groups(find_stalls(starts, walls), starts)] == [3, 2]
    got = find_stalls(starts, walls, bridge=1)
    assert len(got.spans_s) == 1
    assert got.starts_s[0] == starts[100]
    assert got.spans_s[0] == pytest.approx(starts[107] + walls[107] - starts[100])
    assert got.factors[0] == pytest.approx(3.0, rel=0.05)
    assert len(find_stalls(starts, walls, bridge=1, min_run=7).spans_s) == 0
    with pytest.raises(ValueError, match="bridge"):
        find_stalls(starts, walls, bridge=-1)


def _groups(got: StallEpisodes, starts: np.ndarray) -> list[np.ndarray]:
    """The calls whose start lies inside each episode's span."""
    return [
        np.flatnonzero((starts >= t) & (starts < t + span))
        for t, span in zip(got.starts_s, got.spans_s, strict=True)
    ]


def test_each_call_is_compared_with_its_own_company() -> None:
    """Calls in company (a random quarter, in runs) take 3.5 times as long as those alone:
    against every call's median their runs are stalls, against their own class's none;
    a planted stall (both kinds 3 times slower) is found either way."""
    starts, walls = _calls(20.0, seed=3)
    rng = np.random.default_rng(4)
    company = (np.convolve(rng.random(len(starts)) < 0.1, np.ones(3), "same") > 0).astype(int)
    walls = walls * np.where(company == 1, 3.5, 1.0)
    assert len(find_stalls(starts, walls).spans_s) > 20
    assert len(find_stalls(starts, walls, classes=company).spans_s) == 0
    walls[4000:4005] *= 3.0
    got = find_stalls(starts, walls, classes=company)
    assert len(got.spans_s) == 1 and got.starts_s[0] == starts[4000]
    with pytest.raises(ValueError, match="class"):
        find_stalls(starts, walls, classes=company[:-1])


def _episodes(*eps: tuple[float, float, float]) -> StallEpisodes:
    got = np.array(eps, dtype=float).reshape(-1, 3)
    return StallEpisodes(got[:, 0], got[:, 1], got[:, 2], 10.0, 100, 1e-3)


def test_episodes_grow_over_nearby_steps_and_merge() -> None:
    """(start, span, factor) episodes grown over (start, end) steps within 0.1 s, by hand:
    a chain of steps pulls the first back to 0.45; a far step moves nothing; a step between
    the two makes them meet, one episode at the span-weighted factor."""
    eps = _episodes((1.0, 0.5, 3.0), (3.0, 0.2, 2.0))
    steps = np.array([[0.7, 0.95], [0.45, 0.65], [2.0, 2.1], [5.0, 5.5]])
    got = eps.grown(steps, 0.1)
    assert got.starts_s.tolist() == pytest.approx([0.45, 3.0])
    assert got.spans_s.tolist() == pytest.approx([1.05, 0.2])
    assert got.factors.tolist() == [3.0, 2.0]
    assert (got.watched_s, got.calls, got.median_s) == (10.0, 100, 1e-3)
    joined = eps.grown(np.vstack([steps, [[1.55, 2.0], [2.15, 2.95]]]), 0.1)
    assert joined.starts_s.tolist() == pytest.approx([0.45])
    assert joined.spans_s.tolist() == pytest.approx([3.2 - 0.45])
    # the first grew to [0.45, 2.95], the second back over the same chain to [1.55, 3.2]:
    # overlapping, one episode
    assert joined.factors[0] == pytest.approx((3.0 * 2.5 + 2.0 * 1.65) / 4.15)
    alone = eps.grown(np.zeros((0, 2)), 0.1)
    for name in ("starts_s", "spans_s", "factors"):
        np.testing.assert_allclose(getattr(alone, name), getattr(eps, name))
    assert len(_episodes().grown(steps, 0.1).starts_s) == 0  # growth makes no episode
    with pytest.raises(ValueError, match="gap"):
        eps.grown(steps, -1.0)


@pytest.mark.parametrize("seed", range(5))
def test_grown_episodes_are_the_least_closed_cover(seed: int) -> None:
    """Random episodes and steps: every episode lies in one grown episode; no step within
    the gap of a grown episode reaches out of it (nothing more to grow over); the grown
    episodes are disjoint; and each end is an episode's or a step's own end (no more than
    the steps give)."""
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.uniform(0, 10, 6))
    eps = _episodes(*[(t, rng.uniform(0.05, 0.3), rng.uniform(2, 5)) for t in starts])
    a = rng.uniform(0, 10, 80)
    steps = np.column_stack([a, a + rng.exponential(0.1, 80)])
    gap = 0.05
    got = eps.grown(steps, gap)
    lo, hi = got.starts_s, got.starts_s + got.spans_s
    assert (np.diff(lo) > 0).all() and (lo[1:] > hi[:-1]).all()
    for t, span in zip(eps.starts_s, eps.spans_s, strict=True):
        assert ((lo <= t + 1e-12) & (hi >= t + span - 1e-12)).sum() == 1
    for s, e in steps:
        near = (s <= hi + gap) & (e >= lo - gap)
        assert ((lo[near] <= s + 1e-12) & (hi[near] >= e - 1e-12)).all()
    ends = np.concatenate([eps.starts_s, eps.starts_s + eps.spans_s, steps.ravel()])
    for x in np.concatenate([lo, hi]):
        assert np.isclose(ends, x).any()
    assert np.all((got.factors >= 2) & (got.factors <= 5))


def test_bad_series_are_refused() -> None:
    for starts, walls in (([], []), ([0.0, 1.0], [1e-4]), ([0.0], [0.0]), ([0.0], [-1e-4])):
        with pytest.raises(ValueError, match="stalls"):
            find_stalls(np.array(starts), np.array(walls))
    with pytest.raises(ValueError, match="threshold"):
        find_stalls(np.array([0.0]), np.array([1e-4]), threshold=1.0)


def _rows(watched_s: float = 30.0, episodes: int = 24) -> pl.DataFrame:
    row = {"expert": -1, "batch_size": 1, "device": "cpu:test", "dtype": "float32"}
    return pl.DataFrame(
        [
            {**row, "component": STALL_WATCH, "idle_s": watched_s, "samples": 12000,
             "latency_s": 2e-4, "latency_p10_s": 1.7e-4, "latency_p90_s": 3e-4},
            {**row, "component": STALL_SPAN, "idle_s": None, "samples": episodes,
             "latency_s": 5e-3, "latency_p10_s": 4e-3, "latency_p90_s": 1.5e-2},
            {**row, "component": STALL_GATE, "idle_s": None, "samples": episodes,
             "latency_s": 6e-4, "latency_p10_s": 5.4e-4, "latency_p90_s": 7e-4},
        ]
    )  # fmt: skip


def test_the_rows_give_the_rate_the_spans_and_the_factors() -> None:
    got = stall_terms(_rows())
    assert got is not None
    assert got.rate_hz == pytest.approx(24 / 30.0)
    assert got.span_s == pytest.approx((4e-3, 5e-3, 1.5e-2))
    assert got.factor == pytest.approx((2.7, 3.0, 3.5))  # the stall's gates over the watched
    none_found = stall_terms(_rows().filter(pl.col("component") == STALL_WATCH))
    assert none_found is not None and none_found.rate_hz == 0.0
    assert stall_terms(_rows().filter(pl.col("component") != STALL_WATCH)) is None
    assert stall_terms(pl.DataFrame({"latency_s": [1.0]})) is None


def test_bad_stall_rows_are_one_clear_error() -> None:
    bad = {
        "no span": _rows().filter(pl.col("component") != STALL_SPAN),
        "no seconds": _rows(watched_s=0.0),
        "two watches": pl.concat([_rows(), _rows().head(1)]),
        "no episodes": _rows(episodes=0),
        "faster stall": _rows().with_columns(
            pl.when(pl.col("component") == STALL_GATE)
            .then(pl.col("latency_p10_s") / 10)
            .otherwise(pl.col("latency_p10_s"))
            .alias("latency_p10_s")
        ),
    }
    for name, frame in bad.items():
        with pytest.raises(FormatError, match="stall"):
            stall_terms(frame)
        assert name
