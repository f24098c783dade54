"""Whether a device worker woken while the gate goes straight on to its next request runs
during that next gate or waits for its end, measured by ``hw profile`` as ``join_*`` rows
for the simulator's host model (``docs/system-model.md`` §8, ``sim.host``).

Why: in ``hw serve`` at B = 1 (blocks 21-28, session 19) such a worker waited for the next
gate in 79-93 % of the cases where the next request arrived while the gate ran, but ran
during it in 70-89 % where the next request had arrived before the gate started (both
arrivals in the inbox during the gate's wake-up). A worker that runs during the gate keeps
the host: it finishes its request inside the gate, and the gate, hardly moving meanwhile,
takes 400-800 µs instead of 150-300.

How: the server's threads without the server (:func:`hw.profiling.preemption.server_threads`),
fed open loop by the caller on an idle host: pairs of arrivals 2 ms plus an exponential gap
of mean :data:`JOIN_GAP_S` apart, the second either early (:data:`JOIN_EARLY_S` after the
first: before its gate starts) or late (a gate's hand-off plus a uniform share
:data:`JOIN_LATE_SHARE` of its time after it: while it runs), early or late at random. A
pair counts when its second arrival came before the first gate's end (the gate goes
straight on) and the worker was idle when that gate notified it; it joined when the first
request's first worker step started before the second gate's end. Rows, per case: the count
(``samples``) of joined and of waited pairs, each with the second gate's median wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hw.profiling.preemption import server_threads
from hw.timing import LatencyStats
from traces.profile import JOIN_EARLY_JOINED, JOIN_EARLY_WAITED, JOIN_LATE_JOINED, JOIN_LATE_WAITED

__all__ = ["JOIN_PAIRS", "JoinCase", "join_cases", "join_pairs", "join_rows"]

JOIN_PAIRS = 400  # pairs on an idle host (about half go on, half of those early)
JOIN_GAP_S = 3e-3  # mean idle gap before each pair, after a fixed 2 ms
JOIN_EARLY_S = (5e-6, 1.5e-5)  # the second arrival this long after the first: still waking
JOIN_LATE_SHARE = (0.2, 0.7)  # ... or a hand-off and this share of a gate after: it runs
PAIR_BASE_S = 2e-3


@dataclass(frozen=True)
class JoinCase:
    """One pair whose gate went straight on: whether its second arrival came before the first
    gate started (early), whether the woken worker ran during the second gate (joined), and
    the second gate's wall time."""

    early: bool
    joined: bool
    wall_s: float


def join_cases(
    gates: np.ndarray, steps: np.ndarray, puts: np.ndarray, per_request: int
) -> list[JoinCase]:
    """The counted pairs (module docstring) of requests put in pairs (0, 1), (2, 3), ...:
    ``gates`` [n, 2] and ``puts`` [n] per request, ``steps`` [n × per_request, 2] in
    request order."""
    runs = steps.reshape(-1, per_request, 2)
    out = []
    for j in range(0, len(puts) - 1, 2):
        g0, g1 = gates[j], gates[j + 1]
        if puts[j + 1] >= g0[1]:
            continue  # the gate waited for the second arrival: no going on
        if j > 0 and runs[j - 1, -1, 1] >= g0[1]:
            continue  # the worker was still on the previous pair when notified
        out.append(JoinCase(bool(puts[j + 1] < g0[0]), bool(runs[j, 0, 0] < g1[1]), g1[1] - g1[0]))
    return out


def join_rows(cases: list[JoinCase]) -> dict[str, LatencyStats]:
    """Component -> stats of the second gate's wall, one per (case, outcome) that occurred;
    ``samples`` is the count."""
    names = {
        (True, True): JOIN_EARLY_JOINED,
        (True, False): JOIN_EARLY_WAITED,
        (False, True): JOIN_LATE_JOINED,
        (False, False): JOIN_LATE_WAITED,
    }
    rows = {}
    for key, name in names.items():
        walls = [c.wall_s for c in cases if (c.early, c.joined) == key]
        if walls:
            rows[name] = LatencyStats.from_samples(walls)
    return rows


def join_pairs(
    gate: Callable[[], Any],
    steps: tuple[Callable[[], Any], ...],
    *,
    pairs: int = JOIN_PAIRS,
    seed: int = 0,
    visits: int = 8,
) -> list[JoinCase]:
    """Feed ``pairs`` pairs (module docstring) through the server's threads, in ``visits``
    drained batches, and return the counted ones. The late spacing follows the median
    hand-off and gate of ten single requests timed first in the same threads, each after
    an idle gap like the pairs'."""
    rng = np.random.default_rng(seed)
    found: list[JoinCase] = []
    with server_threads(gate, steps, name="join") as (put, drain):
        handoff, wall = [], []
        for _ in range(10):
            time.sleep(PAIR_BASE_S)
            put()
            got = drain()
            handoff.append(float(got.gates[0, 0] - got.puts[0]))
            wall.append(float(got.gates[0, 1] - got.gates[0, 0]))
        handoff_s, gate_s = float(np.median(handoff)), float(np.median(wall))
        per_visit = max(1, -(-pairs // visits))
        for _ in range(visits):
            at = time.perf_counter()
            for _ in range(per_visit):
                at += PAIR_BASE_S + float(rng.exponential(JOIN_GAP_S))
                if rng.random() < 0.5:
                    spacing = float(rng.uniform(*JOIN_EARLY_S))
                else:
                    spacing = handoff_s + gate_s * float(rng.uniform(*JOIN_LATE_SHARE))
                for t in (at, at + spacing):
                    wait = t - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    put()
            got = drain()
            found += join_cases(got.gates, got.steps, got.puts, len(steps))
    return found
