"""The machine's stalls a measured run met, read from the run's own gates, and the host
model that replays them where they were.

Why: a stall (:mod:`traces.stalls`: a few ms in which threads run several times slower)
sets B = 1's p99, since the requests that arrive in one queue behind it. How often the
machine stalls moves from minute to minute: ``hw profile``'s 60 s watch found 0-0.83
episodes per second on this box, and within an hour of a watch the runs met 0.5-1.6 per
second (``benchmarks/README.md``, "Fidelity, session 20"). A watch before or after the run
is a draw of another minute; the run's gates are the record of its own.

How: the gate is timed for every request, so the detector that reads the watch's chains
(:func:`traces.stalls.find_stalls`: slow gates, each over 2.5× the median of its 5 s block)
reads the run's gates, with two differences, both checked on runs the host model made with
stalls planted where it knew them (``tests/sim/test_run_stalls.py``):

- a gate in company runs up to 4.5 times slower than one alone, and the watch's gates all
  run alone. Against the median of every gate, at B ≥ 4 (most gates alone) the gates
  beside a batch look like stalls: 44-65 episodes in 1.3 s of a model run with three, and
  ``sim check`` of a run the model made itself no longer gave that run back. So an episode
  counts only where one of its gates was slow against the median of its own company too
  (:data:`COMPANY_EDGES`: the share of its wall time a device worker was at work,
  :func:`traces.alone_gates.gate_company`). Compared with their company alone, the gates
  inside a stall mostly were not (their company changes: at B = 1 a contended gate in a
  stall of factor 3 took 2 times the contended median), so the episodes are still found
  against every gate;
- inside a stall some gates stay under the threshold and split the episode: slow gates
  with up to :data:`RUN_STALL_BRIDGE` other between them are one episode. With both, the
  model runs gave back each planted stall of 12 ms as one of 11-12.5 ms at B = 1, 4 and
  16, and none in runs without (two others between: a piece of 44 ms).

Where the stall began or ended is then taken from both threads: a stall can take the
worker's CPU before the gate's (one vCPU of two away), and in block 30 a stall's first 5 ms
slowed the worker (an expert call and combine of 3.1 ms) while the gates between ran at
1.1-2.4 times their median, so the gates alone found it 5 ms late. Each episode grows over
every slow step, a gate over the threshold against its own company's median (against
every gate's, at B = 1 and 1500 req/s, the contended gates before a planted stall pulled its
start 14 ms early) or a device worker's expert call or combine over the threshold against
its kind's median
(:func:`traces.alone_gates.worker_steps`), that overlaps it or lies within
:data:`RUN_STALL_GROW_S` of it, until none does (:meth:`traces.stalls.StallEpisodes.grown`);
growth never makes an episode, only moves the ends of one the gates found.

Each episode is replayed at its start on the run's clock (the replay runs the run's own
arrivals on it), for its span, with its factor on every step and hand-off
(``HostTerms.stall_times``). A run with none replays none. What this takes from the run is
when its gates crawled, how long and how much; the queue behind each stall, and the
latencies, are still the model's. The factor is that of the episode's gates that ran
alone, over the alone gates' median (against every gate's median a stall of 3 read 3.9-4.6
at B = 1 in the model runs); where none ran alone, its gates' over every gate's median.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl

from sim.config import SimConfig
from sim.engine import simulate
from sim.machine_state import StatePath
from sim.output import records_of
from sim.service import ServiceTable
from sim.workload import Workload
from traces.alone_gates import gate_company, worker_steps
from traces.stalls import (
    STALL_MIN_RUN,
    STALL_THRESHOLD,
    StallEpisodes,
    block_ratios,
    find_stalls,
)

__all__ = [
    "COMPANY_EDGES",
    "MIN_STALL_GATES",
    "RUN_STALL_BRIDGE",
    "RUN_STALL_GROW_S",
    "run_stalls",
    "with_stalls",
]

MIN_STALL_GATES = 100  # fewer timed gates in a B: its stalls are not read
# a gate's company by the share of its wall time a device worker was at work: none, up to
# half, more; each gate compared with the median of its own kind in its block
COMPANY_EDGES = (0.0, 0.5)
RUN_STALL_BRIDGE = 1  # slow gates with at most this many others between them: one episode
# an episode grows over slow gates and worker steps within this long of it (module docstring)
RUN_STALL_GROW_S = 1e-3
MATCH_ROUNDS = 2  # replays that match each stall's factor to the run's gates in it
# the secant's slope (log gate over log factor) kept within these: a gate in company takes
# less than its factor times longer (the company's added wall time does not stretch); a
# flatter slope read from an episode of one or two gates made factors of 11-13 on block
# 36's --B 1 run 4 at 500 req/s (p99 +117 % against +9 % within these)
MATCH_SLOPES = (0.5, 1.5)


def run_stalls(rows: pl.DataFrame, state: StatePath | None = None) -> StallEpisodes | None:
    """The stall episodes in the gates of one B's rows (module docstring), warm-up included
    (the replay runs it too); None where the B has fewer than :data:`MIN_STALL_GATES`
    timed gates. ``state``: the machine state's path during the run (``sim.run_state``),
    replayed with the stalls: an episode is found against its block as without it, and its
    factor taken over the state's at its start, since the replay multiplies the two (in a
    spell at 1.3 a gate at 3 times the block's median is a stall of 2.3)."""
    starts, walls, busy_share = gate_company(rows)
    if len(starts) < max(MIN_STALL_GATES, STALL_MIN_RUN):
        return None
    company = np.digitize(busy_share, COMPANY_EDGES, right=True)
    found = find_stalls(starts, walls, bridge=RUN_STALL_BRIDGE)
    own = block_ratios(starts, walls, classes=company)  # against the gate's own company
    keep = np.zeros(len(found.starts_s), dtype=bool)
    factors = found.factors.copy()
    for i, (t, span) in enumerate(zip(found.starts_s, found.spans_s, strict=True)):
        inside = (starts >= t) & (starts < t + span)
        keep[i] = bool((own[inside] > STALL_THRESHOLD).any())
        alone = inside & (company == 0)
        if alone.any():  # the gates alone in it: the stall's factor and nothing else
            factors[i] = float(np.median(own[alone]))
    if state is not None:
        factors = factors / state.at(found.starts_s)
    kept = replace(found, factors=np.maximum(factors, 1.0)).only(keep)
    spans, ratios = worker_steps(rows)
    gate_spans = np.column_stack([starts, starts + walls])
    slow = np.concatenate(
        [
            gate_spans[own > STALL_THRESHOLD],
            spans[ratios > STALL_THRESHOLD],
        ]
    )
    return kept.grown(slow, RUN_STALL_GROW_S)


