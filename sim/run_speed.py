"""The host's speed during one B of a measured run, taken from the run's own gates that ran
alone (:func:`traces.alone_gates.alone_gates_s`), and the host model at that speed.

Why: the machine's speed moves from minute to minute, and the speed probes that ``hw
serve`` takes just before and after each B do not see the run's own (``sim.host_speed``;
per run, the B = 1 p50 error followed the probe with a correlation of only −0.54 to −0.78,
the run's alone gates with −0.89 to −0.98: ``benchmarks/README.md``, "Fidelity, session
16"). Its alone gates are the run measuring its own host while it ran, on the one step whose
wall time is the host's speed and nothing else.

Which alone gates: all of them where the profile measured the gate's cold start
(``chain_gate`` rows, :attr:`~sim.host_terms.HostTerms.gate_cold_cost_s`): the replay's gate
after an idle gap then pays it as the server's does, and the two medians compare like for
like. Without it (profiles before session 16) only the warm ones, those that started within
:data:`WARM_WITHIN_S` of the host's last work: after a longer idle gap a gate runs 1.6 to 2
times slower (caches and clocks gone cold), which such a model spreads over every step
through its duty speed, and calibrating on every alone gate made its host as slow as a cold
gate everywhere (block 20: B = 1 p50 +9 to +21 %, against −6 to +6 % on the warm ones).
On block 22 the cold start modelled and every alone gate read gave B = 1 p50 −1.5 to +2.0 %
(warm ones, the cold start modelled: −3.3 to +3.2 %; neither: −14 to −2.5 %).

How: the replay is scaled until its own alone gates (read from its records the same way)
have the run's median: the host model's speed at every duty is multiplied by a scale
(:attr:`~sim.host_terms.HostTerms.speed_scale`), found by a few replays (each step
multiplies it by the replay's median ÷ the run's; the duty fixed point damps the response,
so the steps undershoot and converge from one side). The replay stamps its gates where the
server does: around the gate call and the part of the server loop's own Python that lies
inside the server's stamps (``gate_stamped_overhead_s``, measured by ``hw profile``; the
rest of the loop runs after the stamp). Until session 18 the replay read its gates at the
call's share of the whole job, as if none of the loop lay inside the server's stamps; about
10 of its 25 µs do on this box, and that made the replay's host too slow, hiding a model
too fast elsewhere (``benchmarks/README.md``, "Fidelity, session 18"). What this takes from
the run is its host's speed and, the same way from the run's expert calls with no gate
running, a factor on the expert calls, and from its combines with no gate running a factor
on the combine job (:func:`run_speeds`); every other cost still comes from the profile, and
the queueing, the contention and the preemption are the model's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import polars as pl

from sim.config import SimConfig
from sim.engine import simulate
from sim.output import records_of
from sim.service import ServiceTable
from sim.workload import Workload
from traces.alone_gates import alone_combines_s, alone_expert_calls_s, alone_gates_s
from traces.run_wakes import worker_handoffs_s

__all__ = [
    "MIN_ALONE_GATES",
    "WARM_WITHIN_S",
    "RunSpeeds",
    "at_combine_factor",
    "at_expert_factor",
    "at_handoff_factor",
    "at_run_speeds",
    "at_scale",
    "run_combine_factor",
    "run_expert_factor",
    "run_handoff_factor",
    "run_speed_scale",
    "run_speeds",
]

MIN_ALONE_GATES = 50  # fewer alone gates in the run or its replay: no speed read from it
SCALE_TOLERANCE = 0.01  # the replay's alone-gate median within 1 % of the run's
MAX_SCALE_STEPS = 6
# without the gate's cold start in the profile, only the alone gates that started within
# this long of the host's last work: a gate after a longer idle gap runs 1.6-2x slower
WARM_WITHIN_S = 1e-3


def _at_host(table: ServiceTable, **fields: float) -> ServiceTable:
    """``table`` with these fields of its host terms set (no host terms: as it is)."""
    if table.host is None:
        return table
    return replace(table, host=replace(table.host, **fields))


def at_scale(table: ServiceTable, scale: float) -> ServiceTable:
    """``table`` with its host running ``scale`` × its profile's speed at every duty."""
    return _at_host(table, speed_scale=scale)


def run_speed_scale(
    rows: pl.DataFrame,
    sim_cfg: SimConfig,
    table: ServiceTable,
    work: Workload,
    start: float = 1.0,
) -> float | None:
    """The host speed scale at which the replay of one B's measured ``rows`` (``sim_cfg``,
    ``table`` with host terms, ``work``) has the run's median alone gate (all of them where
    the host terms have the gate's cold start, else the warm ones: module docstring); None
    when the run or the replay has fewer than :data:`MIN_ALONE_GATES`. ``start``: the
    search's first guess."""
    if table.host is None:
        return None
    return _scale_search(
        rows, table, start, lambda scale: _replay(sim_cfg, at_scale(table, scale), work)
    )


def _replay(sim_cfg: SimConfig, table: ServiceTable, work: Workload) -> pl.DataFrame:
    """The records of the model's replay of ``work`` with ``table``."""
    return records_of(simulate(sim_cfg, table, work))


