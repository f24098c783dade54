"""The shared host CPU of the real CPU server (``docs/system-model.md`` §8), in SimPy.

Why a second engine: the fast engine (``sim.engine``) computes the gate and
the queues up front because nothing a device does feeds back into them. On
the CPU server that is false: the gate thread and the device worker threads
are Python threads of one process, sharing the interpreter lock (GIL) and the
cores, so a busy worker slows the gate down and the gate slows the worker. The
gate's done instants then depend on the devices, and the whole run has to be
simulated event by event: one gate process, the size-B queues applied as
requests pass the gate, one worker process per device, and one
:class:`SharedHost` on which every step's host work runs.

:class:`SharedHost` is discriminatory processor sharing: a thread alone on the
host runs its step at full speed (its isolated, measured cost); while the gate
and a worker are both active, company adds wall time to each job: a job of
size W whose whole run in company costs E more runs at W ÷ (W + E) of full
speed while shared (additive contention, ``docs/system-model.md`` §8). The
E of the gate and of a worker step are measured by ``hw profile`` as the
call's cost while the other step loops in a second thread minus its cost
alone (``HostTerms.from_profile``), so no number comes from the run being
predicted. Hand-built terms without E use fixed rates ``gate_rate`` and
``worker_rate`` instead. By default (:class:`~sim.config.HostLock` ``even``)
both threads keep those rates throughout an overlap; with ``whole`` they are the
threads' expected speeds at each draw of who wins the interpreter lock whole (at
each start or end of a job, :meth:`SharedHost._draw_holder`), so that a worker's
steps can wait out several gates in a row. Apart from either, a gate woken while a
worker has a job may take the host whole (:meth:`SharedHost.work` with ``whole``): with
the probability ``hw profile`` measured at the run's duty
(:meth:`~sim.host_terms.HostTerms.gate_preempt_p`), it runs alone, at the host's speed
(as a gate alone: it has the host to itself), and every other thread waits, until the
gate thread next waits on its inbox. Likewise a device worker woken while the gate goes
straight on to its next request either waits for that gate's end or, with the
probability measured for where the next request arrived
(:meth:`~sim.host_terms.HostTerms.worker_join`), runs during it and keeps the host, at
its own speed, until it waits again.

The host's speed depends on how busy it is: measured isolated costs are those
of a host kept busy, and a host busy a fraction u of the time runs its steps
at the measured duty speed v(u) ≤ 1 (caches and clock of a CPU that keeps
going idle). The run's own duty depends on that speed (slower steps keep the
host busier), so :func:`simulate_host` solves v(u(s)) = s for the speed s,
simulating the run once per step. Around that speed the machine has spells:
each window as long as one request's chain, every step's wall time is
multiplied by a factor drawn from that chain's measured spread at the run's
duty, so that a request's steps share their slowness as in the server; the
measured cold starts below stretch with the spell and the machine's state as the
work does (the profile measured both on whole chains, cold starts included).
Every arrival that finds the gate waiting, and every batch that finds its
worker waiting, first pays the measured hand-off time of waking that thread (plus, in
``sim check``'s replay of a run, a draw from the tail of that run's own wake-ups of its
kind: ``HostTerms.wake_tails``, :mod:`sim.run_wakes`),
and a woken worker's next step also pays the measured cold start of a first
step after a wake; a worker woken by a gate thread that goes straight on to
its next request runs only once that gate is done (the gate thread keeps the
interpreter lock meanwhile), after the plain hand-off; every arrival also
costs each thread then at work the measured penalty of the load generator's
wake-up; and the server's own loops add their measured overheads to the gate,
dispatch and combine jobs (the gate stamped done where the server stamps it, after
the part of its loop inside the server's stamps).

Host work per step (all isolated costs from the profile): the gate; per
batch of b samples, the dispatch (gathering its inputs, ``dispatch`` rows)
then the expert call; per completing request, collecting its k answers and
weights (``collect``) then the combine.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Generator

import numpy as np
import simpy

from sim.config import HostLock, SimConfig
from sim.errors import SimConfigError
from sim.host_terms import HostTerms
from sim.machine_state import MachineState, StatePath, state_factors
from sim.queues import DRAINED, EXACT, FLUSHED
from sim.records import RunResult
from sim.service import ServiceTable, draw_service, two_piece_lognormal, two_piece_normal
from sim.wake_tails import WakeTails
from sim.workload import Workload, streams
from traces.profile import STATE_BLOCK_S

__all__ = ["GATE", "SharedHost", "simulate_host"]

GATE = -1  # the gate thread's id on the host; device workers are 0..D-1
_EPS_S = 1e-15  # remaining work below this is done (float round-off of rate × time)


class SharedHost:
    """One host shared by threads: discriminatory processor sharing (module docstring).

    A thread runs one step at a time: ``yield from host.work(thread, seconds)``
    returns when ``seconds`` of isolated work are done at the speeds the set of
    active threads allows. A single pending timeout (the next completion) is
    kept; a change of the active set re-plans it and older timeouts are ignored.
    ``lock_draw``: the lock is won or lost whole, drawn from this generator
    (:meth:`_draw_holder`); None shares it evenly (each thread at its rate).
    """

    def __init__(
        self,
        env: simpy.Environment,
        gate_rate: float,
        worker_rate: float,
        speed: float = 1.0,
        lock_draw: np.random.Generator | None = None,
    ) -> None:
        self.env = env
        self.gate_rate = gate_rate
        self.worker_rate = worker_rate
        self._speed = speed
        self._base = speed
        self.busy_s = 0.0  # time with at least one thread at work
        self._idle_since = 0.0  # when the last job ended (the host idle since, if none runs)
        self._left: dict[int, float] = {}  # thread -> remaining isolated work, s
        self._shared: dict[int, float] = {}  # thread -> its job's W / (W + speed·E) with company
        self._done: dict[int, simpy.Event] = {}
        self._since = 0.0
        self._plan = 0  # version of the pending timeout
        self._lock_draw = lock_draw
        self._held: dict[int, float] = {}  # thread -> its share of the speed under the draw
        self._spell = 1.0  # the current spell's factor on wall times
        self._state = 1.0  # the machine state's factor on wall times
        self._stall = 1.0  # a stall's factor on wall times (1: none now)
        self._holder: int | None = None  # a thread that took the host whole for its job

    @property
    def speed(self) -> float:
        """The host's speed alone now: the run's duty speed, over the current spell's factor."""
        return self._speed

    @property
    def steady_speed(self) -> float:
        """The run's duty speed without the spell's and the state's factors: a wall time w
        measured by ``hw profile`` is ``w × steady_speed`` of work, so that it stretches with
        the spell and the state of the moment as every step does (the profile measured
        those on whole chains, cold starts included)."""
        return self._base

    def set_spell(self, factor: float) -> None:
        """From now on every step takes ``factor`` times its wall time at the run's speed
        (a slow spell of the machine above 1, a fast one below), times the state's."""
        self._advance()
        self._spell = factor
        self._speed = self._base / (factor * self._state * self._stall)
        self._replan()

    def set_state(self, factor: float) -> None:
        """The machine's state (SimConfig.state_sigma): a factor on every step's wall time
        on top of the current spell's."""
        self._state = factor
        self.set_spell(self._spell)

    @property
    def stall(self) -> float:
        """The factor of the machine's stall of the moment on every wall time (1: none)."""
        return self._stall

    def set_stall(self, factor: float) -> None:
        """A stall of the machine (HostTerms.stall_factor) starts (``factor`` > 1) or ends
        (1): every step takes that factor times its wall time on top of the spell's and the
        state's."""
        self._stall = factor
        self.set_spell(self._spell)

    def rate(self, thread: int) -> float:
        """Speed of ``thread`` now: the host's speed alone, times its rate with company."""
        if len(self._left) <= 1:
            return self._speed
        if self._holder is not None:
            return self._speed if thread == self._holder else 0.0
        if self._held:
            return self._speed * self._held[thread]
        return self._speed * self._even_rate(thread)

    def _even_rate(self, thread: int) -> float:
        """``thread``'s rate with company, the lock shared evenly: its job's
        W / (W + speed·E), or the thread's fixed rate."""
        shared = self._shared.get(thread)
        if shared is not None:
            return shared
        return self.gate_rate if thread == GATE else self.worker_rate

    def _draw_holder(self) -> None:
        """With exactly two threads at work and the lock won whole, draw who runs until the
        next start or end of a job (:class:`~sim.config.HostLock`).

        With even rates a and b: where a + b <= 1, one thread runs at a + b while the
        other waits, the first with probability a / (a + b); else both run at full speed
        with probability a + b - 1, the first alone with 1 - b, the second alone with
        1 - a. Either way each thread's expected rate is its even one."""
        self._held = {}
        if self._lock_draw is None or len(self._left) != 2:
            return
        first, second = sorted(self._left)
        a, b = self._even_rate(first), self._even_rate(second)
        u = float(self._lock_draw.random())
        if a + b <= 1.0:
            first_holds = u * (a + b) < a
            self._held = {
                first: a + b if first_holds else 0.0,
                second: 0.0 if first_holds else a + b,
            }
        elif u < a + b - 1.0:
            self._held = {first: 1.0, second: 1.0}
        elif u < a:
            self._held = {first: 1.0, second: 0.0}
        else:
            self._held = {first: 0.0, second: 1.0}

    def work(
        self,
        thread: int,
        seconds: float,
        contention_s: float | None = None,
        whole: bool = False,
    ) -> Generator[simpy.Event, None, None]:
        """``seconds`` of isolated work; ``contention_s``: the wall time company adds to this
        whole job (then its rate with company is ``W / (W + speed·contention_s)``), else
        the thread's fixed rate applies. ``whole``: the job takes the host whole, running
        alone while every other thread waits until it ends (a woken gate preempting a
        worker, :meth:`~sim.host_terms.HostTerms.gate_preempt_p`; a woken worker joining
        the gate, :meth:`~sim.host_terms.HostTerms.worker_join`)."""
        if seconds <= 0:
            return
        self._advance()
        if whole:
            self._holder = thread
        self._left[thread] = seconds
        if contention_s is None:
            self._shared.pop(thread, None)
        else:
            self._shared[thread] = seconds / (seconds + self._speed * contention_s)
        done = self._done[thread] = self.env.event()
        self._draw_holder()
        self._replan()
        yield done

    def release(self, thread: int) -> None:
        """``thread`` gives back the host it took whole, if it still holds it: from now on
        the threads at work share it again (the scheduler's tick, HostTerms.sched_tick_s)."""
        if self._holder != thread:
            return
        self._advance()
        self._holder = None
        self._draw_holder()
        self._replan()

    def active(self) -> list[int]:
        """The threads with a job on the host now."""
        return list(self._left)

    def idle_s(self) -> float:
        """How long the host has had no job at all (0 while one runs)."""
        return 0.0 if self._left else self.env.now - self._idle_since

    def delay_active(self, gate_s: float, worker_s: float) -> None:
        """Add to each thread now at work the work it would do in ``gate_s`` / ``worker_s`` of
        wall time at its current rate: the interpreter lock taken from it by another
        thread's wake-up (measured as wall time, so priced at the rate when it lands)."""
        if not self._left or (gate_s <= 0 and worker_s <= 0):
            return
        self._advance()
        for t in self._left:
            self._left[t] += (gate_s if t == GATE else worker_s) * self.rate(t)
        self._replan()

    def _advance(self) -> None:
        """Bring every remaining amount to now, at the rates of the set active since then."""
        now = self.env.now
        dt = now - self._since
        if dt > 0 and self._left:
            self.busy_s += dt
            for t in self._left:
                self._left[t] -= dt * self.rate(t)
        self._since = now

    def _replan(self) -> None:
        self._plan += 1
        if not self._left:
            return
        dt = min(left / r for t, left in self._left.items() if (r := self.rate(t)) > 0)
        ev = self.env.timeout(max(dt, 0.0))
        ev.callbacks.append(lambda _ev, v=self._plan: self._fire(v))

    def _fire(self, version: int) -> None:
        if version != self._plan:
            return
        self._advance()
        finished = [t for t, left in self._left.items() if left <= _EPS_S * max(1.0, self.env.now)]
        if not finished:  # round-off left a sliver: finish the running thread's that is nearest
            running = [t for t in self._left if self.rate(t) > 0]
            finished = [min(running, key=lambda t: self._left[t] / self.rate(t))]
        for t in sorted(finished):
            del self._left[t]
            self._done.pop(t).succeed()
            if t == self._holder:
                self._holder = None
        if not self._left:
            self._idle_since = self.env.now
        self._draw_holder()
        self._replan()


