"""Host-side costs of the CPU server that the isolated expert timings leave out
(``docs/system-model.md`` §8): what ``hw profile`` adds to its steps file for the
simulator's shared-host model.

- ``dispatch`` (per batch size b): the worker's gathering of a batch's inputs
  before the expert call (an index tensor, ``index_select``, the move to the
  expert's device), exactly the code ``hw.serving.server`` runs.
- ``collect`` (batch size 1): gathering one request's k answers and weights
  before its combine (a ``stack`` and a weights tensor).
- ``gate_contended``: the gate on one request while a second thread loops a
  device worker's step (dispatch + expert 0 on one sample), and
  ``worker_contended``: that worker step while a second thread loops the gate;
  ``gate_alone`` / ``worker_alone``: the same calls without the second thread,
  measured in alternation with them (so both see the same machine). All with
  the server's GIL switch interval. Contended − alone is the wall time
  company adds to one call (the host model's additive contention): the cost of two Python
  threads sharing one interpreter lock, measured without a server.
- ``completion_alone`` / ``completion_contended``: a request's completion work (collect,
  then combine) alone and while a second thread loops the gate, in the same alternation:
  the combine job's own contention. Company costs a call lock hand-offs around each of its
  torch calls, not a fixed share of its duration, so the combine's is measured rather than
  scaled from the worker step's by cost (which made it up to 5× what the server shows).
- ``duty_threads`` (one row per mean idle gap ``idle_s``): one request's whole
  host chain at B = 1 (gate, k worker steps, collect, combine), called in a
  steady phase with exponential idle gaps of that mean between calls, like
  Poisson arrivals; the row's ``idle_s`` is the gap actually measured (sleep
  overshoots). The chain runs as the server runs it: the gate in a thread
  woken by a queue put, the rest in a worker thread woken by a notify; the
  row is the two threads' own run times summed (the hand-offs are their own
  rows). Timed in one thread (older profiles' ``duty`` rows) the same chain
  took 1.5–2.5× less on this box (why was not isolated: likely each thread
  finding its code and data evicted, or warm on the other core), and the model
  missed that cost. From the same chains, at the worker's mean wait before
  its wake (gap + gate): ``handoff_worker_chain`` (the gate's end to the worker
  running) and ``chain_first_step`` / ``chain_next_step`` (its first worker
  step after the wake and the second, warm one: the difference is the cold
  start a wake costs, which one speed per run would spread over all work),
  with ``chain_first_gather`` / ``chain_next_gather`` the gather of each (the
  server stamps a batch's start between gather and expert, and in its records
  a woken worker's expert call takes 14–27 µs more than a busy one's, about
  half the cold start: where it falls shows in the queue wait), and ``chain_gate``
  at the level's mean gap: the chain's gate alone, whose wall over the shortest
  gaps' is the gate's own cold start after the host idled (in the server's
  records a gate woken after more than 3 ms of idle host took 1.6–2 × one woken
  within 1 ms), charged to the gate by the host's idle time rather than spread
  over every step by the duty speed; and, at the gate's mean wait before its
  wake, ``handoff_gate_chain``: the arrival's put in the gate's inbox to the gate
  running. The ``handoff_gate`` rows below time that hand-off between two threads
  that only wake each other: 8–16 µs at 0.2–10 ms of idle in block 35's profiles,
  where the server's gate on an idle host took 18–35 µs and the server's own two
  threads 29–52 µs (``benchmarks/README.md``, session 23); the model takes the
  chain's.
  A CPU that keeps going idle runs slower (caches, clock,
  the hypervisor): on this box the same chain took about twice as long at
  a 10% duty as back to back, and how busy the last tens of milliseconds were
  mattered more than the last gap alone. Chain ÷ (chain + idle) is the
  phase's duty; the simulator takes the chain's steps as it prices them ÷
  this chain as its speed (``sim.host_terms.HostTerms.from_profile``).
- ``speed_probe`` (``idle_s`` = its mean gap): the host speed probe
  (:mod:`hw.profiling.speed_probe`), one phase of it visited among the duty curve's
  phases, as often and in the same shuffled order, so that the reference ``sim check``
  divides a run's probe by saw the same states of the machine as the curve it then
  scales (probed before the passes and after the host terms instead, the ratio of the
  low-duty chain to the probe varied ×1.45–×2.6 between profiles, and so did each
  profile's prediction).
- ``state_window`` (``idle_s`` = a window length): the machine's state, how far every
  step's speed moves over windows of that length, from the same two-thread chain after
  2 ms gaps (:mod:`hw.profiling.host_state`).
- ``stall_watch`` / ``stall_span`` / ``stall_gate``: the machine's stalls (a few ms in
  which every step runs several times slower) found in the same chains
  (:mod:`traces.stalls`).
- ``sched_tick``: the kernel scheduler's tick (1 / CONFIG_HZ), read, not timed
  (:mod:`hw.profiling.sched_tick`; absent where the kernel's configuration is unreadable):
  a gate that took the worker's core holds it at most until the next one.
- ``preempt_held`` / ``preempt_shared`` / ``preempt_busy`` (``idle_s`` = a level's idle time
  per request): how often a woken gate takes the host whole from a worker at work, per level
  of load, from the server's two threads fed open loop (:mod:`hw.profiling.preemption`).
- the server's own loops (``gate_overhead``, ``batch_overhead``,
  ``completion_overhead``) and the load generator's per-arrival penalties
  (``arrival_penalty_gate``, ``arrival_penalty_worker``; with both loops at work together,
  ``arrival_penalty_gate_company`` / ``arrival_penalty_worker_company`` where readable):
  :mod:`hw.profiling.server_loops`, :mod:`hw.profiling.arrival_penalty`.
- ``handoff_gate`` / ``handoff_worker`` (one row per idle time): wall time
  from handing work to a thread blocked on it to that thread running, after
  it waited ``idle_s``: a ``SimpleQueue.put`` to a thread in ``get`` (the
  gate's inbox) and a ``Condition.notify`` to a thread in ``wait`` (an idle
  device worker). The server pays one of these on every arrival that finds
  the gate idle and on every batch that finds its worker idle.
- (profiles before 2026-12-02 also have ``handoff_worker_busy``: the notify,
  then the gate in the notifying thread. The woken thread there often ran
  during that one gate, where in the server it waits for the going-on gate's
  end; the simulator no longer reads it, and it is no longer timed.)

Every level of a curve is visited in a seeded random order (hand-offs: one
call per visit; duty: phases, each visited ``duty_visits`` times, the first
half of each phase discarded while the machine settles), so that every level
sees the same drifting machine: visiting them in one block each made the
curve depend on what the box did during each block.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from hw.profiling.arrival_penalty import (
    MIN_PENALTY_S,
    PENALTY_S,
    arrival_penalties,
    company_penalties,
)
from hw.profiling.host_state import STATE_GAP_S, stall_rows, state_rows, state_samples
from hw.profiling.model import ServedModel
from hw.profiling.preemption import level_rows, preempt_levels, server_threads
from hw.profiling.sched_tick import kernel_tick_s
from hw.profiling.server_loops import server_loop_overheads
from hw.profiling.speed_probe import PROBE_GAP_S, probe_samples
from hw.profiling.worker_join import join_pairs, join_rows
from hw.timing import LatencyStats, gc_paused, measure_samples
from traces.profile import SCHED_TICK, SPEED_PROBE, STATE_WINDOW

__all__ = [
    "IDLE_S",
    "ChainTiming",
    "HostTiming",
    "chain_curves",
    "collect_call",
    "contended_samples",
    "dispatch_call",
    "measure_host",
    "worker_step",
]

IDLE_S = (0.0, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)  # idle levels of the curves


@dataclass(frozen=True)
class HostTiming:
    """How the host terms are measured: per point, at least ``min_calls`` calls and
    ``min_time_s`` seconds, spread over ``rounds`` alternating visits."""

    min_calls: int = 40
    min_time_s: float = 0.2
    max_time_s: float = 5.0
    rounds: int = 4
    switch_interval_s: float = 1e-5
    idle_s: tuple[float, ...] = IDLE_S
    idle_calls: int = 100  # hand-offs, per idle time: one call per sleep
    duty_phase_s: float = 0.5  # duty curve: length of one phase ...
    duty_visits: int = 3  # ... and visits of each level
    speed_probe_s: float = 0.0  # the speed probe's phase, visited among the duty levels
    state_s: float = 0.0  # the machine's state: seconds of chains (hw.profiling.host_state)
    # the gate's preemption: pairs per level (hw.profiling.preemption), and as many pairs for
    # the worker woken while the gate goes on (hw.profiling.worker_join)
    preempt_pairs: int = 0


def dispatch_call(
    served: ServedModel, expert: int, b: int, pool: torch.Tensor
) -> Callable[[], Any]:
    """The server's gather of ``b`` inputs for ``expert`` (``ServedModel.gather``)."""
    dev = served.devices[served.placement[expert]]
    rows = list(range(b))
    return lambda: served.gather(pool, rows, dev)


