"""The model against independent results: Lindley recursions and queueing closed forms.

One expert (M = 1, k = 1), no gate or combine cost, Poisson arrivals at λ and
exact batches of B, so batches form every B-th arrival (formation gaps are
Erlang(B, λ)) and wait for one server:

- deterministic service s(B): the per-request latencies equal a Lindley
  recursion over batches computed here from the same arrivals (exactly), and
  the mean agrees with a recursion on independent Erlang gaps (statistically);
  at low load it is the closed form (B − 1)/(2λ) + s(B);
- exponential service (rate μ): the M/M^[B,B]/1 bulk-service queue, whose
  batches see an E_B/M/1 queue. By the GI/M/1 result (Kleinrock, *Queueing
  Systems* vol. 1, §6.4) a batch waits on average σ/(μ(1 − σ)), σ the root in
  (0, 1) of σ = A*(μ − μσ) with A*(s) = (λ/(λ + s))^B. Writing σ = r^B turns
  this into the characteristic equation μ r^{B+1} − (λ + μ) r + λ = 0 of the
  full-batch bulk-service queue (Gross & Harris, *Fundamentals of Queueing
  Theory*, §3.3 "bulk service", root r0 in (0, 1)); the test checks the two
  agree. A request waits (B − 1)/(2λ) on average for its batch to fill (the
  i-th of B waits for B − i more arrivals), so
  E[T] = (B − 1)/(2λ) + σ/(μ(1 − σ)) + 1/μ.

Statistical tolerances use batch means (50 consecutive groups) for the standard
error of a correlated series. The agreement checks run on 200,000 requests by default; the
default run uses 40,000 requests with the same 4.5-sigma rule.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.config import GateSpec, ServiceModel, SimConfig
from sim.engine import simulate
from sim.queues import DRAINED
from sim.records import RunResult
from sim.service import ServiceTable
from sim.workload import make_workload

N_DEFAULT = 200_000
N_SLOW = 1_000_000
SIGMAS = 4.5


def _one_expert(b: int, rate: float, n: int, service: ServiceModel, s_b: float, seed: int):
    table = ServiceTable.constant([[s_b] * b])
    cfg = SimConfig(
        batch_size=b,
        n_experts=1,
        gate=GateSpec(k=1),
        rate_rps=rate,
        n_requests=n,
        service=service,
        seed=seed,
    )
    work = make_workload(cfg)
    return cfg, simulate(cfg, table, work)


def _counted(r: RunResult) -> np.ndarray:
    """Requests after warm-up, minus the final drained partial batch."""
    keep = np.ones(r.n_requests, dtype=bool)
    keep[: r.config.warmup_requests] = False
    drained = r.batch_kind[r.item_batch] == DRAINED
    keep[r.item_request[drained]] = False
    return keep


def _mean_se(x: np.ndarray, groups: int = 50) -> tuple[float, float]:
    """Mean and its batch-means standard error (robust to autocorrelation)."""
    parts = np.array_split(x, groups)
    means = np.array([p.mean() for p in parts])
    return float(x.mean()), float(means.std(ddof=1) / np.sqrt(groups))


def _lindley_batches(formed: np.ndarray, service: np.ndarray) -> np.ndarray:
    """End times of batches at one FIFO server: end_j = max(formed_j, end_{j-1}) + s_j."""
    end = np.empty_like(formed)
    prev = 0.0
    for j, (f, s) in enumerate(zip(formed.tolist(), service.tolist(), strict=True)):
        prev = max(f, prev) + s
        end[j] = prev
    return end


def test_latencies_equal_lindley_recursion_on_same_arrivals() -> None:
    b, rate, s_b = 8, 1000.0, 0.0065  # load s(B)/(B/λ) = 0.81
    _, r = _one_expert(b, rate, 20_000, ServiceModel.MEDIAN, s_b, seed=3)
    a = r.arrival_s
    full = len(a) // b
    formed = a[b - 1 : full * b : b]
    end = _lindley_batches(formed, np.full(full, s_b))
    expected = np.repeat(end, b) - a[: full * b]
    assert np.allclose(r.latency_s[: full * b], expected, rtol=0, atol=1e-9)
    assert expected.mean() > (b - 1) / (2 * rate) + s_b + 1e-4  # queueing really happened


@pytest.mark.parametrize("n", [N_DEFAULT, pytest.param(N_SLOW, marks=pytest.mark.slow)])
def test_mean_latency_matches_independent_erlang_lindley(n: int) -> None:
    b, rate, s_b = 4, 800.0, 0.004  # load 0.8
    _, r = _one_expert(b, rate, n, ServiceModel.MEDIAN, s_b, seed=11)
    lat = r.latency_s[_counted(r)]
    sim_mean, sim_se = _mean_se(lat)
    # Independent: Erlang(B, λ) formation gaps from another generator, same recursion.
    rng = np.random.default_rng(2024)
    nb = n // b
    formed = np.cumsum(rng.gamma(b, 1.0 / rate, size=nb))
    end = _lindley_batches(formed, np.full(nb, s_b))
    batch_wait = (end - s_b - formed)[nb // 10 :]
    ref_mean, ref_se = _mean_se(batch_wait)
    expected = (b - 1) / (2 * rate) + ref_mean + s_b
    assert abs(sim_mean - expected) < SIGMAS * np.hypot(sim_se, ref_se)


@pytest.mark.parametrize("n", [N_DEFAULT, pytest.param(N_SLOW, marks=pytest.mark.slow)])
def test_low_load_mean_latency_closed_form(n: int) -> None:
    b, rate, s_b = 8, 200.0, 0.0005  # batches every 40 ms, served in 0.5 ms
    _, r = _one_expert(b, rate, n, ServiceModel.MEDIAN, s_b, seed=5)
    lat = r.latency_s[_counted(r)]
    mean, se = _mean_se(lat)
    closed = (b - 1) / (2 * rate) + s_b
    assert abs(mean - closed) < SIGMAS * se
    assert se < 0.02 * closed  # the check is tight enough to mean something


def _bulk_root(lam: float, mu: float, b: int) -> float:
    """r0 in (0, 1): μ r^{B+1} − (λ + μ) r + λ = 0 (Gross & Harris, bulk service)."""
    coeffs = np.zeros(b + 2)
    coeffs[0] = mu
    coeffs[-2] = -(lam + mu)
    coeffs[-1] = lam
    roots = np.roots(coeffs)
    real = [z.real for z in roots if abs(z.imag) < 1e-9 and 1e-12 < z.real < 1 - 1e-9]
    assert len(real) == 1
    return real[0]


def _sigma_fixed_point(lam: float, mu: float, b: int) -> float:
    """σ = A*(μ − μσ) with A*(s) = (λ/(λ+s))^B, by iteration from 0 (monotone convergence)."""
    sigma = 0.0
    for _ in range(10_000):
        sigma = (lam / (lam + mu - mu * sigma)) ** b
    return sigma


@pytest.mark.parametrize("b", [1, 4, 16])
def test_bulk_service_root_agrees_with_gi_m_1_fixed_point(b: int) -> None:
    lam, mu = 1000.0, 1000.0 / b / 0.7
    assert _bulk_root(lam, mu, b) ** b == pytest.approx(_sigma_fixed_point(lam, mu, b), rel=1e-9)
    if b == 1:  # M/M/1: σ = ρ
        assert _sigma_fixed_point(lam, mu, 1) == pytest.approx(0.7, rel=1e-9)


@pytest.mark.parametrize(
    ("b", "n"),
    [(4, N_DEFAULT), (16, N_DEFAULT), pytest.param(8, N_SLOW, marks=pytest.mark.slow)],
)
def test_mm_bulk_service_mean_latency_closed_form(b: int, n: int) -> None:
    lam, rho = 1000.0, 0.6
    mu = lam / (b * rho)  # batch service rate: load B/λ per batch vs 1/μ
    _, r = _one_expert(b, lam, n, ServiceModel.EXPONENTIAL, 1.0 / mu, seed=b)
    sigma = _bulk_root(lam, mu, b) ** b
    wq = sigma / (mu * (1 - sigma))
    closed = (b - 1) / (2 * lam) + wq + 1.0 / mu
    mean, se = _mean_se(r.latency_s[_counted(r)])
    assert abs(mean - closed) < SIGMAS * se
    # The batch-level queue wait alone, against σ/(μ(1−σ)).
    full = r.batch_kind != DRAINED
    keep = full & (r.batch_formed_s > r.arrival_s[r.config.warmup_requests])
    bw_mean, bw_se = _mean_se((r.batch_start_s - r.batch_formed_s)[keep])
    assert abs(bw_mean - wq) < SIGMAS * bw_se
