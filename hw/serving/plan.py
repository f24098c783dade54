"""The open-loop workload of a serving run: arrival times and (unless the gate decides) routing.

Drawn once per run from the seed, before the server starts, so every B of a
sweep sees the same requests (``docs/system-model.md`` §1, §2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.profiling.errors import ServeError
from traces.serving import ServeConfig

__all__ = ["Workload", "plan_workload", "poisson_arrivals", "policy_routes"]


@dataclass(frozen=True)
class Workload:
    """``arrival_s[i]``: planned arrival of request i (s after the run's start);
    ``experts[i]`` / ``weights[i]``: its routing in increasing expert index, or
    None when the live gate decides."""

    arrival_s: np.ndarray
    experts: list[list[int]] | None
    weights: list[list[float]] | None

    @property
    def n(self) -> int:
        return len(self.arrival_s)


def poisson_arrivals(
    rate_rps: float, seed: int, n: int | None = None, duration_s: float | None = None
) -> np.ndarray:
    """Poisson arrivals at ``rate_rps``: ``n`` of them, or all before ``duration_s``.

    The first arrives after the first gap, not at 0.
    """
    rng = np.random.default_rng([seed, 0])
    if n is not None:
        return np.cumsum(rng.exponential(1.0 / rate_rps, size=n))
    assert duration_s is not None
    out: list[float] = []
    t = 0.0
    while True:
        gaps = np.cumsum(rng.exponential(1.0 / rate_rps, size=1024)) + t
        keep = gaps[gaps < duration_s]
        out.extend(keep.tolist())
        if len(keep) < len(gaps):
            return np.asarray(out)
        t = float(gaps[-1])


def policy_routes(
    n: int, n_experts: int, k: int, skew: float, seed: int
) -> tuple[list[list[int]], list[list[float]]]:
    """``topk`` policy: k distinct experts, P(e) ∝ (e + 1)^-skew, without replacement;
    equal weights 1/k. Experts listed in increasing index."""
    rng = np.random.default_rng([seed, 1])
    pop = (np.arange(n_experts) + 1.0) ** (-skew)
    # Gumbel top-k: the k largest of log(weight) + Gumbel noise are a draw of k distinct
    # experts without replacement, each next one with probability ∝ its weight
    keys = np.log(pop / pop.sum()) + rng.gumbel(size=(n, n_experts))
    top = np.sort(np.argsort(-keys, axis=1, kind="stable")[:, :k], axis=1)
    experts = top.tolist()
    return experts, [[1.0 / k] * k for _ in range(n)]


def _trace_workload(cfg: ServeConfig, path: Path) -> Workload:
    from traces.routing import read_routing

    trace = read_routing(path)
    if trace.n_experts != cfg.n_experts:
        raise ServeError(
            f"{path}: the routing trace has {trace.n_experts} experts, the model {cfg.n_experts}"
        )
    table = trace.table.sort("arrival_index")
    rows = table.height
    if rows == 0:
        raise ServeError(f"{path}: the routing trace has no samples")
    n = cfg.requests if cfg.requests is not None else rows
    idx = np.arange(n) % rows  # a run longer than the trace cycles it (system model §1)
    experts, weights = [], []
    for e, w in zip(table["experts"].to_list(), table["weights"].to_list(), strict=True):
        order = np.argsort(e)
        experts.append([int(e[i]) for i in order])
        weights.append([float(w[i]) for i in order])
    experts = [experts[i] for i in idx]
    weights = [weights[i] for i in idx]
    times = table["arrival_time_s"]
    if cfg.arrival == "trace":
        if times.null_count():
            raise ServeError(f"{path}: the trace has no arrival times; use --rate for Poisson")
        t = np.sort(times.to_numpy().astype(float))
        gaps = np.diff(t, prepend=t[0])
        if rows > 1:
            gaps[0] = (t[-1] - t[0]) / (rows - 1)  # the trace's mean gap between repeats
        arrival = np.cumsum(gaps[idx]) - gaps[0]
    else:
        arrival = poisson_arrivals(cfg.rate_rps or 1.0, cfg.seed, n=n)
    if cfg.duration_s is not None:
        keep = arrival < cfg.duration_s
        arrival, experts = arrival[keep], [x for x, m in zip(experts, keep, strict=True) if m]
        weights = [x for x, m in zip(weights, keep, strict=True) if m]
    return Workload(arrival, experts, weights)


def plan_workload(cfg: ServeConfig) -> Workload:
    """Arrivals and routing of a run, from its config (seeded)."""
    if cfg.routing == "trace" or cfg.arrival == "trace":
        if not cfg.routing_trace:
            raise ServeError("trace routing or arrivals need --routing TRACE")
        wl = _trace_workload(cfg, Path(cfg.routing_trace))
        if cfg.routing != "trace":
            wl = Workload(wl.arrival_s, None, None)
    else:
        rate = cfg.rate_rps
        assert rate is not None  # ServeConfig requires it for Poisson arrivals
        n = cfg.requests if cfg.duration_s is None else None
        if n is None and cfg.duration_s is None:
            raise ServeError("give --requests N or --duration S")
        arrival = poisson_arrivals(rate, cfg.seed, n=n, duration_s=cfg.duration_s)
        if cfg.routing == "policy":
            ex, w = policy_routes(len(arrival), cfg.n_experts, cfg.k, cfg.skew, cfg.seed)
            wl = Workload(arrival, ex, w)
        else:
            wl = Workload(arrival, None, None)
    if wl.n == 0:
        raise ServeError("the run has no requests (duration shorter than the first arrival?)")
    if wl.n <= cfg.warmup:
        raise ServeError(f"--warmup {cfg.warmup} leaves none of the {wl.n} requests to measure")
    return wl