SPEED_TOLERANCE = 4e-3  # the speed's fixed point is solved to this much (a 0.4-0.8% error
# in host costs, well inside the 5% a prediction is judged by)
MAX_SPEED_STEPS = 12
DUTY_TOLERANCE = 0.005  # a run's spells and preemption taken at a duty this far from its own
SPELL_DRAWS = 4096  # spell factors drawn at a time


def simulate_host(
    config: SimConfig, table: ServiceTable, workload: Workload, host: HostTerms
) -> RunResult:
    """Simulate one run with every step's host work on a :class:`SharedHost` (§8), at the
    host speed s that the run's own duty gives: v(u(s)) = s (module docstring).

    u(s) falls as s rises and v rises with u, so g(s) = v(u(s)) - s falls and
    its root lies in [min v, 1] (times the host's ``speed_scale``, 1 but where a
    check took the run's own speed); a run whose duty at full speed already earns
    full speed (or a profile without a duty curve) runs at full speed. Each step
    simulates the run once; the next speed is the root of the local model
    u(s') = u(s) · s / s' (the busy time of fixed work scales as 1/speed),
    kept inside the bracket the signs of g have narrowed (bisection when it
    falls outside), so two to four runs usually suffice.
    """
    full = host.speed_scale  # the speed of a host always busy
    if not host.duty:
        result, duty = _simulate_at(config, table, workload, host, full, None)
        if _preempts(config, host):  # the preemption follows the run's duty: known now
            result = _simulate_at(config, table, workload, host, full, duty)[0]
        return result
    lo, hi = full * min(host.duty_speed), full
    speed = hi
    duty: float | None = None
    for _ in range(MAX_SPEED_STEPS):
        used = duty  # the duty this run's spells and preemption are taken at
        result, duty = _simulate_at(config, table, workload, host, speed, used)
        gap = host.speed_at_duty(duty) - speed
        if abs(gap) <= SPEED_TOLERANCE * full or (speed == full and gap >= 0):
            break
        if gap > 0:
            lo = speed
        else:
            hi = speed
        if hi - lo <= SPEED_TOLERANCE * full:
            break
        guess = _local_root(host, duty * speed, lo, hi)
        speed = guess if lo < guess < hi else 0.5 * (lo + hi)
    # the spells and the preemption follow the duty: a run that took them at the duty of
    # the step before (at another speed: 0.13 against its own 0.27 on the shipped 250 req/s
    # run at B = 1) runs again at its own
    stale = used is None or abs(used - duty) > DUTY_TOLERANCE
    if stale and (host.duty_chain_s or _preempts(config, host)):
        result = _simulate_at(config, table, workload, host, speed, duty)[0]
    return result


