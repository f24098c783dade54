"""Arrivals and routing of a run, drawn once in numpy (system-model §1 and §2).

Every random draw of a run happens here, up front and vectorized, from
independent streams spawned off the run's seed, so the SimPy model's hot loop
draws nothing and the same seed gives the same numbers in every engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config import GatePolicy, SimConfig
from sim.errors import WorkloadError
from traces.routing import RoutingTrace

__all__ = ["Workload", "make_workload", "popularity", "streams"]


def streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators per purpose, so adding a draw never shifts another."""
    # append only
    names = (
        "arrivals",
        "k",
        "experts",
        "service",
        "host",
        "lock",
        "state",
        "preempt",
        "handoff",
        "gate_spread",
        "join",
        "stall",
        "tick",
        "wake_tail",
    )
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.default_rng(s) for n, s in zip(names, children, strict=True)}


def popularity(n_experts: int, skew: float) -> np.ndarray:
    """Expert popularity weights ∝ (e + 1)^(−skew), normalized (system-model §2)."""
    w = np.arange(1, n_experts + 1, dtype=float) ** (-skew)
    return w / w.sum()


@dataclass(frozen=True, eq=False)
class Workload:
    """Per request: arrival time and chosen experts.

    ``experts`` is ``[N, max k]``, each row's experts in increasing index (the
    enqueue order of §3), unused slots ``-1``.
    """

    arrival_s: np.ndarray
    experts: np.ndarray
    k: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if self.experts.shape[0] != n or self.k.shape != (n,):
            raise WorkloadError("workload arrays disagree in length")

    @property
    def n_requests(self) -> int:
        return len(self.arrival_s)

    def head(self, n: int) -> Workload:
        """The first ``n`` requests (arrivals stopped before request n)."""
        if n < 1:
            raise WorkloadError("a run needs at least one request")
        return Workload(self.arrival_s[:n], self.experts[:n], self.k[:n])

    @classmethod
    def from_lists(cls, arrival_s: list[float], experts: list[list[int]]) -> Workload:
        """Hand-built workload (tests, tiny scenarios): arrivals and expert lists."""
        width = max((len(e) for e in experts), default=1)
        pad = np.full((len(experts), width), -1, dtype=np.int64)
        for i, row in enumerate(experts):
            if len(set(row)) != len(row) or not row:
                raise WorkloadError(f"request {i}: experts must be distinct and non-empty")
            pad[i, : len(row)] = sorted(row)
        k = np.array([len(e) for e in experts], dtype=np.int64)
        return cls(np.asarray(arrival_s, dtype=float), pad, k)


def _poisson(rate_rps: float, n: int, rng: np.random.Generator) -> np.ndarray:
    # cumsum adds left to right, exactly like a SimPy source doing now + gap.
    return np.cumsum(rng.exponential(1.0 / rate_rps, size=n))


def _top_by_keys(keys: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row, the ``k[i]`` columns of largest key, in increasing index; -1 padded."""
    m = keys.shape[1]
    kmax = int(k.max())
    if kmax == m and (k == m).all():
        return np.broadcast_to(np.arange(m, dtype=np.int64), keys.shape).copy()
    if (k == kmax).all():
        return np.sort(np.argpartition(-keys, kmax - 1, axis=1)[:, :kmax], axis=1)
    order = np.argsort(-keys, axis=1)[:, :kmax]
    used = np.arange(kmax)[None, :] < k[:, None]
    chosen = np.sort(np.where(used, order, m), axis=1)
    return np.where(chosen == m, -1, chosen).astype(np.int64)


def _expert_keys(pop: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Keys whose top k is a draw of k distinct experts without replacement ∝ popularity.

    Efraimidis–Spirakis: key = log(U) / w (the largest k keys); with equal
    weights that is the order of U itself, which saves the logarithm.
    """
    u = rng.random((n, len(pop)))
    if np.all(pop == pop[0]):
        return u
    return np.log(u) / pop[None, :]


def _draw_k(config: SimConfig, n: int, pop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gate = config.gate
    if gate.policy is GatePolicy.TOPK:
        return np.full(n, gate.k, dtype=np.int64)
    if gate.policy is GatePolicy.BUDGET:
        probs = np.asarray(gate.k_probs, dtype=float)
        return rng.choice(np.arange(1, len(probs) + 1), size=n, p=probs / probs.sum())
    # topp: per-request gate probabilities softmax(log popularity + Gumbel noise);
    # k is the smallest number of the largest ones whose sum reaches p.
    logits = np.log(pop)[None, :] + rng.gumbel(size=(n, len(pop)))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    csum = np.cumsum(-np.sort(-probs, axis=1), axis=1)
    k = (csum < gate.p - 1e-12).sum(axis=1) + 1
    return np.minimum(k, len(pop)).astype(np.int64)


def make_workload(config: SimConfig, trace: RoutingTrace | None = None) -> Workload:
    """Draw (or replay) arrivals and routing for ``config`` (system-model §1–§2)."""
    rng = streams(config.seed)
    n, m = config.n_requests, config.n_experts
    if config.gate.policy is GatePolicy.TRACE:
        if trace is None:
            raise WorkloadError("gate policy 'trace' needs the routing trace")
        return _from_trace(config, trace, rng["arrivals"])
    pop = popularity(m, config.skew)
    k = _draw_k(config, n, pop, rng["k"])
    keys = _expert_keys(pop, n, rng["experts"])
    return Workload(_poisson(config.rate_rps, n, rng["arrivals"]), _top_by_keys(keys, k), k)


def _from_trace(config: SimConfig, trace: RoutingTrace, rng: np.random.Generator) -> Workload:
    rows = len(trace.table)
    if rows == 0:
        raise WorkloadError("the routing trace has no samples")
    experts, _ = trace.padded()
    top = int(experts.max())
    if top >= config.n_experts:
        raise WorkloadError(
            f"routing trace uses expert {top} but the model has {config.n_experts} experts "
            f"(0..{config.n_experts - 1})"
        )
    n = config.n_requests
    idx = np.arange(n) % rows  # the trace is cycled when more requests are asked for
    experts = np.sort(np.where(experts < 0, np.iinfo(np.int64).max, experts), axis=1)[idx]
    experts = np.where(experts == np.iinfo(np.int64).max, -1, experts)
    k = trace.k[idx].astype(np.int64)
    times = trace.table["arrival_time_s"]
    if times.null_count() == 0:
        t = np.sort(times.to_numpy().astype(float))
        gaps = np.diff(t, prepend=t[0])
        if rows > 1:
            gaps[0] = (t[-1] - t[0]) / (rows - 1)  # gap between repeats of the trace
        arrivals = np.cumsum(gaps[idx]) - gaps[0]
    else:
        arrivals = _poisson(config.rate_rps, n, rng)
    return Workload(arrivals, experts, k)
