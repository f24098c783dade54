"""The fast SimPy model against the plain one, and the invariants of system-model §1–§6."""

from __future__ import annotations

import numpy as np
import pytest

from sim.config import GateSpec, ServiceModel, SimConfig, parse_gate
from sim.engine import gate_times, simulate
from sim.errors import SimConfigError
from sim.naive import simulate_naive
from sim.queues import DRAINED, EXACT, FLUSHED
from sim.records import RunResult
from sim.service import ServiceTable, draw_service
from sim.workload import make_workload, popularity

from .conftest import sim_fixture_profile_frame

CASES = [
    dict(batch_size=4),
    dict(batch_size=3, max_wait_s=0.003),
    dict(batch_size=5, n_devices=2, gate_latency_s=2e-4, combine_latency_s=1e-4),
    dict(batch_size=2, n_devices=3, max_wait_s=0.002, combine_latency_s=5e-5, skew=1.2),
    dict(batch_size=8, gate=GateSpec("budget", k_probs=(0.2, 0.5, 0.3)), combine_latency_s=1e-4),
    dict(batch_size=6, gate=GateSpec("topp", p=0.6), n_devices=2, max_wait_s=0.01),
    dict(batch_size=1, n_devices=4, combine_latency_s=2e-4),
]


def _table(n_experts: int = 6, max_batch: int = 16, seed: int = 0) -> ServiceTable:
    """Distinct per-expert latencies (no accidental ties), growing with batch size."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5e-3, 1.5e-3, size=(n_experts, 1))
    return ServiceTable.constant(base + 1e-4 * np.arange(1, max_batch + 1)[None, :])


def _run(engine, **kw: object) -> RunResult:
    cfg = SimConfig(n_experts=6, rate_rps=1500.0, n_requests=1500, seed=7, **kw)
    return engine(cfg, _table(), make_workload(cfg))


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_fast_engine_equals_plain_simpy_request_for_request(case: dict) -> None:
    fast, plain = _run(simulate, **case), _run(simulate_naive, **case)
    assert np.allclose(fast.gate_done_s, plain.gate_done_s, rtol=0, atol=1e-12)
    assert np.allclose(fast.completion_s, plain.completion_s, rtol=0, atol=1e-9)

    def key(r: RunResult) -> list[tuple[int, int, float]]:
        start = np.round(r.batch_start_s, 9).tolist()
        return sorted(zip(r.batch_expert.tolist(), r.batch_kind.tolist(), start, strict=True))

    assert key(fast) == key(plain)


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_invariants_no_request_lost_and_completion_at_last_expert(case: dict) -> None:
    r = _run(simulate, **case)
    cfg = r.config
    n = r.n_requests
    # Every (request, expert) pair is in exactly one batch; every request completes.
    assert len(r.item_request) == int(r.k.sum())
    pairs = set(zip(r.item_request.tolist(), r.item_expert.tolist(), strict=True))
    assert len(pairs) == len(r.item_request)
    assert np.bincount(r.item_request, minlength=n).tolist() == r.k.tolist()
    assert (r.completion_s > r.arrival_s).all() and np.isfinite(r.completion_s).all()
    # §3: exact batches hold B, partial ones fewer; sizes add up.
    assert (r.batch_size[r.batch_kind == EXACT] == cfg.batch_size).all()
    assert (r.batch_size[r.batch_kind != EXACT] < cfg.batch_size).all()
    assert np.bincount(r.item_batch).tolist() == r.batch_size.tolist()
    if cfg.max_wait_s is None:
        assert not (r.batch_kind == FLUSHED).any()
    # §3: drained batches form at the last gate-done instant; nothing waits past max_wait.
    assert (r.batch_formed_s[r.batch_kind == DRAINED] == r.gate_done_s.max()).all()
    enq = r.gate_done_s[r.item_request]
    formed = r.batch_formed_s[r.item_batch]
    assert (formed >= enq).all()
    if cfg.max_wait_s is not None:
        assert (formed - enq <= cfg.max_wait_s + 1e-12).all()
    # §4: a device runs one batch at a time, never before the batch is formed.
    assert (r.batch_start_s >= r.batch_formed_s).all()
    for d in range(cfg.n_devices):
        on = np.argsort(r.batch_start_s[r.batch_device == d])
        s, e = r.batch_start_s[r.batch_device == d][on], r.batch_end_s[r.batch_device == d][on]
        assert (s[1:] >= e[:-1] - 1e-12).all()
    # §5: completion = end of the last answering batch + the combines queued behind it.
    last_end = np.zeros(n)
    np.maximum.at(last_end, r.item_request, r.batch_end_s[r.item_batch])
    assert np.allclose(r.batch_end_s[r.combine_batch], last_end, rtol=0, atol=1e-12)
    c = cfg.combine_latency_s
    rank = np.round((r.completion_s - last_end) / c).astype(int) if c else np.zeros(n, int)
    assert (rank >= 1).all() if c else np.array_equal(r.completion_s, last_end)
    if c:
        assert np.allclose(r.completion_s, last_end + rank * c, atol=1e-9)


def test_same_seed_same_numbers_other_seed_other_numbers() -> None:
    case = CASES[3]
    a, b = _run(simulate, **case), _run(simulate, **case)
    assert np.array_equal(a.completion_s, b.completion_s)
    assert np.array_equal(a.batch_start_s, b.batch_start_s)
    cfg = SimConfig(n_experts=6, rate_rps=1500.0, n_requests=1500, seed=8, **case)
    other = simulate(cfg, _table(), make_workload(cfg))
    assert not np.array_equal(a.arrival_s, other.arrival_s)


def test_gate_is_fcfs_lindley() -> None:
    start, done = gate_times(np.array([0.0, 0.1, 0.15, 1.0]), 0.2)
    assert start.tolist() == pytest.approx([0.0, 0.2, 0.4, 1.0])
    assert done.tolist() == pytest.approx([0.2, 0.4, 0.6, 1.2])


def test_workload_poisson_rate_and_first_arrival_after_a_gap() -> None:
    cfg = SimConfig(rate_rps=500.0, n_requests=50_000, seed=1)
    w = make_workload(cfg)
    gaps = np.diff(w.arrival_s, prepend=0.0)
    assert w.arrival_s[0] > 0 and (gaps > 0).all()
    # Mean gap 1/λ within 4 standard errors (exponential: sd = mean).
    assert abs(gaps.mean() - 1 / 500) < 4 * (1 / 500) / np.sqrt(len(gaps))


@pytest.mark.parametrize("skew", [0.0, 1.0])
def test_topk_routing_distinct_sorted_and_popularity(skew: float) -> None:
    cfg = SimConfig(n_experts=8, gate=GateSpec(k=1), skew=skew, n_requests=40_000, seed=2)
    w = make_workload(cfg)
    assert (w.k == 1).all()
    freq = np.bincount(w.experts[:, 0], minlength=8) / len(w.k)
    expected = popularity(8, skew)  # k = 1: exactly the popularity weights
    sd = np.sqrt(expected * (1 - expected) / len(w.k))
    assert (np.abs(freq - expected) < 4.5 * sd).all()
    w2 = make_workload(cfg.with_(gate=GateSpec(k=3)))
    assert (np.diff(w2.experts, axis=1) > 0).all()  # distinct, increasing index


def test_budget_k_distribution_and_topp_monotone_in_p() -> None:
    probs = (0.1, 0.6, 0.3)
    cfg = SimConfig(n_experts=8, gate=GateSpec("budget", k_probs=probs), n_requests=30_000)
    w = make_workload(cfg)
    freq = np.bincount(w.k, minlength=4)[1:] / len(w.k)
    assert np.allclose(freq, probs, atol=0.015)
    assert ((w.experts >= 0).sum(axis=1) == w.k).all()
    means = [
        make_workload(cfg.with_(gate=parse_gate(f"topp:{p}"))).k.mean() for p in (0.3, 0.6, 0.9)
    ]
    assert 1 <= means[0] < means[1] < means[2] <= 8


def test_spread_service_hits_profile_p10_p90() -> None:
    from traces.profile import profile_from_frame

    table = ServiceTable.from_profile(profile_from_frame(sim_fixture_profile_frame()), 8, 16)
    rng = np.random.default_rng(0)
    e, b = np.full(100_000, 3), np.full(100_000, 16)
    draws = draw_service(table, e, b, ServiceModel.SPREAD, rng)
    q10, q50, q90 = np.percentile(draws, [10, 50, 90])
    assert q50 == pytest.approx(table.median[3, 16], rel=0.01)
    assert q10 == pytest.approx(table.p10[3, 16], rel=0.01)
    assert q90 == pytest.approx(table.p90[3, 16], rel=0.01)


def test_profile_interpolates_between_measured_sizes() -> None:
    from traces.profile import profile_from_frame

    table = ServiceTable.from_profile(profile_from_frame(sim_fixture_profile_frame()), 8, 64)
    # The fixture is linear in b, so interpolation at unmeasured b is exact.
    assert table.median[5, 24] == pytest.approx((50 + 15) * 1e-6 + 6e-6 * 24)


@pytest.mark.parametrize(
    "kw",
    [
        dict(batch_size=0),
        dict(rate_rps=-5.0),
        dict(rate_rps=0.0),
        dict(n_experts=2, gate=GateSpec(k=3)),
        dict(n_devices=2, placement=(0, 2)),
        dict(max_wait_s=0.0),
        dict(combine_latency_s=-1.0),
        dict(n_requests=10, warmup=10),
    ],
)
def test_bad_configs_raise_semantic_error(kw: dict) -> None:
    with pytest.raises(SimConfigError):
        SimConfig(**kw)


def test_config_json_round_trip() -> None:
    cfg = SimConfig(
        batch_size=4,
        gate=parse_gate("budget:0.5,0.5"),
        placement=(0, 0, 1, 1, 0, 0, 1, 1),
        n_devices=2,
        max_wait_s=0.01,
        service=ServiceModel.SPREAD,
    )
    assert SimConfig.from_json(cfg.to_json()) == cfg


def test_overload_guard_stops_arrivals_at_max_backlog() -> None:
    cfg = SimConfig(n_experts=6, rate_rps=4000.0, n_requests=3000, max_backlog=200, seed=3)
    work = make_workload(cfg)
    full = simulate(cfg.with_(max_backlog=None), _table(), work)
    # Brute force: walk the arrivals, counting completions strictly before each one.
    stop = None
    for i, a in enumerate(full.arrival_s.tolist()):
        if i - int((full.completion_s < a).sum()) >= 200:
            stop = i
            break
    assert stop is not None and 200 <= stop < 3000
    r = simulate(cfg, _table(), work)
    assert r.stopped_early and r.n_requests == stop
    # Nothing before the stop instant depends on later requests.
    early = r.completion_s < full.arrival_s[stop]
    assert early.any()
    assert np.array_equal(r.completion_s[early], full.completion_s[:stop][early])
    light = simulate(cfg.with_(rate_rps=200.0), _table(), make_workload(cfg.with_(rate_rps=200.0)))
    assert not light.stopped_early and light.n_requests == 3000
