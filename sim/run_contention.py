"""What company cost the steps of one B of a measured run, as factors on the profile's
contention: the gate's, the expert call's and the combine's, each found by replaying until
the replay's steps in company cost what the run's did (:mod:`traces.company_costs`).

Why: ``hw profile`` measures each thread's cost in company with the other thread looping
beside it, and the model splits the worker's over its dispatch and its expert call by their
cost. Served, an expert call (a torch call that lets the interpreter lock go) barely slowed
beside a gate, and a combine little, where the replays priced both at half again to nearly
twice their alone length; and the profiles' gates in company ran slower than some blocks'
runs' and faster than others' (``benchmarks/README.md``, "Fidelity, session 29"). The
run's speed, expert calls and combines alone are already its own (:mod:`sim.run_speed`);
this takes the price of company from it too. The dispatch job's share stays the profile's
(no step in the records is the dispatch alone).

How: from factors of 1, each replay reads the three costs and multiplies each factor by
the run's over the replay's: for the gate the median wall in company less the run's median
alone gate, for the worker's steps their excess (a floor of :data:`FLOOR_S` keeps a run
whose steps beside a gate cost nothing from dividing by zero), until all are within
:data:`GATE_TOLERANCE` (relative) or :data:`EXCESS_TOLERANCE_S`, or after
:data:`MAX_STEPS` replays. A cost the run or its replay cannot read keeps its factor at 1;
a factor whose replayed cost moved against its last step is held where it was before it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np
import polars as pl

from sim.config import SimConfig
from sim.engine import simulate
from sim.output import records_of
from sim.service import ServiceTable
from sim.workload import Workload
from traces.alone_gates import alone_gates_s
from traces.company_costs import combine_excess_s, expert_call_excess_s, gates_in_company_s

__all__ = ["RunContention", "at_contention", "run_contention"]

MIN_GATES = 30  # fewer gates in company in the run or the replay: the gate's factor stays 1
MAX_STEPS = 6
GATE_TOLERANCE = 0.02
EXCESS_TOLERANCE_S = 3e-6
FLOOR_S = 1e-6
STEP_RANGE = (0.2, 2.0)  # one step moves a factor by at most this much


class RunContention(NamedTuple):
    """Factors on the profile's contention of the gate, the expert call and the combine
    (1: as profiled)."""

    gate: float
    expert: float
    combine: float


def at_contention(table: ServiceTable, factors: RunContention) -> ServiceTable:
    """``table`` with its host's contention of the gate, the expert call and the combine
    times ``factors`` (the dispatch job's as profiled)."""
    host = table.host
    if host is None or not host.worker_contention_s:
        return table
    dispatch, expert, combine = host.worker_contention_s
    gate = host.gate_contention_s
    return replace(
        table,
        host=replace(
            host,
            gate_contention_s=None if gate is None else gate * factors.gate,
            worker_contention_s=(dispatch, expert * factors.expert, combine * factors.combine),
        ),
    )


def _step(target: float | None, got: float | None) -> float:
    if target is None or got is None:
        return 1.0
    return float(np.clip(max(target, FLOOR_S) / max(got, FLOOR_S), *STEP_RANGE))


def _gate_cost(rows: pl.DataFrame, alone_s: float) -> float | None:
    walls = gates_in_company_s(rows)
    return None if len(walls) < MIN_GATES else float(np.median(walls)) - alone_s


def run_contention(
    rows: pl.DataFrame, sim_cfg: SimConfig, table: ServiceTable, work: Workload
) -> RunContention | None:
    """The factors at which the replay of one B's measured ``rows`` (``sim_cfg``, ``table``
    at the run's speeds, ``work``) pays what the run paid for company (module docstring);
    None without host contention terms or where the run has none of the three costs."""
    if table.host is None or not table.host.worker_contention_s:
        return None
    alone = alone_gates_s(rows)
    alone_s = float(np.median(alone)) if len(alone) else None
    targets = (
        None if alone_s is None else _gate_cost(rows, alone_s),
        expert_call_excess_s(rows),
        combine_excess_s(rows),
    )
    if all(t is None for t in targets):
        return None
    factors = RunContention(1.0, 1.0, 1.0)
    held = [False, False, False]
    before: tuple[RunContention, tuple[float | None, ...]] | None = None
    for _ in range(MAX_STEPS):
        replayed = records_of(simulate(sim_cfg, at_contention(table, factors), work))
        got = (
            None if alone_s is None else _gate_cost(replayed, alone_s),
            expert_call_excess_s(replayed),
            combine_excess_s(replayed),
        )
        if before is not None:  # a factor whose cost went against its step is held before it
            back = _against(before[0], factors, before[1], got)
            held = [h or a for h, a in zip(held, back, strict=True)]
            kept = zip(before[0], factors, back, strict=True)
            factors = RunContention(*(b if a else f for b, f, a in kept))
        if _close(targets, got, held):
            break
        steps = (
            f if h else f * _step(t, g)
            for f, t, g, h in zip(factors, targets, got, held, strict=True)
        )
        before = (factors, got)
        factors = RunContention(*steps)
    return factors


def _against(
    was: RunContention,
    now: RunContention,
    got_was: tuple[float | None, ...],
    got_now: tuple[float | None, ...],
) -> list[bool]:
    """Per factor, whether its replayed cost moved against its last step (the factor up and
    the cost down, or the reverse). Past some length a step seldom lies wholly beside a
    gate, so its measured cost stops following its contention and can fall as it rises
    (block 41's `--B 1` run 3 at 500 req/s, one profile: the combine's contention doubled
    five times while its cost read 7.7, 5.3, 7.8, -0.1, 1.0 and -0.7 µs against the run's
    15.4, and B = 1's p99 came out +132 %): the search must not follow it there."""
    return [
        a is not None and b is not None and (n - w) * (b - a) < 0.0
        for w, n, a, b in zip(was, now, got_was, got_now, strict=True)
    ]


def _close(
    targets: tuple[float | None, ...], got: tuple[float | None, ...], held: list[bool]
) -> bool:
    """Every cost not held within its tolerance of the run's (or unreadable)."""
    gate_t, gate_g = targets[0], got[0]
    off = GATE_TOLERANCE * max(abs(gate_t or 0.0), FLOOR_S)
    if not held[0] and gate_t is not None and gate_g is not None and abs(gate_g - gate_t) > off:
        return False
    return all(
        h or t is None or g is None or abs(g - t) <= EXCESS_TOLERANCE_S
        for t, g, h in zip(targets[1:], got[1:], held[1:], strict=True)
    )