def collect_call(served: ServedModel, k: int, gen: torch.Generator) -> Callable[[], Any]:
    """The server's gathering of one request's k answers and weights before its combine."""
    dev = served.devices[0]
    outs = [torch.randn(served.d_model, generator=gen).to(dev, served.dtype) for _ in range(k)]
    weights = [1.0 / k] * k
    return lambda: served.collect(outs, weights, dev)


def worker_step(served: ServedModel, pool: torch.Tensor) -> Callable[[], Any]:
    """One device worker step at batch size 1: dispatch, then expert 0."""
    gather = dispatch_call(served, 0, 1, pool)
    return lambda: served.expert(0, gather())


def worker_step_halves(
    served: ServedModel, pool: torch.Tensor
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """:func:`worker_step` as two calls, the gather and then expert 0 on what it gathered,
    so that a chain can stamp between them as the server stamps a batch's start."""
    gather = dispatch_call(served, 0, 1, pool)
    held: list[Any] = [None]

    def take() -> None:
        held[0] = gather()

    return take, lambda: served.expert(0, held[0])


def contended_samples(
    timed: Callable[[], Any],
    background: Callable[[], Any],
    *,
    device: torch.device,
    switch_interval_s: float,
    min_calls: int,
    min_time_s: float,
    max_time_s: float,
) -> list[float]:
    """Latencies of ``timed`` while another thread calls ``background`` in a loop.

    Both run under ``torch.inference_mode`` with the GIL switch interval set as the
    server sets it (restored afterwards).
    """
    stop = threading.Event()
    started = threading.Event()

    def loop() -> None:
        with torch.inference_mode():
            background()
            started.set()
            while not stop.is_set():
                background()

    old = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval_s)
    thread = threading.Thread(target=loop, name="contender", daemon=True)
    try:
        thread.start()
        started.wait()
        with torch.inference_mode():
            return measure_samples(
                timed,
                device=device,
                warmup=5,
                min_calls=min_calls,
                min_time_s=min_time_s,
                max_time_s=max_time_s,
            )
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old)