def with_stalls(table: ServiceTable, episodes: StallEpisodes) -> ServiceTable:
    """``table`` with its host model replaying ``episodes`` (none: no stalls at all) in
    place of the profile's drawn stalls."""
    if table.host is None:
        return table
    times = tuple(
        (float(t), float(span), float(f))
        for t, span, f in zip(episodes.starts_s, episodes.spans_s, episodes.factors, strict=True)
    )
    return replace(
        table,
        host=replace(
            table.host, stall_times=times, stall_rate_hz=0.0, stall_span_s=(), stall_factor=()
        ),
    )


def matched_stalls(
    rows: pl.DataFrame,
    sim_cfg: SimConfig,
    table: ServiceTable,
    work: Workload,
    rounds: int = MATCH_ROUNDS,
) -> ServiceTable:
    """``table`` with each replayed stall's factor set so that the replay's gates inside it
    take as long as the run's did (their medians; module docstring), by ``rounds`` replays:
    each a step of the secant on log factor against log median gate (the first in
    proportion), the factor at least 1. Unchanged without replayed stalls."""
    host = table.host
    if host is None or not host.stall_times:
        return table
    starts, walls, _ = gate_company(rows)
    spans = [(t, t + span) for t, span, _ in host.stall_times]
    measured = [_median_inside(starts, walls, a, b) for a, b in spans]
    times = list(host.stall_times)
    before: list[tuple[float, float] | None] = [None] * len(times)  # (log factor, log gate)
    for _ in range(rounds):
        got_starts, got_walls, _ = gate_company(records_of(simulate(sim_cfg, table, work)))
        for i, ((a, b), want) in enumerate(zip(spans, measured, strict=True)):
            got = _median_inside(got_starts, got_walls, a, b)
            if want is None or got is None:
                continue
            t, span, factor = times[i]
            here = (np.log(factor), np.log(got))
            slope = 1.0  # a gate's wall in proportion to the factor, to start with
            if before[i] is not None and abs(here[0] - before[i][0]) > 1e-6:
                slope = (here[1] - before[i][1]) / (here[0] - before[i][0])
                slope = float(np.clip(slope, *MATCH_SLOPES))
            before[i] = here
            step = (np.log(want) - here[1]) / slope
            times[i] = (t, span, max(1.0, float(np.exp(here[0] + step))))
        table = replace(table, host=replace(host, stall_times=tuple(times)))
    return table


def _median_inside(starts: np.ndarray, walls: np.ndarray, a: float, b: float) -> float | None:
    """The median wall time of the gates that started in [a, b) (None: none did)."""
    inside = (starts >= a) & (starts < b)
    return float(np.median(walls[inside])) if inside.any() else None
