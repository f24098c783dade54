"""How often a woken gate takes the host whole from a device worker at work, measured by
``hw profile`` as ``preempt_*`` rows for the simulator's host model (``docs/system-model.md``
§8, ``sim.host``).

Why: in the server at B = 1, about 60 % of the gates that start while the worker is
inside an expert call end before that call does: the worker makes no progress while the
gate runs (the gate then takes 0.3 ms, about its time alone; shared, 0.7 ms). The
contended pair of :mod:`hw.profiling.host` (one thread looping while the other is timed)
never shows it (under 1 % of its gates): there both threads stay on their cores. What
decides is the load: on this 2-core VM the woken gate lands on the worker's core (and
runs there until it blocks) more often the less busy the machine is, about 60-75 % below
a 30 % duty, under 20 % at 60 %. Shared evenly throughout, the model left the worker's
p99 at B = 1 0.7-0.8 of the server's (``benchmarks/README.md``, sessions 14-15).

How: the server's threads without the server. The caller is the load generator (sleeps
until each arrival, then puts it in the gate's inbox, never waits), a gate thread gates
each arrival and notifies a worker thread, which runs the request's k worker steps
(gather, expert) and its completion, stamping each. Arrivals come in pairs, the second
0.3-1.5 ms after the first, so that its gate often wakes while the worker is on the first
request; a pair follows the previous one 1.5 ms plus an exponential idle gap of each
level's mean (:data:`PREEMPT_GAPS_S`, visited in a seeded shuffled order, so every level
sees the same drifting machine). Every woken gate (not going straight on from the
previous one) that starts inside a worker step counts: held when that step ends after
the gate, else shared. Per level, the rows (``idle_s`` = the level's mean gap, which names
the level): ``preempt_held`` / ``preempt_shared`` the gate's wall time in each case
(``samples``: how many), ``preempt_busy`` the time some thread was at work and
``preempt_wall`` the level's wall time, each per request, so that the level's duty is
busy ÷ wall; ``preempt_handoff`` the hand-off (the arrival's put in the inbox to its gate's
start) of the gates that were waiting when a worker step was at work. In the server such a
wake-up takes longer and spreads far wider than one on an idle host (median 51-58 µs, p90
270-310 µs against 28-34 µs, B = 1, ``benchmarks/README.md``, session 19): the woken thread
often lands on the busy core.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from hw.timing import LatencyStats
from traces.profile import (
    PREEMPT_BUSY,
    PREEMPT_HANDOFF,
    PREEMPT_HELD,
    PREEMPT_SHARED,
    PREEMPT_WALL,
)

__all__ = [
    "PREEMPT_GAPS_S",
    "PREEMPT_PAIRS",
    "PreemptLevel",
    "level_rows",
    "preempt_levels",
    "server_threads",
]

PREEMPT_GAPS_S = (1e-4, 1e-3, 3e-3, 1e-2)  # mean idle gap before each pair: the levels
PREEMPT_PAIRS = 600  # pairs per level (~35-80 % of them give a gate inside a worker step)
PAIR_BASE_S = 1.5e-3  # a pair's start after the previous pair's, before the idle gap
PAIR_SPACING_S = (3e-4, 1.5e-3)  # the second arrival after the first, uniform: over the
# first request's worker run (it starts after the first gate and a hand-off, 0.3-1 ms)
WOKEN_AFTER_S = 2e-5  # a gate starting sooner after the previous gate's end went straight on


@dataclass(frozen=True)
class PreemptLevel:
    """One level's stamps: per gate (start, end), per worker step (start, end); the time
    some thread was at work, the level's wall time (its visits' spans) and its requests."""

    gap_s: float  # the level's mean idle gap before each pair
    gates: np.ndarray  # [n, 2]
    steps: np.ndarray  # [m, 2], in time order, one worker thread
    busy_s: float
    span_s: float
    requests: int
    puts: np.ndarray | None = None  # [n]: each request's arrival in the gate's inbox

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """Wall times of the woken gates (not going straight on from the previous one) that
        started inside a worker step: (held, shared), held where that step ended after the
        gate."""
        if len(self.steps) == 0 or len(self.gates) == 0:
            return np.zeros(0), np.zeros(0)
        end = self.steps[:, 1]
        g0, g1 = self.gates[:, 0], self.gates[:, 1]
        woken = g0 - np.concatenate([[-np.inf], g1[:-1]]) > WOKEN_AFTER_S
        j = self._step_at(g0)
        inside = woken & (j >= 0)
        held = inside & (end[np.maximum(j, 0)] >= g1)
        wall = g1 - g0
        return wall[held], wall[inside & ~held]

    def busy_handoffs(self) -> np.ndarray:
        """Hand-offs (arrival put in the inbox to its gate's start) of the gates that were
        waiting on their inbox when a worker step was at work: the wake-up a gate gets from
        a busy host (none without the arrivals' stamps)."""
        if self.puts is None or len(self.steps) == 0 or len(self.gates) == 0:
            return np.zeros(0)
        put, g0, g1 = self.puts, self.gates[:, 0], self.gates[:, 1]
        # the gate waits on its inbox: the previous gate ended, with its notify, well before
        waiting = put > np.concatenate([[-np.inf], g1[:-1]]) + WOKEN_AFTER_S
        return (g0 - put)[waiting & (self._step_at(put) >= 0)]

    def _step_at(self, t: np.ndarray) -> np.ndarray:
        """Per instant of ``t``, the index of the worker step at work then (-1: none)."""
        start, end = self.steps[:, 0], self.steps[:, 1]
        j = np.searchsorted(start, t, side="right") - 1
        return np.where((j >= 0) & (end[np.maximum(j, 0)] > t), j, -1)


def level_rows(level: PreemptLevel) -> dict[str, tuple[float, LatencyStats]]:
    """The level's rows (module docstring): component -> (idle_s, stats); a case no gate
    fell in has no row."""
    held, shared = level.split()
    n = max(level.requests, 1)
    busy, wall = level.busy_s / n, max(level.span_s, level.busy_s) / n
    rows = {
        PREEMPT_BUSY: (level.gap_s, LatencyStats(busy, busy, busy, busy, n)),
        PREEMPT_WALL: (level.gap_s, LatencyStats(wall, wall, wall, wall, n)),
    }
    for name, walls in (
        (PREEMPT_HELD, held),
        (PREEMPT_SHARED, shared),
        (PREEMPT_HANDOFF, level.busy_handoffs()),
    ):
        if len(walls):
            rows[name] = (level.gap_s, LatencyStats.from_samples(walls))
    return rows


class ThreadStamps(NamedTuple):
    """What :func:`server_threads` stamped: the gates' and the worker steps' (start, end),
    each in time order, and each arrival's put in the gate's inbox, in the order put."""

    gates: np.ndarray  # [n, 2]
    steps: np.ndarray  # [m, 2]
    puts: np.ndarray  # [n]


@contextmanager
def server_threads(
    gate: Callable[[], Any], steps: tuple[Callable[[], Any], ...], name: str = "preempt"
) -> Iterator[tuple[Callable[[], None], Callable[[], ThreadStamps]]]:
    """The server's gate and worker threads: ``gate`` in a thread woken by a
    ``SimpleQueue.put`` (the gate's inbox), then ``steps`` (k worker steps, collect and
    combine) in a second thread woken by a ``Condition.notify`` (an idle device worker),
    each step stamped. Yields ``put`` (an arrival now; the caller never waits, so they can
    be fed open loop) and ``drain`` (waits for the work put so far, returns and clears the
    stamps, :class:`ThreadStamps`; a request whose gate failed has no steps). Both threads
    run under ``torch.inference_mode`` as the server's do; an error in either is raised by
    ``drain``, not left to hang it."""
    inbox: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    cond = threading.Condition(threading.Lock())
    box: collections.deque[int | None] = collections.deque()
    gates: list[tuple[float, float]] = []
    steps_done: list[tuple[float, float]] = []
    finished: queue.SimpleQueue[int | BaseException] = queue.SimpleQueue()

    def gate_loop() -> None:
        with torch.inference_mode():
            _gate_loop()

    def _gate_loop() -> None:
        while (i := inbox.get()) is not None:
            try:
                t0 = time.perf_counter()
                gate()
                gates.append((t0, time.perf_counter()))
            except BaseException as exc:  # surfaced by drain
                finished.put(exc)
                continue
            with cond:
                box.append(i)
                cond.notify()
        with cond:
            box.append(None)
            cond.notify()

    def worker_loop() -> None:
        with torch.inference_mode():
            _worker_loop()

    def _worker_loop() -> None:
        while True:
            with cond:
                while not box:
                    cond.wait()
                i = box.popleft()
            if i is None:
                return
            try:
                t0 = time.perf_counter()
                for step in steps:
                    step()
                    t1 = time.perf_counter()
                    steps_done.append((t0, t1))
                    t0 = t1
            except BaseException as exc:
                finished.put(exc)
                continue
            finished.put(i)

    threads = [
        threading.Thread(target=gate_loop, name=f"{name}-gate", daemon=True),
        threading.Thread(target=worker_loop, name=f"{name}-worker", daemon=True),
    ]
    for t in threads:
        t.start()
    puts: list[float] = []

    def put() -> None:
        puts.append(time.perf_counter())
        inbox.put(len(puts) - 1)

    def drain() -> ThreadStamps:
        for _ in range(len(puts)):
            got = finished.get()
            if isinstance(got, BaseException):
                raise got
        out = ThreadStamps(
            np.array(gates).reshape(-1, 2), np.array(steps_done).reshape(-1, 2), np.array(puts)
        )
        gates.clear()
        steps_done.clear()
        puts.clear()
        return out

    try:
        yield put, drain
    finally:
        inbox.put(None)
        for t in threads:
            t.join()


def preempt_levels(
    gate: Callable[[], Any],
    steps: tuple[Callable[[], Any], ...],
    *,
    pairs: int = PREEMPT_PAIRS,
    gaps_s: tuple[float, ...] = PREEMPT_GAPS_S,
    visits: int = 4,
    seed: int = 0,
) -> list[PreemptLevel]:
    """One :class:`PreemptLevel` per mean gap of ``gaps_s``, ``pairs`` pairs each, in
    ``visits`` visits per level shuffled into one seeded order (module docstring). The
    ``gate`` and ``steps`` run in the two threads under ``torch.inference_mode``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.repeat(np.arange(len(gaps_s)), visits)).tolist()
    per_visit = max(1, -(-pairs // visits))
    found: list[dict[str, list[Any]]] = [
        {"gates": [], "steps": [], "puts": [], "busy": [0.0], "span": [0.0]} for _ in gaps_s
    ]
    with server_threads(gate, steps) as (put, drain):
        for level in order:
            at = time.perf_counter()
            visit_start = at
            for _ in range(per_visit):
                at += PAIR_BASE_S + float(rng.exponential(gaps_s[level]))
                second = at + float(rng.uniform(*PAIR_SPACING_S))
                for t in (at, second):
                    wait = t - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    put()
            gates, worker, puts = drain()
            got = found[level]
            got["gates"].append(gates)
            got["steps"].append(worker)
            got["puts"].append(puts)
            got["busy"][0] += _busy(gates, worker, len(steps))
            got["span"][0] += float(max(gates[:, 1].max(), worker[:, 1].max())) - visit_start
    return [
        PreemptLevel(
            gap_s=gap,
            gates=np.concatenate(f["gates"]),
            steps=np.concatenate(f["steps"]),
            busy_s=f["busy"][0],
            span_s=f["span"][0],
            requests=2 * per_visit * visits,
            puts=np.concatenate(f["puts"]),
        )
        for gap, f in zip(gaps_s, found, strict=True)
    ]


def _busy(gates: np.ndarray, steps: np.ndarray, per_request: int) -> float:
    """The time at least one thread was at work: the union of the gates and of each
    request's worker run (its first step's start to its last step's end)."""
    runs = steps.reshape(-1, per_request, 2)
    spans = np.concatenate([gates, np.stack([runs[:, 0, 0], runs[:, -1, 1]], axis=1)])
    spans = spans[np.argsort(spans[:, 0], kind="stable")]
    total, start, end = 0.0, float(spans[0, 0]), float(spans[0, 1])
    for s0, s1 in spans[1:].tolist():
        if s0 > end:
            total += end - start
            start, end = s0, s1
        else:
            end = max(end, s1)
    return total + end - start