@contextmanager
def _queue_handoff() -> Iterator[Callable[[], float]]:
    """A thread blocked in ``SimpleQueue.get`` (the gate's inbox); the call puts a stamp and
    returns the seconds until that thread ran."""
    inbox: queue.SimpleQueue[float | None] = queue.SimpleQueue()
    reply: queue.SimpleQueue[float] = queue.SimpleQueue()

    def waiter() -> None:
        while (t0 := inbox.get()) is not None:
            reply.put(time.perf_counter() - t0)

    thread = threading.Thread(target=waiter, name="handoff-queue", daemon=True)
    thread.start()
    try:
        yield lambda: (inbox.put(time.perf_counter()), reply.get())[1]
    finally:
        inbox.put(None)
        thread.join()


@contextmanager
def _notify_handoff() -> Iterator[Callable[[], float]]:
    """A thread in ``Condition.wait`` (an idle device worker); the call notifies it and
    returns the seconds from the notify until the woken thread ran."""
    cond = threading.Condition(threading.Lock())
    box: list[float | None] = []
    reply: queue.SimpleQueue[float] = queue.SimpleQueue()

    def waiter() -> None:
        with cond:
            while True:
                while not box:
                    cond.wait()
                if (t0 := box.pop()) is None:
                    return
                reply.put(time.perf_counter() - t0)

    thread = threading.Thread(target=waiter, name="handoff-notify", daemon=True)
    thread.start()

    def hand() -> float:
        with cond:
            box.append(time.perf_counter())
            cond.notify()
        return reply.get()

    try:
        yield hand
    finally:
        with cond:
            box.append(None)
            cond.notify()
        thread.join()