def _preempts(config: SimConfig, host: HostTerms) -> bool:
    """Whether the run's woken gate follows the preemption the profile measured at the
    run's duty (its taking the host whole, its hand-off from a busy host), not switched off."""
    return config.gate_preempt and bool(host.preempt_p or host.busy_handoff_s)


def _local_root(host: HostTerms, busy_times_speed: float, lo: float, hi: float) -> float:
    """The s in [lo, hi] with v(min(1, c / s)) = s, c = duty × speed of the last run
    (the local model of the docstring above), by bisection on the cheap curve."""
    a, b = lo, hi
    for _ in range(40):
        mid = 0.5 * (a + b)
        if host.speed_at_duty(min(1.0, busy_times_speed / mid)) >= mid:
            a = mid
        else:
            b = mid
    return 0.5 * (a + b)


def _simulate_at(
    config: SimConfig,
    table: ServiceTable,
    workload: Workload,
    host: HostTerms,
    speed: float,
    duty: float | None,
) -> tuple[RunResult, float]:
    """One run with the host at ``speed``; returns it and the host's duty (busy ÷ span).
    ``duty``: the run's duty as far as known (None: not yet), at which the spells and the
    gate's preemption are taken.

    Follows §1–§5 otherwise, with one difference of detail: events at exactly
    the same instant (a flush deadline and a gate-done, two devices' answers)
    are taken in SimPy's event order, not by the tie rules of §3/§5 — host
    times are sums of stretched costs, so exact ties do not arise in practice.
    """
    n, m, b_max = workload.n_requests, config.n_experts, config.batch_size
    n_dev = config.n_devices
    if len(host.dispatch_s) <= b_max:
        raise SimConfigError(f"host model: dispatch costs cover batches up to {b_max - 1} only")
    device_of = config.device_of()
    draws = streams(config.seed)  # one generator per purpose (sim.workload.streams)
    rng = draws["service"]
    env = simpy.Environment()
    whole = config.host_lock is HostLock.WHOLE
    lock_draw = draws["lock"] if whole else None
    cpu = SharedHost(env, host.gate_rate, host.worker_rate, speed, lock_draw)
    arrival = workload.arrival_s
    experts = workload.experts
    k = workload.k
    gate_start = np.zeros(n)
    gate_done = np.zeros(n)
    completion = np.zeros(n)
    combine_dur = np.zeros(n)
    combine_batch = np.full(n, -1, dtype=np.int64)
    remaining = k.astype(np.int64).tolist()

    queues: list[list[int]] = [[] for _ in range(m)]  # request ids, FIFO
    generation = [0] * m  # bumps whenever a queue empties: stale flush deadlines see it
    ready: list[list[tuple[float, int, int]]] = [[] for _ in range(n_dev)]
    wake: list[simpy.Event | None] = [None] * n_dev
    waker_busy = [False] * n_dev  # the gate went straight on to a gate after waking it
    cold = [0.0] * n_dev  # wall time a woken worker's next step pays for its cold start
    cold_gather = [0.0] * n_dev  # the part of it in that step's gather
    worker_holds = [False] * n_dev  # a woken worker that joined the gate: until it waits
    worker_hold_end = [math.inf] * n_dev  # or until then (the scheduler's tick)
    tick = host.sched_tick_s
    tick_phase = float(draws["tick"].uniform(0.0, tick)) if tick > 0 else 0.0
    preempt_draw = draws["preempt"]
    preempt_p = 0.0 if duty is None or not config.gate_preempt else host.gate_preempt_p(duty)
    busy_handoff = None
    if duty is not None and config.gate_preempt:
        busy_handoff = host.gate_busy_handoff(duty)
    handoff_draw, own_draw, join_draw = draws["handoff"], draws["gate_spread"], draws["join"]
    tails, tail_draw = host.wake_tails or WakeTails(), draws["wake_tail"]
    spell = None if duty is None else host.spell_at_duty(duty)  # (window, p10, p90)
    stalling = config.host_stalls and host.stalls
    spell_spread = None if spell is None else (spell[1], spell[2])
    b_expert: list[int] = []
    b_kind: list[int] = []
    b_formed: list[float] = []
    b_members: list[list[int]] = []
    b_service: list[float] = []
    b_start: list[float] = []
    b_end: list[float] = []
    state = {"drained": False, "gate_goes_on": False, "next_early": False, "gate_holds": False}
    gate_job: list[simpy.Event] = [env.event()]  # succeeds when the gate's current job ends

    def form(e: int, kind: int) -> None:
        j = len(b_expert)
        members = queues[e]
        queues[e] = []
        generation[e] += 1
        b_expert.append(e)
        b_kind.append(kind)
        b_formed.append(env.now)
        b_members.append(members)
        size = np.array([len(members)])
        b_service.append(float(draw_service(table, np.array([e]), size, config.service, rng)[0]))
        b_start.append(np.nan)
        b_end.append(np.nan)
        d = device_of[e]
        heapq.heappush(ready[d], (env.now, e, j))
        ev = wake[d]
        if ev is not None and not ev.triggered:
            goes_on = kind == EXACT and state["gate_goes_on"]
            if goes_on and joins():  # the woken worker runs during the next gate, keeping
                goes_on, worker_holds[d] = False, True  # the host until it waits again
                worker_hold_end[d] = hold_until(d)  # or until the scheduler's next tick
            waker_busy[d] = goes_on
            ev.succeed()

    def flush_at(e: int, gen: int) -> Callable[[simpy.Event], None]:
        def fire(_ev: simpy.Event) -> None:
            if generation[e] == gen and queues[e] and not state["drained"]:
                form(e, FLUSHED)

        return fire

    def gate() -> Generator[simpy.Event, None, None]:
        free_since = 0.0  # when the gate last finished a request
        holds = False  # the gate thread took the host whole when last woken: kept until it
        # waits, or until the scheduler's next tick
        gate_hold_end = math.inf
        for i in range(n):
            if arrival[i] > env.now:  # the gate waits on its inbox: the arrival must wake it
                waited = arrival[i] - free_since
                if busy_handoff is None and not stalling:  # the wake-up is known now
                    hand = host.gate_handoff(waited) + tails.draw(tails.gate_idle, tail_draw)
                    yield env.timeout(arrival[i] - env.now + hand)
                else:  # what the arrival meets decides the wake-up
                    yield env.timeout(arrival[i] - env.now)
                    if busy_handoff is not None and any(t != GATE for t in cpu.active()):
                        # a worker at work when the arrival comes makes it longer
                        hand = two_piece_lognormal(handoff_draw, *busy_handoff)
                        hand += tails.draw(tails.gate_busy, tail_draw)
                    else:
                        hand = host.gate_handoff(waited) + tails.draw(tails.gate_idle, tail_draw)
                    yield env.timeout(hand * cpu.stall)  # a stall slows the wake-up too
                holds = preempts()
                if holds:
                    gate_hold_end = hold_until(GATE)
            if holds and env.now >= gate_hold_end:  # the tick gave the waiting worker its core
                holds = False
            gate_start[i] = env.now
            gate_job[0] = env.event()
            # a gate on a host idle for a while runs cold: measured wall time, as work
            idle_s = cpu.idle_s()
            cold_s = host.gate_cold_cost(idle_s) * cpu.steady_speed
            # the server stamps its gate done after the call and the part of its loop's
            # overhead inside its stamps; the rest of the loop (storing, the queues and the
            # batch forming under the lock) runs after the stamp. The job's contention is
            # split in proportion, so the two parts run at the whole job's rate.
            stamped = config.gate_latency_s + host.gate_stamped_overhead_s + cold_s
            after = host.gate_overhead_s - host.gate_stamped_overhead_s
            own = host.gate_own_spread(idle_s, spell_spread)
            if own is not None:  # the gate after an idle gap spreads beyond the spells
                factor = two_piece_lognormal(own_draw, own[0], 1.0, own[1])
                stamped, after = stamped * factor, after * factor
            contention = host.gate_contention_s
            share = stamped / (stamped + after) if after > 0 else 1.0
            yield from cpu.work(
                GATE,
                stamped,
                None if contention is None else contention * share,
                whole=holds,
            )
            gate_done[i] = env.now
            yield from cpu.work(
                GATE,
                after,
                None if contention is None else contention * (1.0 - share),
                whole=holds,
            )
            gate_job[0].succeed()
            free_since = env.now
            state["gate_goes_on"] = i + 1 < n and arrival[i + 1] <= env.now
            state["next_early"] = i + 1 < n and arrival[i + 1] <= gate_start[i]
            state["gate_holds"] = holds
            for e in experts[i, : k[i]].tolist():  # increasing expert index (§3)
                q = queues[e]
                q.append(i)
                if len(q) == b_max:
                    form(e, EXACT)
                elif len(q) == 1 and config.max_wait_s is not None:
                    env.timeout(config.max_wait_s).callbacks.append(flush_at(e, generation[e]))
        state["drained"] = True
        for e in range(m):
            if queues[e]:
                form(e, DRAINED)
        for d in range(n_dev):
            ev = wake[d]
            if ev is not None and not ev.triggered:
                ev.succeed()

    def hold_until(thread: int) -> float:
        """When a hold ``thread`` takes now ends at the latest: the scheduler's next tick
        (HostTerms.sched_tick_s, at one phase for the run), when the idle core takes over
        the thread kept waiting; the host is released then. Without a tick, never."""
        if tick <= 0:
            return math.inf
        end = tick_phase + (math.floor((env.now - tick_phase) / tick) + 1) * tick
        env.timeout(end - env.now).callbacks.append(lambda _ev: cpu.release(thread))
        return end

    def joins() -> bool:
        """Whether a worker woken while the gate goes on runs during the next gate: drawn
        with the measured probability for where the next request arrived
        (HostTerms.worker_join); never while the gate holds the host whole or where the
        threads do not share the lock."""
        p = host.worker_join(state["next_early"])
        if p <= 0 or state["gate_holds"] or not host.shares_lock:
            return False
        return float(join_draw.random()) < p

    def preempts() -> bool:
        """Whether the gate, woken now, takes the host whole from the workers at work: drawn
        with the probability at the run's duty (HostTerms.gate_preempt_p)."""
        if preempt_p <= 0 or all(t == GATE for t in cpu.active()):
            return False
        return float(preempt_draw.random()) < preempt_p

    def worker(d: int) -> Generator[simpy.Event, None, None]:
        away = host.absences_of(d)  # (start, end) of the run's absences, in order
        next_away = 0
        while True:
            if not ready[d]:
                worker_holds[d] = False
                if state["drained"]:
                    return
                since = env.now
                wake[d] = env.event()
                yield wake[d]
                if ready[d]:  # woken by a batch: the notified thread takes a while to run
                    waited = env.now - since
                    if waker_busy[d] and host.shares_lock:  # the gate keeps the lock meanwhile
                        waker_busy[d] = False
                        yield gate_job[0]
                        hand = host.worker_handoff_after_gate(waited) * host.handoff_factor
                        hand += tails.draw(tails.worker_after_gate, tail_draw)
                        yield env.timeout(hand * cpu.stall)
                    else:
                        hand = host.worker_handoff(waited) * host.handoff_factor
                        hand += tails.draw(tails.worker, tail_draw)
                        yield env.timeout(hand * cpu.stall)
                        cold[d] = host.worker_wake_cost(waited)
                        cold_gather[d] = host.worker_wake_gather_cost(waited)
                continue
            while next_away < len(away) and away[next_away][0] <= env.now:
                if env.now < away[next_away][1]:  # the run's worker sat this out: so does it
                    yield env.timeout(away[next_away][1] - env.now)
                next_away += 1
            j = heapq.heappop(ready[d])[2]
            if worker_holds[d] and env.now >= worker_hold_end[d]:
                worker_holds[d] = False
            members = b_members[j]
            # the cold start is measured wall time, as work (SharedHost.steady_speed); it
            # falls partly in the gather (before the batch's start), partly in the expert
            gather_cold, expert_cold = cold_gather[d], cold[d] - cold_gather[d]
            cold[d] = cold_gather[d] = 0.0
            yield from cpu.work(
                d,
                float(host.dispatch_s[len(members)])
                + host.batch_overhead_s
                + host.handoff_factor * gather_cold * cpu.steady_speed,
                host.worker_contention(0),
                whole=worker_holds[d],
            )
            b_start[j] = env.now
            yield from cpu.work(
                d,
                b_service[j] + expert_cold * cpu.steady_speed,
                host.worker_contention(1),
                whole=worker_holds[d],
            )
            b_end[j] = env.now
            completing = []
            for r in members:  # every answer is delivered at the batch's end
                remaining[r] -= 1
                if remaining[r] == 0:
                    completing.append(r)
            for r in completing:  # then the combines, in batch order (§5)
                t0 = env.now
                combine_s = host.combine_factor * (
                    host.collect_s + config.combine_latency_s + host.completion_overhead_s
                )
                yield from cpu.work(d, combine_s, host.worker_contention(2), whole=worker_holds[d])
                completion[r] = env.now
                combine_dur[r] = env.now - t0
                combine_batch[r] = j

    def generator() -> Generator[simpy.Event, None, None]:
        """The load generator's wake-ups: each costs the threads at work its penalty."""
        for t in arrival.tolist():
            if t > env.now:
                yield env.timeout(t - env.now)
            cpu.delay_active(*host.arrival_penalties(len(cpu.active()) > 1))

    def spells(window_s: float, p10: float, p90: float) -> Generator[simpy.Event, None, None]:
        """The machine's spells: a new factor on every step's wall time each window (one
        request's chain), drawn with the chain's measured p10 and p90 over its median."""
        draw = draws["host"]
        ones = np.ones(SPELL_DRAWS)
        while True:
            for f in two_piece_normal(draw, ones, p10, p90).tolist():
                cpu.set_spell(f)
                yield env.timeout(window_s)

    def machine_state(state: MachineState) -> Generator[simpy.Event, None, None]:
        """The machine's state (SimConfig.state_sigma): every ``window_s`` a new factor,
        log-normal AR(1) with lag-one correlation ``rho``, mean 1 over each block of
        STATE_BLOCK_S (:func:`sim.machine_state.state_factors`)."""
        for factor in state_factors(state, draws["state"], STATE_BLOCK_S):
            cpu.set_state(factor)
            yield env.timeout(state.window_s)

    def stalls() -> Generator[simpy.Event, None, None]:
        """The machine's stalls: Poisson at the measured rate, each a factor on every wall
        time for a span, both drawn from their measured p10, median and p90
        (HostTerms.stall_*; two-piece log-normal, the factor at least 1)."""
        draw = draws["stall"]
        while True:
            yield env.timeout(float(draw.exponential(1.0 / host.stall_rate_hz)))
            factor = max(1.0, two_piece_lognormal(draw, *host.stall_factor))
            span = two_piece_lognormal(draw, *host.stall_span_s)
            cpu.set_stall(factor)
            yield env.timeout(span)
            cpu.set_stall(1.0)

    def replayed_stalls() -> Generator[simpy.Event, None, None]:
        """The stalls a measured run met (HostTerms.stall_times), each where it was; one
        that would start inside the one before starts at its end."""
        for start, span, factor in host.stall_times:
            if start > env.now:
                yield env.timeout(start - env.now)
            cpu.set_stall(factor)
            yield env.timeout(span)
            cpu.set_stall(1.0)

    def replayed_state(path: StatePath) -> Generator[simpy.Event, None, None]:
        """The state's path during a measured run (HostTerms.state_path), window by window
        on the run's clock; 1 before and after."""
        if path.start_s > env.now:
            yield env.timeout(path.start_s - env.now)
        for factor in path.factors:
            cpu.set_state(factor)
            yield env.timeout(path.window_s)
        cpu.set_state(1.0)

    if stalling:
        env.process(replayed_stalls() if host.stall_times else stalls())
    run_state = config.machine_state(host.state)  # the set one, else the profile's
    if run_state is not None and host.state_path is not None and config.state_sigma is None:
        env.process(replayed_state(host.state_path))
    elif run_state is not None:
        env.process(machine_state(run_state))
    penalties = (host.arrival_penalty_gate_s, host.arrival_penalty_worker_s)
    if any(x > 0 for x in (*penalties, *host.arrival_penalty_company_s)):
        env.process(generator())
    procs = [env.process(gate())] + [env.process(worker(d)) for d in range(n_dev)]
    if spell is not None:
        env.process(spells(*spell))
    env.run(until=simpy.AllOf(env, procs))

    nb = len(b_expert)
    sizes = np.array([len(x) for x in b_members], dtype=np.int64)
    item_request = np.array([r for x in b_members for r in x], dtype=np.int64)
    item_batch = np.repeat(np.arange(nb), sizes)
    bexp = np.asarray(b_expert, dtype=np.int64)
    span = env.now - float(arrival[0]) if n else 0.0
    duty = cpu.busy_s / span if span > 0 else 0.0
    return RunResult(
        config=config,
        arrival_s=arrival,
        gate_start_s=gate_start,
        gate_done_s=gate_done,
        enqueue_s=gate_done.copy(),
        combine_s=combine_dur,
        completion_s=completion,
        combine_batch=combine_batch,
        k=k,
        batch_expert=bexp,
        batch_device=np.asarray(device_of, dtype=np.int64)[bexp] if nb else bexp,
        batch_size=sizes,
        batch_kind=np.asarray(b_kind, dtype=np.int8),
        batch_formed_s=np.asarray(b_formed, dtype=float),
        batch_start_s=np.asarray(b_start, dtype=float),
        batch_end_s=np.asarray(b_end, dtype=float),
        item_request=item_request,
        item_expert=bexp[item_batch] if nb else item_request,
        item_batch=item_batch,
    ), duty