def _scale_search(
    rows: pl.DataFrame,
    table: ServiceTable,
    start: float,
    replay_at: Callable[[float], pl.DataFrame],
) -> float | None:
    """:func:`run_speed_scale`'s search, ``replay_at`` giving the replay's records at a
    scale (``table``, with host terms, says which alone gates compare)."""
    assert table.host is not None
    warm = None if table.host.gate_cold_cost_s else WARM_WITHIN_S
    # the replay's gate too slow (its median over the run's > 1): a faster host
    return _search(
        alone_gates_s(rows, warm),
        start,
        lambda scale: alone_gates_s(replay_at(scale), warm),
        lambda replayed, target: replayed / target,
    )


def _search(
    measured: np.ndarray,
    start: float,
    replay: Callable[[float], np.ndarray],
    step: Callable[[float, float], float],
) -> float | None:
    """The multiplier search both readings share: from ``start``, replay at the current value
    (``replay`` gives the replay's alone steps) and multiply the value by ``step(replayed,
    target)`` of their median and the run's ``measured`` median until that is within
    :data:`SCALE_TOLERANCE` of 1; None when the run or a replay has fewer than
    :data:`MIN_ALONE_GATES` such steps."""
    if len(measured) < MIN_ALONE_GATES:
        return None
    target = float(np.median(measured))
    value = start
    for _ in range(MAX_SCALE_STEPS):
        got = replay(value)
        if len(got) < MIN_ALONE_GATES:
            return None
        ratio = step(float(np.median(got)), target)
        if abs(ratio - 1.0) <= SCALE_TOLERANCE:
            break
        value *= ratio
    return value


def at_expert_factor(table: ServiceTable, factor: float) -> ServiceTable:
    """``table`` with every expert call ``factor`` × as long (its median and spread)."""
    return replace(
        table,
        median=table.median * factor,
        p10=None if table.p10 is None else table.p10 * factor,
        p90=None if table.p90 is None else table.p90 * factor,
    )


def run_expert_factor(
    rows: pl.DataFrame,
    sim_cfg: SimConfig,
    table: ServiceTable,
    work: Workload,
    start: float = 1.0,
) -> float | None:
    """The factor on the expert table at which the replay of one B's measured ``rows``
    (``table`` already at the run's speed, :func:`run_speed_scale`) has the run's median
    expert call with no gate running (:func:`traces.alone_gates.alone_expert_calls_s`);
    None without host terms or with fewer than :data:`MIN_ALONE_GATES` such calls in the
    run or the replay; ``start``: the search's first guess.

    Why: the gate's speed alone set every thread's, and the worker's calls ran slower
    against their profile than the gate did (the replay's median alone call 0.85 ± 0.12 of
    the run's over block 27's runs, ``benchmarks/README.md``, "Fidelity, session 18"). The
    worker's own alone calls are its measure of its speed, as the alone gates are the
    gate's."""
    return _worker_factor(rows, sim_cfg, table, work, start, alone_expert_calls_s, at_expert_factor)


def _worker_factor(
    rows: pl.DataFrame,
    sim_cfg: SimConfig,
    table: ServiceTable,
    work: Workload,
    start: float,
    read: Callable[[pl.DataFrame], np.ndarray],
    at: Callable[[ServiceTable, float], ServiceTable],
) -> float | None:
    """The factor ``at`` puts on a worker's job at which the replay's steps ``read`` from
    its records have the run's median (None without host terms or with too few steps)."""
    if table.host is None:
        return None
    return _factor_search(
        rows, start, read, lambda factor: _replay(sim_cfg, at(table, factor), work)
    )


def _factor_search(
    rows: pl.DataFrame,
    start: float,
    read: Callable[[pl.DataFrame], np.ndarray],
    replay_at: Callable[[float], pl.DataFrame],
) -> float | None:
    """:func:`_worker_factor`'s search, ``replay_at`` giving the replay's records at a factor."""
    # the replay's step too short (the run's median over its > 1): a longer job
    return _search(
        read(rows),
        start,
        lambda factor: read(replay_at(factor)),
        lambda replayed, target: target / replayed,
    )


def at_combine_factor(table: ServiceTable, factor: float) -> ServiceTable:
    """``table`` with the worker's combine job ``factor`` × as long (host terms only)."""
    return _at_host(table, combine_factor=factor)


def run_combine_factor(
    rows: pl.DataFrame,
    sim_cfg: SimConfig,
    table: ServiceTable,
    work: Workload,
    start: float = 1.0,
) -> float | None:
    """The factor on the combine job at which the replay of one B's measured ``rows``
    (``table`` already at the run's speed and expert factor) has the run's median combine
    with no gate running (:func:`traces.alone_gates.alone_combines_s`); None without host
    terms or with fewer than :data:`MIN_ALONE_GATES` such combines in the run or the replay;
    ``start``: the search's first guess.

    Why: the worker's combine is Python on the host, like the gate, yet it ran slower
    against its profile than the run's alone gates give, and not by the expert calls'
    factor either (block 34: the server's combine 63-91 µs, the replay's 50-75;
    ``benchmarks/README.md``, "Fidelity, session 22"). At B = 1 every request waits for its
    combine, so a short one is a short p50."""
    return _worker_factor(rows, sim_cfg, table, work, start, alone_combines_s, at_combine_factor)