@dataclass(frozen=True)
class ChainTiming:
    """perf_counter stamps of one request's chain in the server's two threads: the gate's
    start and end, the worker's start (after its hand-off), the end of each of its steps and
    the arrival's put in the gate's inbox (None: not stamped)."""

    gate_start: float
    gate_end: float
    worker_start: float
    step_ends: tuple[float, ...]
    put: float | None = None

    @property
    def start(self) -> float:
        return self.gate_start

    @property
    def end(self) -> float:
        return self.step_ends[-1]

    @property
    def work_s(self) -> float:
        """The two threads' own run times summed, without the hand-off between them."""
        return (self.gate_end - self.gate_start) + (self.end - self.worker_start)

    @property
    def handoff_s(self) -> float:
        return self.worker_start - self.gate_end

    @property
    def steps_s(self) -> tuple[float, ...]:
        ends = (self.worker_start, *self.step_ends)
        return tuple(b - a for a, b in pairwise(ends))


@contextmanager
def _server_chain(
    gate: Callable[[], Any], steps: tuple[Callable[[], Any], ...]
) -> Iterator[Callable[[], ChainTiming]]:
    """One request's chain laid out as the server runs it, in the server's gate and worker
    threads (:func:`hw.profiling.preemption.server_threads`): each call puts one request and
    waits for it, so chains never overlap. An error in either thread is raised in the
    caller, not left to hang it."""
    with server_threads(gate, steps, name="chain") as (put, drain):

        def run() -> ChainTiming:
            put()
            gates, done, puts = drain()
            return ChainTiming(
                float(gates[0, 0]),
                float(gates[0, 1]),
                float(done[0, 0]),
                tuple(float(end) for end in done[:, 1]),
                float(puts[0]),
            )

        yield run


def duty_curve(
    chain: Callable[[], ChainTiming],
    mean_idle_s: tuple[float, ...],
    phase_s: float,
    visits: int,
    seed: int,
    probe: Callable[[], list[float]] | None = None,
) -> tuple[list[list[tuple[float, ChainTiming]]], list[float]]:
    """Per level of ``mean_idle_s``, (idle gap before it, timing) of each kept chain: each
    visit a phase of ``phase_s`` seconds of chains separated by exponential idle gaps of
    that mean (0: back to back), of which the second half is kept (module docstring). The
    gap runs from the previous chain's end to this one's start.

    ``probe`` (the host speed probe, :mod:`hw.profiling.speed_probe`) is visited as one more
    level, as often and in the same shuffled order, so that its samples (returned second)
    see the same states of the machine as the curve that ``sim check`` scales by them."""
    rng = np.random.default_rng(seed)
    levels = len(mean_idle_s) + (probe is not None)
    order = rng.permutation(np.repeat(np.arange(levels), visits)).tolist()
    kept: list[list[tuple[float, ChainTiming]]] = [[] for _ in mean_idle_s]
    probed: list[float] = []
    for level in order:
        if level == len(mean_idle_s):
            assert probe is not None
            probed += probe()
            continue
        mean = mean_idle_s[level]
        start = time.perf_counter()
        end = prev_end = start
        while end - start < phase_s:
            if mean > 0:
                time.sleep(float(rng.exponential(mean)))
            got = chain()
            end = got.end
            if got.start - start >= phase_s / 2:
                kept[level].append((got.start - prev_end, got))
            prev_end = end
    return kept, probed


