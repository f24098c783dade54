"""How much a prediction moves when every measured cost is off by the same factor.

A shared host does not run at one speed: the same request chain measured a
minute apart on this machine's 2 cores differs by 10-20 %
(``benchmarks/README.md``). Where a prediction is elastic (at B = 1 the
latency is a chain of host steps that contend with each other), a few percent
of host speed move p50 by more than the check's tolerance, and a miss says
nothing about the model. ``sim check --sensitivity P`` therefore replays each
B again with every measured duration ×(1 − P/100) and ×(1 + P/100): the band
of predictions a host faster or slower by P % would give.

What is scaled: the expert latency table (median, p10, p90), the gate and
combine costs and batch overhead of the config, and the shared-host model's
costs (dispatch, collect, hand-offs, loop overheads, arrival penalties, the
time contention adds). Not scaled: the contention rates, the duty-speed curve
and the spells' spread, which are ratios, the spells' windows (the same spells
at the same instants, so that the band shows the costs and not a redraw), the
machine state's path, the run's wake-up tails (``--host-wakes gates|run``) and the
scheduler's tick, which are the machine's and not costs, and the arrivals, which are the
workload's own.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.config import SimConfig
from sim.errors import CheckError
from sim.host_terms import HostTerms
from sim.service import ServiceTable

__all__ = ["parse_sensitivity", "scale_costs"]


def parse_sensitivity(percent: float) -> float:
    """The factor offset of ``--sensitivity PERCENT`` (5 -> 0.05); in (0, 100)."""
    if not 0.0 < percent < 100.0:
        raise CheckError(f"--sensitivity must be a percent in (0, 100), got {percent:g}")
    return percent / 100.0


def _scale_host(host: HostTerms, factor: float) -> HostTerms:
    def times(curve: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(factor * x for x in curve)

    return replace(
        host,
        dispatch_s=np.asarray(host.dispatch_s) * factor,
        collect_s=host.collect_s * factor,
        handoff_gate_s=times(host.handoff_gate_s),
        handoff_worker_s=times(host.handoff_worker_s),
        wake_handoff_s=times(host.wake_handoff_s),
        gate_wake_handoff_s=times(host.gate_wake_handoff_s),
        busy_handoff_s=tuple(times(h) for h in host.busy_handoff_s),
        wake_cost_s=times(host.wake_cost_s),
        wake_gather_cost_s=times(host.wake_gather_cost_s),
        gate_cold_cost_s=times(host.gate_cold_cost_s),
        gate_overhead_s=host.gate_overhead_s * factor,
        gate_stamped_overhead_s=host.gate_stamped_overhead_s * factor,
        batch_overhead_s=host.batch_overhead_s * factor,
        completion_overhead_s=host.completion_overhead_s * factor,
        arrival_penalty_gate_s=host.arrival_penalty_gate_s * factor,
        arrival_penalty_worker_s=host.arrival_penalty_worker_s * factor,
        arrival_penalty_company_s=times(host.arrival_penalty_company_s),
        gate_contention_s=None
        if host.gate_contention_s is None
        else host.gate_contention_s * factor,
        worker_contention_s=times(host.worker_contention_s),
    )


def scale_costs(
    config: SimConfig, table: ServiceTable, factor: float
) -> tuple[SimConfig, ServiceTable]:
    """``config`` and ``table`` with every measured duration ×``factor`` (module docstring)."""
    if not factor > 0:
        raise CheckError(f"cost factor must be > 0, got {factor}")

    def arr(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a * factor

    scaled = ServiceTable(
        table.median * factor,
        arr(table.p10),
        arr(table.p90),
        None if table.host is None else _scale_host(table.host, factor),
    )
    cfg = replace(
        config,
        gate_latency_s=config.gate_latency_s * factor,
        combine_latency_s=config.combine_latency_s * factor,
        batch_overhead_s=config.batch_overhead_s * factor,
    )
    return cfg, scaled