def at_handoff_factor(table: ServiceTable, factor: float) -> ServiceTable:
    """``table`` with the worker's wake (its hand-off and the gather's cold start after a
    wait) ``factor`` × as long (host terms only)."""
    return _at_host(table, handoff_factor=factor)


def run_handoff_factor(
    rows: pl.DataFrame,
    sim_cfg: SimConfig,
    table: ServiceTable,
    work: Workload,
    start: float = 1.0,
) -> float | None:
    """The factor on the worker's wake (its hand-off and the gather's cold start after a
    wait) at which the replay of one B's measured ``rows`` (``table`` at the run's other
    speeds) has the run's median way from a gate to the batch it formed, alone
    (:func:`traces.run_wakes.worker_handoffs_s`); None without host terms or with fewer
    than :data:`MIN_ALONE_GATES` such batches in the run or the replay; ``start``: the
    search's first guess.

    Why: the worker's wake is the profile's hand-off, wall time measured on a quiet host;
    on blocks 41 and 42 the replay's way from the gate to the first batch was 16 and 43 µs
    longer than the run's at the median (127 / 111 and 185 / 142 µs), where everything after
    the batch's start was within 6 % (``benchmarks/README.md``, "Fidelity, session 31"). The
    worker's own wake-ups are its measure of that way, as its alone calls are of its calls.
    The dispatch keeps the gates' speed: with the factor on it too, the replay's two expert
    calls with the dispatch between them ran 3.5 µs short on block 41."""
    return _worker_factor(rows, sim_cfg, table, work, start, worker_handoffs_s, at_handoff_factor)


class RunSpeeds(NamedTuple):
    """What :func:`run_speeds` reads from one B of a run (None: not read; as profiled)."""

    scale: float | None
    expert: float | None
    combine: float | None
    handoff: float | None


_UNREAD = RunSpeeds(None, None, None, None)
# the worker's factors run_speeds searches after the scale, in turn, and what each reads
_WORKER_STEPS = (
    ("expert", alone_expert_calls_s),
    ("combine", alone_combines_s),
    ("handoff", worker_handoffs_s),
)


def run_speeds(
    rows: pl.DataFrame, sim_cfg: SimConfig, table: ServiceTable, work: Workload, rounds: int = 2
) -> RunSpeeds:
    """The run's host speed scale, its expert calls' factor, its combine's factor and its
    worker's hand-off factor, found together: slower worker steps keep the host busier, and
    its duty speed then speeds up the gates, so each is searched at the others' last
    values, ``rounds`` times. All None without enough alone gates; None for a factor
    without enough of its steps alone (that factor then stays as profiled in the others'
    searches).

    Each search starts at the value the one before it ended on, so its first replay is the
    one that ended the search before: every replay is kept by its four values and run once
    (a third of the replays, and the whole of a second round that finds nothing to move)."""
    if table.host is None:
        return _UNREAD
    # a factor not read replays as profiled: the table's expert calls, its host's factors
    profiled = RunSpeeds(None, 1.0, table.host.combine_factor, table.host.handoff_factor)
    replays: dict[RunSpeeds, pl.DataFrame] = {}

    def replay_at(at: RunSpeeds) -> pl.DataFrame:
        if at not in replays:  # an expert factor of 1 leaves the calls as profiled, exactly
            replays[at] = _replay(sim_cfg, at_run_speeds(table, at), work)
        return replays[at]

    got = _UNREAD
    for _ in range(rounds):  # each search from the others' last values and its own
        # what each replay runs at: the values found so far, the profile's for the others
        now = RunSpeeds(*(g if g is not None else p for g, p in zip(got, profiled, strict=True)))
        scale = _scale_search(
            rows, table, got.scale or 1.0, lambda v, now=now: replay_at(now._replace(scale=v))
        )
        if scale is None:
            return _UNREAD
        got, now = got._replace(scale=scale), now._replace(scale=scale)
        for name, read in _WORKER_STEPS:
            found = _factor_search(
                rows,
                getattr(got, name) or 1.0,
                read,
                lambda v, now=now, name=name: replay_at(now._replace(**{name: v})),
            )
            got = got._replace(**{name: found})
            now = now._replace(**{name: found if found is not None else getattr(profiled, name)})
    return got


def at_run_speeds(table: ServiceTable, speeds: RunSpeeds) -> ServiceTable:
    """``table`` at a run's host speed scale and its factors on the expert calls, the
    combine and the worker's hand-off (:func:`run_speeds`); None leaves that part as
    profiled. They touch separate fields, so the order they are applied in does not
    matter."""
    if speeds.scale is not None:
        table = at_scale(table, speeds.scale)
    if speeds.expert is not None:
        table = at_expert_factor(table, speeds.expert)
    if speeds.combine is not None:
        table = at_combine_factor(table, speeds.combine)
    if speeds.handoff is not None:
        table = at_handoff_factor(table, speeds.handoff)
    return table