def chain_curves(
    levels: list[list[tuple[float, ChainTiming]]],
) -> dict[tuple[str, float], list[float]]:
    """The curves of the two-thread chain, per level: ``duty_threads`` (each chain's work,
    at the level's mean gap between chains), ``chain_gate`` (the chain's gate, woken after
    that gap: over the shortest gaps' its cold start) and, at the worker's mean wait before it was
    woken (gap + gate), ``handoff_worker_chain`` (gate end to the worker running),
    ``chain_first_step`` and ``chain_next_step`` (its first and second worker steps: the
    first pays the wake's cold start, the second runs warm; k >= 2 only), and
    ``chain_first_gather`` / ``chain_next_gather`` (the gather of each: where in the step
    the cold start falls), and at the gate's mean wait before it was woken
    ``handoff_gate_chain`` (the arrival's put to the gate running; chains with their puts
    stamped only). The chain's worker steps are timed in two parts each, the
    gather and the expert (:func:`worker_step_halves`), then the completion."""
    found: dict[tuple[str, float], list[float]] = {}
    for kept in levels:
        if not kept:  # a phase too short to keep a chain: no point at this level
            continue
        gaps = [gap for gap, _ in kept]
        timings = [t for _, t in kept]
        gap = float(np.mean(gaps))
        found[("duty_threads", gap)] = [t.work_s for t in timings]
        found[("chain_gate", gap)] = [t.gate_end - t.gate_start for t in timings]
        waited = float(np.mean([g + (t.gate_end - t.gate_start) for g, t in kept]))
        found[("handoff_worker_chain", waited)] = [t.handoff_s for t in timings]
        hands = [t.gate_start - t.put for t in timings if t.put is not None]
        if len(hands) == len(timings):
            # the gate waited from the last chain's gate end to this put: the gap, less this
            # hand-off, plus the last chain's worker part (taken as this chain's)
            waits = [g - h + (t.end - t.gate_end) for (g, t), h in zip(kept, hands, strict=True)]
            found[("handoff_gate_chain", float(np.mean(waits)))] = hands
        if all(len(t.steps_s) >= 5 for t in timings):  # two worker steps before the combine
            parts = [t.steps_s for t in timings]
            found[("chain_first_step", waited)] = [p[0] + p[1] for p in parts]
            found[("chain_next_step", waited)] = [p[2] + p[3] for p in parts]
            found[("chain_first_gather", waited)] = [p[0] for p in parts]
            found[("chain_next_gather", waited)] = [p[2] for p in parts]
    return found


def idle_curves(
    calls: dict[str, Callable[[], float]],
    idle_s: tuple[float, ...],
    n_per_idle: int,
    seed: int,
) -> dict[tuple[str, float], list[float]]:
    """For each named call and idle time, ``n_per_idle`` results of the call made right after
    sleeping that long (0: back to back). Every (call, idle) visit is shuffled into one
    seeded random order (module docstring); each call returns the seconds it measured."""
    visits = [(name, idle) for name in calls for idle in idle_s for _ in range(n_per_idle)]
    order = np.random.default_rng(seed).permutation(len(visits))
    found: dict[tuple[str, float], list[float]] = {(n, i): [] for n in calls for i in idle_s}
    for j in order.tolist():
        name, idle = visits[j]
        if idle > 0:
            time.sleep(idle)
        found[(name, idle)].append(calls[name]())
    return found


def measure_host(
    served: ServedModel, timing: HostTiming, gen: torch.Generator
) -> list[tuple[str, int, float | None, LatencyStats]]:
    """(component, batch_size, idle_s, stats) of every host term except ``dispatch`` (module
    docstring, and :mod:`hw.profiling.server_loops` for the server's own loops). Rows are at
    batch size 1, except that a ``duty`` row carries the k of its chain (its worker steps)
    as ``batch_size``, which the simulator needs to price the chain's steps.

    CPU only: the duty, hand-off and contention effects are those of the host's cores.
    """
    device = served.devices[0]
    k = min(served.cfg.k, served.n_experts)
    pool = torch.randn(4096, served.d_model, generator=gen).to(device, served.dtype)
    x = torch.randn(1, served.n_features, generator=gen).to(device, served.dtype)
    gate = lambda: served.gate(x)  # noqa: E731
    work = worker_step(served, pool)
    collect = collect_call(served, k, gen)

    def completion() -> None:
        outs, w = collect()
        served.combine(outs[None], w[None])

    per_round = {
        "min_calls": -(-timing.min_calls // timing.rounds),
        "min_time_s": timing.min_time_s / timing.rounds,
        "max_time_s": timing.max_time_s / timing.rounds,
    }
    found: dict[tuple[str, float | None], list[float]] = {}
    state: dict[float, LatencyStats] = {}
    stalls: list[tuple[str, float | None, LatencyStats]] = []
    old = sys.getswitchinterval()
    sys.setswitchinterval(timing.switch_interval_s)
    try:
        with torch.inference_mode():
            for r in range(timing.rounds):
                warm = 5 if r == 0 else 1
                plain = {
                    "collect": collect,
                    "gate_alone": gate,
                    "worker_alone": work,
                    "completion_alone": completion,
                }
                for name, call in plain.items():
                    got = measure_samples(call, device=device, warmup=warm, **per_round)
                    found.setdefault((name, None), []).extend(got)
                for name, timed, other in (
                    ("gate_contended", gate, work),
                    ("worker_contended", work, gate),
                    ("completion_contended", completion, gate),
                ):
                    got = contended_samples(
                        timed,
                        other,
                        device=device,
                        switch_interval_s=timing.switch_interval_s,
                        **per_round,
                    )
                    found.setdefault((name, None), []).extend(got)
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
            take, run = worker_step_halves(served, pool)
            with _server_chain(gate, (*[take, run] * k, completion)) as chain:
                for _ in range(5):
                    chain()
                probe = None
                if timing.speed_probe_s > 0:
                    probe = lambda: probe_samples(  # noqa: E731
                        served, timing.speed_probe_s, PROBE_GAP_S, seed, timing.switch_interval_s
                    )
                levels, probed = duty_curve(
                    chain, timing.idle_s, timing.duty_phase_s, timing.duty_visits, seed, probe
                )
                if timing.state_s > 0:
                    with gc_paused():
                        starts, gates = state_samples(
                            lambda: _gate_of(chain()), timing.state_s, STATE_GAP_S, seed
                        )
                    state = state_rows(starts, gates)
                    stalls = stall_rows(starts, gates)
            found.update(chain_curves(levels))
            preempt: list[tuple[str, float | None, LatencyStats]] = []
            if timing.preempt_pairs > 0:
                with gc_paused():
                    for level in preempt_levels(
                        gate, (*[take, run] * k, completion), pairs=timing.preempt_pairs, seed=seed
                    ):
                        preempt += [(c, idle, st) for c, (idle, st) in level_rows(level).items()]
                    cases = join_pairs(
                        gate, (*[take, run] * k, completion), pairs=timing.preempt_pairs, seed=seed
                    )
                preempt += [(c, None, st) for c, st in join_rows(cases).items()]
            if probed:
                found[(SPEED_PROBE, PROBE_GAP_S)] = probed
            with _queue_handoff() as to_gate, _notify_handoff() as to_worker:
                for _ in range(5):
                    to_gate()
                    to_worker()
                curves = idle_curves(
                    {"handoff_gate": to_gate, "handoff_worker": to_worker},
                    timing.idle_s,
                    timing.idle_calls,
                    seed=seed,
                )
            found.update(curves)
            loops = server_loop_overheads(served, max(3, timing.idle_calls // 5))
            penalty_s = max(MIN_PENALTY_S, PENALTY_S * min(1.0, timing.idle_calls / 100))
            loops |= arrival_penalties(served, penalty_s, seed)
            loops |= company_penalties(served, penalty_s / 2, seed)
            found.update({(name, None): got for name, got in loops.items()})
    finally:
        sys.setswitchinterval(old)
    rows = [
        (c, k if c == "duty_threads" else 1, idle, LatencyStats.from_samples(s))
        for (c, idle), s in found.items()
    ]
    rows += [(c, 1, idle, st) for c, idle, st in preempt + stalls]
    tick = kernel_tick_s()
    if tick is not None:  # a machine fact beside the timings: the scheduler's tick
        rows.append((SCHED_TICK, 1, None, LatencyStats.from_samples([tick])))
    return rows + [(STATE_WINDOW, 1, w, st) for w, st in state.items()]


def _gate_of(timing: ChainTiming) -> tuple[float, float]:
    """A chain's gate: its start and wall time (one sample of the machine's state)."""
    return timing.gate_start, timing.gate_end - timing.gate_start
