"""Measured terms of the shared-host model (``docs/system-model.md`` §8), read from a profile.

Kept apart from :mod:`sim.host` (the engine) so the service tables can carry
them without an import cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from sim.errors import SimConfigError
from sim.machine_state import MachineState, StatePath, fit_state
from sim.wake_tails import WakeTails
from traces.profile import (
    COMPANY_PENALTY_COMPONENTS,
    COMPLETION_COMPONENTS,
    GATE_STAMPED_OVERHEAD,
    HOST_COMPONENTS,
    LOOP_COMPONENTS,
    STATE_BLOCK_S,
    STATE_WINDOW,
    LatencyProfile,
    busy_handoff_curve,
    join_shares,
    preempt_curve,
    sched_tick_s,
    stall_terms,
    state_sigma,
)

__all__ = ["HOST_COMPONENTS", "HostTerms"]


@dataclass(frozen=True, eq=False)
class HostTerms:
    """Measured costs of the host model; see the module docstring.

    ``dispatch_s[b]``: host work of gathering a batch of b inputs (index 0 unused);
    ``collect_s``: gathering one request's answers before its combine;
    ``gate_contention_s``: wall time a gate job held in company throughout
    takes beyond its cost alone; ``worker_contention_s``: the same for a
    worker's dispatch, expert and combine jobs (additive contention, system-model
    §8); without them (hand-built terms) ``gate_rate``, ``worker_rate``: speed
    (0, 1] of the gate / a worker while the other is active (1 = no
    interference); ``duty_speed[i]``: speed of the
    host while it is busy a fraction ``duty[i]`` of the time (increasing duty,
    interpolated, held flat outside; empty = always 1); ``duty_chain_s[i]``,
    ``duty_p10[i]``, ``duty_p90[i]``: at that duty, one request's chain (median)
    and its p10 and p90 over that median, the spells the host model draws a
    factor on every step's wall time from, one per chain-long window (empty: none);
    ``handoff_gate_s[i]`` / ``handoff_worker_s[i]``: wall time from handing a
    waiting thread work (an arrival put in the gate's inbox, a batch notified
    to an idle device worker) to that thread running, after it waited
    ``handoff_idle_s[i]`` (interpolated; empty = 0); ``wake_idle_s[i]``: a
    worker's wait before a wake, at which ``wake_handoff_s[i]`` is its hand-off
    measured in the server's two-thread chain (used instead of
    ``handoff_worker_s`` when present) and ``wake_cost_s[i]`` the wall time its
    first step after the wake takes beyond a warm one (empty: none), of which
    ``wake_gather_cost_s[i]`` falls in its gather, the rest in its expert call
    (empty: all in the gather, as profiles without the split are read);
    ``gate_wake_handoff_s[i]``: the gate's hand-off after it waited ``gate_wake_idle_s[i]``,
    measured in the server's two-thread chain (used instead of ``handoff_gate_s`` when
    present: two threads that only wake each other hand off 2-3 times faster than the
    server);
    ``gate_cold_cost_s[i]``: the wall time a gate takes beyond a warm one when the host had
    been idle ``gate_cold_idle_s[i]`` before it (every thread waiting: caches and clocks
    gone cold; interpolated, flat outside; empty: none), and ``gate_cold_spread[i]`` the
    (p10, p90) over the median of such a gate's wall time (empty: none measured);
    ``gate_overhead_s``, ``batch_overhead_s``, ``completion_overhead_s``: the server's own Python
    around the gate call (per request), around a batch's gather and expert
    (per batch) and around a request's collect and combine (per completion);
    ``gate_stamped_overhead_s``: the part of ``gate_overhead_s`` inside the server's own
    gate stamps (the rest lies after them): the model stamps its gate where the server does
    (0: none, as profiles before 2026-12-04 are read);
    ``state``: the machine's state process fitted to the profile's ``state_window`` rows
    (:mod:`sim.machine_state`; None: the profile did not measure it);
    ``preempt_p[i]``: the probability that a gate woken while a worker is at work takes the
    host whole (runs alone, the worker waits until the gate's job ends) on a host busy
    ``preempt_duty[i]`` of the time (increasing, interpolated, flat outside; empty: never);
    a gate holding the host runs at the host's speed, as a gate alone (it has the host to
    itself; the ``preempt_held`` rows' wall time is not read: :meth:`from_profile`);
    ``worker_join_p``: (early, late) the probability that a device worker woken while the
    gate goes straight on runs during that next gate, keeping the host until it waits again,
    the next request having arrived before the gate started or while it ran (empty: never,
    the worker waits for the gate's end);
    ``busy_handoff_s[i]``: (p10, median, p90) of the hand-off to a gate woken while a worker
    is at work, on a host busy ``busy_handoff_duty[i]`` of the time (the woken thread often
    lands on the busy core; empty: ``handoff_gate_s`` as on an idle host);
    ``stall_rate_hz``: the machine's stalls per second, spells in which every step and
    hand-off takes ``stall_factor`` (p10, median, p90) times its wall time for
    ``stall_span_s`` (p10, median, p90) seconds (0: none; ``stall_*`` rows,
    :mod:`traces.stalls`);
    ``stall_times``: instead, the stalls a measured run met, (start on the run's clock,
    span, factor) each, replayed where they were (``sim.run_stalls``; empty: the drawn ones);
    ``absence_times``: the spells a measured run's device workers sat out with a batch
    ready, (device, start on the run's clock, span) each: that worker starts no job
    inside one (``sim.run_absences``; empty: none);
    ``speed_scale``: the host's speed at every duty over the profile's (below 1: a slower
    machine state than the profile's; ``sim.run_speed`` finds it from a measured run);
    ``combine_factor``: a worker's combine job (collect, combine and their loop overhead)
    takes this × its profile's wall time at the host's speed (``sim.run_speed`` reads it from
    a measured run's combines, as the expert calls' factor from its expert calls);
    ``handoff_factor``: a worker's wake (its hand-off and the gather's cold start after a
    wait) takes this × the profile's (``sim.run_speed`` reads it from a measured run's ways
    from a gate to the batch it formed).
    """

    dispatch_s: np.ndarray
    collect_s: float = 0.0
    gate_rate: float = 1.0
    worker_rate: float = 1.0
    duty: tuple[float, ...] = ()
    duty_speed: tuple[float, ...] = ()
    duty_chain_s: tuple[float, ...] = ()
    duty_p10: tuple[float, ...] = ()
    duty_p90: tuple[float, ...] = ()
    handoff_idle_s: tuple[float, ...] = ()
    handoff_gate_s: tuple[float, ...] = ()
    handoff_worker_s: tuple[float, ...] = ()
    wake_idle_s: tuple[float, ...] = ()
    wake_handoff_s: tuple[float, ...] = ()
    gate_wake_idle_s: tuple[float, ...] = ()
    gate_wake_handoff_s: tuple[float, ...] = ()
    wake_cost_s: tuple[float, ...] = ()
    wake_gather_cost_s: tuple[float, ...] = ()
    gate_cold_idle_s: tuple[float, ...] = ()
    gate_cold_cost_s: tuple[float, ...] = ()
    # the gate's wall after each of those idle times spreads (p10, p90) over its median
    # (``chain_gate`` rows); empty: only the spells' and the state's spread
    gate_cold_spread: tuple[tuple[float, float], ...] = ()
    gate_overhead_s: float = 0.0
    gate_stamped_overhead_s: float = 0.0
    batch_overhead_s: float = 0.0
    completion_overhead_s: float = 0.0
    arrival_penalty_gate_s: float = 0.0
    arrival_penalty_worker_s: float = 0.0
    # (gate, worker) penalties with both threads at work (the profile's ``*_company`` rows);
    # empty: the ones above in company too
    arrival_penalty_company_s: tuple[float, ...] = ()
    # additive contention: wall time company adds to a gate job, and to a worker's
    # (dispatch, expert, combine) jobs; None = the fixed rates above
    gate_contention_s: float | None = None
    worker_contention_s: tuple[float, ...] = ()
    # the machine's state measured by hw profile (``state_window`` rows), fitted; None: none
    state: MachineState | None = None
    # the path that state took during a measured run, replayed in place of a drawn one
    # (sim.run_state); None: drawn
    state_path: StatePath | None = None
    # a woken gate taking the host whole from a worker at work (``preempt_*`` rows); empty: never
    preempt_duty: tuple[float, ...] = ()
    preempt_p: tuple[float, ...] = ()
    # the hand-off to a gate woken while a worker is at work, (p10, median, p90) per duty
    # (``preempt_handoff`` rows); empty: the idle host's hand-off (handoff_gate_s)
    busy_handoff_duty: tuple[float, ...] = ()
    busy_handoff_s: tuple[tuple[float, float, float], ...] = ()
    # a worker woken while the gate goes on runs during the next gate, taking the host, with
    # these probabilities (the next request arrived before the gate started, while it ran)
    # (``join_*`` rows); empty: it always waits for the gate's end
    worker_join_p: tuple[float, ...] = ()
    # the machine's stalls (``stall_*`` rows): episodes per second, (p10, median, p90) of
    # their spans and of their factors on every wall time; rate 0: none
    stall_rate_hz: float = 0.0
    stall_span_s: tuple[float, ...] = ()
    stall_factor: tuple[float, ...] = ()
    # the stalls a measured run met (start s, span s, factor), replayed in place of the drawn
    # ones (sim.run_stalls); empty: the drawn ones above, if any
    stall_times: tuple[tuple[float, float, float], ...] = ()
    # the spells a measured run's workers sat out with a batch ready (device, start s, span
    # s), replayed where they were (sim.run_absences); empty: none
    absence_times: tuple[tuple[int, float, float], ...] = ()
    # the kernel scheduler's tick (s): a thread that took the host whole holds it at most
    # until the next one (hw profile's ``sched_tick`` row); 0: until it waits
    sched_tick_s: float = 0.0
    # the tails a measured run's own wake-ups add to these hand-offs (sim.run_wakes); None:
    # the hand-offs as profiled
    wake_tails: WakeTails | None = None
    speed_scale: float = 1.0
    # the combine job's wall time over the profile's at the host's speed (sim.run_speed)
    combine_factor: float = 1.0
    # the worker's wake (its hand-off and the gather's cold start after a wait) over the
    # profile's (sim.run_speed reads it from a measured run's ways from a gate to a batch)
    handoff_factor: float = 1.0

    @property
    def stalls(self) -> bool:
        """Whether the machine stalls in this model: stalls replayed from a run, or drawn."""
        return bool(self.stall_times) or self.stall_rate_hz > 0

    def arrival_penalties(self, together: bool) -> tuple[float, float]:
        """(gate, worker) wall time an arrival costs each thread at work: as measured with
        both threads at work when ``together`` and the profile has it, else alone."""
        if together and self.arrival_penalty_company_s:
            gate, worker = self.arrival_penalty_company_s
            return gate, worker
        return self.arrival_penalty_gate_s, self.arrival_penalty_worker_s

    def worker_contention(self, job: int) -> float | None:
        """Additive contention of a worker's job 0 (dispatch), 1 (expert), 2 (combine)."""
        return self.worker_contention_s[job] if self.worker_contention_s else None

    def speed_at_duty(self, duty: float) -> float:
        """Speed of a host busy ``duty`` of the time, relative to a host always busy as the
        profile measured it: in (0, 1], times ``speed_scale``."""
        if not self.duty:
            return self.speed_scale
        return self.speed_scale * float(np.interp(duty, self.duty, self.duty_speed))

    def spell_at_duty(self, duty: float) -> tuple[float, float, float] | None:
        """(window s, p10, p90) of the host's speed spells at ``duty``: one request's chain
        and its spread, p10 / p90 over the median (None without them)."""
        if not self.duty_chain_s:
            return None
        chain, p10, p90 = (
            float(np.interp(duty, self.duty, c))
            for c in (self.duty_chain_s, self.duty_p10, self.duty_p90)
        )
        return chain, p10, p90

    def gate_handoff(self, waited_s: float) -> float:
        """Seconds from an arrival to the gate running it, the gate having waited ``waited_s``
        (the server's threads' curve where the profile has it, else the two-thread one)."""
        if self.gate_wake_handoff_s:
            return _at(waited_s, self.gate_wake_idle_s, self.gate_wake_handoff_s)
        return _at(waited_s, self.handoff_idle_s, self.handoff_gate_s)

    def worker_handoff(self, waited_s: float) -> float:
        """Seconds from a batch's forming to its idle worker running, after ``waited_s``."""
        if self.wake_handoff_s:
            return _at(waited_s, self.wake_idle_s, self.wake_handoff_s)
        return _at(waited_s, self.handoff_idle_s, self.handoff_worker_s)

    def gate_preempt_p(self, duty: float) -> float:
        """Probability that a woken gate takes the host whole from a worker at work, on a
        host busy ``duty`` of the time (0 without the curve)."""
        return _at(duty, self.preempt_duty, self.preempt_p)

    def gate_busy_handoff(self, duty: float) -> tuple[float, float, float] | None:
        """(p10, median, p90) seconds from an arrival to the gate running it when a worker is
        at work at the arrival, on a host busy ``duty`` of the time (interpolated, flat
        outside; None without the curve: then :meth:`gate_handoff` holds)."""
        if not self.busy_handoff_s:
            return None
        p10, med, p90 = _at_each(duty, self.busy_handoff_duty, self.busy_handoff_s)
        return p10, med, p90

    def worker_join(self, early: bool) -> float:
        """Probability that a worker woken while the gate goes on runs during the next gate
        (and keeps the host until it waits again), the next request having arrived before
        the gate started (``early``) or while it ran (0 without the rows)."""
        if not self.worker_join_p:
            return 0.0
        return self.worker_join_p[0 if early else 1]

    @property
    def shares_lock(self) -> bool:
        """Whether the threads interfere (measured contention, or rates below 1): then a
        worker woken while the gate goes on waits for that gate, as it waits for the lock."""
        return bool(self.gate_contention_s) or self.gate_rate < 1.0 or self.worker_rate < 1.0

    def worker_handoff_after_gate(self, waited_s: float) -> float:
        """Seconds from the end of the gate that kept a woken worker waiting to that worker
        running: the plain notify hand-off (the notifier then blocks), after ``waited_s``."""
        return _at(waited_s, self.handoff_idle_s, self.handoff_worker_s)

    def worker_wake_cost(self, waited_s: float) -> float:
        """Wall seconds a worker's first step after a wake takes beyond a warm step, after
        it waited ``waited_s``: its code and data are cold (0 without the curve)."""
        return _at(waited_s, self.wake_idle_s, self.wake_cost_s)

    def gate_cold_cost(self, idle_s: float) -> float:
        """Wall seconds a gate takes beyond a warm one on a host that had been idle
        ``idle_s`` when it started (0 without the curve)."""
        return _at(idle_s, self.gate_cold_idle_s, self.gate_cold_cost_s)

    def gate_own_spread(
        self, idle_s: float, spell: tuple[float, float] | None
    ) -> tuple[float, float] | None:
        """(p10, p90) over a median of 1 of the gate's own factor on a host idle ``idle_s``:
        the spread the profile measured for gates after such a gap (``gate_cold_spread``,
        interpolated, flat outside) beyond the spells' ``spell`` (their p10, p90), in log
        variance per side: the model draws the spell on every step of a window, the gate's
        cold start after an idle gap spreads more (None: nothing beyond)."""
        if not self.gate_cold_spread:
            return None
        lo, hi = _at_each(idle_s, self.gate_cold_idle_s, self.gate_cold_spread)
        s_lo, s_hi = spell if spell is not None else (1.0, 1.0)
        own_lo = np.log(lo) ** 2 - np.log(min(max(s_lo, 1e-9), 1.0)) ** 2
        own_hi = np.log(hi) ** 2 - np.log(max(s_hi, 1.0)) ** 2
        if own_lo <= 0 and own_hi <= 0:
            return None
        return float(np.exp(-np.sqrt(max(own_lo, 0.0)))), float(np.exp(np.sqrt(max(own_hi, 0.0))))

    def worker_wake_gather_cost(self, waited_s: float) -> float:
        """The part of :meth:`worker_wake_cost` that falls in the woken worker's gather,
        before its batch starts (all of it where the profile does not split it)."""
        total = self.worker_wake_cost(waited_s)
        if not self.wake_gather_cost_s:
            return total
        return min(total, _at(waited_s, self.wake_idle_s, self.wake_gather_cost_s))

    def __post_init__(self) -> None:
        for name in ("gate_rate", "worker_rate"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise SimConfigError(f"host model: {name} must be in (0, 1], got {v}")
        if not (0.0 < self.speed_scale < float("inf")):
            raise SimConfigError(f"host model: speed_scale must be > 0, got {self.speed_scale}")
        for name in ("combine_factor", "handoff_factor"):
            if not (0.0 < getattr(self, name) < float("inf")):
                raise SimConfigError(f"host model: {name} must be > 0, got {getattr(self, name)}")
        if not self.collect_s >= 0 or (np.asarray(self.dispatch_s)[1:] < 0).any():
            raise SimConfigError("host model: dispatch and collect costs must be >= 0")
        if (
            len(self.duty) != len(self.duty_speed)
            or any(not 0.0 < x <= 1.0 for x in self.duty_speed)
            or any(not 0.0 <= u <= 1.0 for u in self.duty)
            or list(self.duty) != sorted(self.duty)
        ):
            raise SimConfigError("host model: one speed in (0, 1] per duty, duties increasing")
        if (
            min(
                self.gate_overhead_s,
                self.batch_overhead_s,
                self.completion_overhead_s,
                self.arrival_penalty_gate_s,
                self.arrival_penalty_worker_s,
            )
            < 0
        ):
            raise SimConfigError("host model: loop overheads must be >= 0")
        company = self.arrival_penalty_company_s
        if company and (len(company) != 2 or not all(0 <= x < float("inf") for x in company)):
            raise SimConfigError(
                "host model: the arrival penalties in company are (gate, worker), each >= 0 "
                f"and finite, got {company}"
            )
        if not 0.0 <= self.gate_stamped_overhead_s <= self.gate_overhead_s:
            raise SimConfigError(
                "host model: the gate's stamped overhead is a part of its loop overhead "
                f"(0 to {self.gate_overhead_s:g} s), got {self.gate_stamped_overhead_s:g}"
            )
        if (self.gate_contention_s is not None and self.gate_contention_s < 0) or (
            self.worker_contention_s
            and (len(self.worker_contention_s) != 3 or min(self.worker_contention_s) < 0)
        ):
            raise SimConfigError(
                "host model: contention is a gate time and (dispatch, expert, combine) "
                "worker times, all >= 0"
            )
        if not 0.0 <= self.sched_tick_s < 1.0:
            raise SimConfigError(
                f"host model: the scheduler tick is 0 (none) or a time under 1 s, "
                f"got {self.sched_tick_s}"
            )
        path = self.state_path
        if path is not None and (
            not (0.0 < path.window_s < float("inf") and np.isfinite(path.start_s))
            or any(not 0.0 < f < float("inf") for f in path.factors)
        ):
            raise SimConfigError(
                "host model: a state path has windows > 0 s and factors > 0, all finite"
            )
        for curve in (self.handoff_gate_s, self.handoff_worker_s):
            if curve and (len(curve) != len(self.handoff_idle_s) or min(curve) < 0):
                raise SimConfigError("host model: one hand-off time >= 0 per idle time")
        for curve in (self.wake_handoff_s, self.wake_cost_s, self.wake_gather_cost_s):
            if curve and (len(curve) != len(self.wake_idle_s) or min(curve) < 0):
                raise SimConfigError("host model: one wake time >= 0 per wake idle time")
        if len(self.gate_wake_handoff_s) != len(self.gate_wake_idle_s) or (
            self.gate_wake_handoff_s and min(self.gate_wake_handoff_s) < 0
        ):
            raise SimConfigError("host model: one gate wake hand-off >= 0 per gate wait")
        if self.duty_chain_s and (
            not len(self.duty_chain_s) == len(self.duty_p10) == len(self.duty_p90) == len(self.duty)
            or min(self.duty_chain_s) <= 0
            or any(
                not 0.0 < lo <= 1.0 <= hi
                for lo, hi in zip(self.duty_p10, self.duty_p90, strict=True)
            )
        ):
            raise SimConfigError(
                "host model: per duty, a chain > 0 and its p10 <= 1 <= p90 over the median"
            )
        if list(self.wake_idle_s) != sorted(self.wake_idle_s):
            raise SimConfigError("host model: wake idle times must increase")
        if (
            len(self.gate_cold_cost_s) != len(self.gate_cold_idle_s)
            or list(self.gate_cold_idle_s) != sorted(self.gate_cold_idle_s)
            or any(not c >= 0 for c in self.gate_cold_cost_s)
        ):
            raise SimConfigError(
                "host model: one gate cold cost >= 0 per idle time, idle times increasing"
            )
        if self.gate_cold_spread and (
            len(self.gate_cold_spread) != len(self.gate_cold_idle_s)
            or any(not 0.0 < lo <= 1.0 <= hi for lo, hi in self.gate_cold_spread)
        ):
            raise SimConfigError(
                "host model: one gate spread 0 < p10 <= 1 <= p90 (over the median) per cold "
                "idle time"
            )
        if (
            len(self.preempt_p) != len(self.preempt_duty)
            or any(not 0.0 <= p <= 1.0 for p in self.preempt_p)
            or any(not 0.0 <= u <= 1.0 for u in self.preempt_duty)
            or list(self.preempt_duty) != sorted(self.preempt_duty)
        ):
            raise SimConfigError(
                "host model: one preemption probability in [0, 1] per duty, duties increasing"
            )
        if self.worker_join_p and (
            len(self.worker_join_p) != 2 or any(not 0.0 <= p <= 1.0 for p in self.worker_join_p)
        ):
            raise SimConfigError(
                "host model: the woken worker's join is two probabilities in [0, 1] (the next "
                "request early, late)"
            )
        if (
            len(self.busy_handoff_s) != len(self.busy_handoff_duty)
            or any(not 0.0 < lo <= med <= hi for lo, med, hi in self.busy_handoff_s)
            or list(self.busy_handoff_duty) != sorted(self.busy_handoff_duty)
        ):
            raise SimConfigError(
                "host model: one busy hand-off 0 < p10 <= median <= p90 per duty, duties increasing"
            )
        if not 0.0 <= self.stall_rate_hz < float("inf") or (
            self.stall_rate_hz > 0
            and (
                len(self.stall_span_s) != 3
                or len(self.stall_factor) != 3
                or not 0.0 < self.stall_span_s[0] <= self.stall_span_s[1] <= self.stall_span_s[2]
                or not 1.0 <= self.stall_factor[0] <= self.stall_factor[1] <= self.stall_factor[2]
            )
        ):
            raise SimConfigError(
                "host model: stalls need a rate >= 0 and, above 0, spans 0 < p10 <= median <= "
                "p90 and factors 1 <= p10 <= median <= p90"
            )
        starts = [t for t, _, _ in self.stall_times]
        if starts != sorted(starts) or any(
            not (math.isfinite(t) and 0.0 < span < math.inf and 1.0 <= factor < math.inf)
            for t, span, factor in self.stall_times
        ):
            raise SimConfigError(
                "host model: replayed stalls need finite starts in order, spans > 0 and "
                "factors >= 1"
            )
        if any(
            not (device >= 0 and math.isfinite(t) and 0.0 < span < math.inf)
            for device, t, span in self.absence_times
        ) or [t for _, t, _ in self.absence_times] != sorted(t for _, t, _ in self.absence_times):
            raise SimConfigError(
                "host model: replayed worker absences need a device >= 0, finite starts in "
                "order and spans > 0"
            )

    def absences_of(self, device: int) -> list[tuple[float, float]]:
        """(start, end) of the replayed absences of ``device``'s worker, in start order
        (:attr:`absence_times`)."""
        return [(t, t + span) for d, t, span in self.absence_times if d == device]

    @classmethod
    def neutral(cls, max_batch: int) -> HostTerms:
        """No host costs and no interference: the host engine then runs the ideal model."""
        return cls(np.zeros(max_batch + 1))

    @classmethod
    def from_profile(cls, profile: LatencyProfile, max_batch: int) -> HostTerms | None:
        """The host terms ``hw profile`` measured, or None when the profile lacks any of them.

        The contention is ``gate_contended - gate_alone`` and ``worker_contended -
        worker_alone`` (each pair measured in alternation by ``hw profile``,
        ``hw.profiling.host``; floored at 0), the worker's split over its
        dispatch and expert jobs as the timed worker step's dispatch and expert
        at batch size 1 relate; the combine job's is ``completion_contended -
        completion_alone`` (collect then combine, timed the same way), or in
        profiles without that pair the worker step's per unit of cost. The
        ratios ``alone / contended`` (capped at 1) are kept as ``gate_rate`` /
        ``worker_rate`` for reference. Each ``duty_threads`` row is one request's chain
        (gate, k = ``batch_size`` worker steps, collect, combine) measured
        in a steady phase of mean idle gap ``idle_s`` between chains, the gate in
        one thread and the rest in another as the server runs them (older
        profiles' ``duty`` rows: all in one thread, which misses what the
        threads' alternation costs, ×1.5–2.5 on this box): its duty
        is chain ÷ (chain + idle), its speed the sum of the same steps' costs
        as the model runs them (the ``gate`` and ``combine`` rows, ``dispatch``
        and the first expert at batch size 1, ``collect``) ÷ this chain (capped
        at 1), so the curve also absorbs the noise of those isolated timings.
        Even back to back the chain costs more than its steps timed one kind at
        a time (each step finds the others' code and data in the caches).
        The chain's own p10 and p90 over its median at each level (where the profile
        has them) are the machine's spells at that duty: the host model draws a factor
        on every step's wall time from them, one per chain-long window.
        The speeds are made non-decreasing in duty (pool-adjacent-violators):
        a busier host is never slower, and a non-monotone measured curve is the
        noise of the shared machine. Older profiles' ``wake`` rows
        (one call after one sleep) are not read: the host's speed follows its
        duty over the last tens of milliseconds, not the last gap (system-model §8).
        The hand-off curves are the ``handoff_gate`` / ``handoff_worker`` rows
        (profiles older than them have none: no hand-off time); older profiles'
        ``handoff_worker_busy`` rows are not read (the notified worker waits for the
        going-on gate's end in the server, not what that curve times). The overheads
        and penalties are the ``gate_overhead``, ``batch_overhead``,
        ``completion_overhead``, ``arrival_penalty_gate`` and
        ``arrival_penalty_worker`` rows (``hw.profiling.server_loops``,
        ``hw.profiling.arrival_penalty``; none measured: 0), and with both threads at work
        the ``arrival_penalty_*_company`` rows (none: the ones alone). The machine's state is fitted
        to the ``state_window`` rows (σ_w = ln(p90 / p10) / 2.563 per window length, within
        blocks of ``traces.profile.STATE_BLOCK_S``; :func:`sim.machine_state.fit_state`). The gate's
        preemption per level of load is the ``preempt_held`` gates' share of those counted
        (``samples`` of ``preempt_held`` and ``preempt_shared``), at the level's duty
        busy ÷ (busy + idle) from its ``preempt_busy`` row (``hw.profiling.preemption``).
        The held gates' wall time (the ``preempt_held`` rows' latency) is not read: a gate
        holding the host has it to itself and runs at the host's speed, as a gate alone.
        Read as a speed of its own (against the profile's gate, over the duty speed at the
        level) it moved from profile to profile more than any effect it had on the median:
        0.91-1.29 in block 19, 0.64-0.86 and 1.13-1.40 in block 36's two profiles, taken 8
        minutes apart. From the first, block 36's B = 1 run 5 at 500 req/s read +113 % on
        p99 (stalls off), and −4.5 % with that profile's held speed replaced by the other's
        (``benchmarks/README.md``, "Fidelity, session 24").
        """
        got = {c: profile.component_latency_s(c) for c in HOST_COMPONENTS}
        if any(v is None for v in got.values()):
            return None
        dispatch = np.zeros(max_batch + 1)
        dispatch[1:] = [profile.component_latency_s("dispatch", b) for b in range(1, max_batch + 1)]
        v: dict[str, float] = {c: float(x) for c, x in got.items() if x is not None}
        comps = profile.components
        duty: tuple[float, ...] = ()
        speed: tuple[float, ...] = ()
        spells: tuple[tuple[float, ...], ...] = ((), (), ())
        duty_rows = "duty_threads"  # timed in the server's two threads; older profiles: "duty"
        phases = _idle_curve(comps, duty_rows)
        if phases is None:
            duty_rows = "duty"
            phases = _idle_curve(comps, duty_rows)
        gate, combine = (profile.component_latency_s(c, 1) for c in ("gate", "combine"))
        expert1 = profile.latency_s(min(profile.experts), 1)
        worker = float(dispatch[1]) + expert1  # the worker step the chain and the pair time
        wake = _wake_curves(profile.source, comps)
        gate_wake = _idle_curve(comps, "handoff_gate_chain")
        cold = _gate_cold_curve(comps)
        charged_cold = None  # the gate's cold start, where it was taken out of the duty chains
        if phases is not None and len(phases[0]) > 1 and gate is not None and combine is not None:
            assert comps is not None
            k = int(comps.filter(pl.col("component") == duty_rows)["batch_size"][0])
            steps = float(gate) + k * worker + v["collect"] + float(combine)
            chains = list(phases[1])
            if wake is not None and duty_rows == "duty_threads":
                # the model charges the wake's cold start apart: take it out of each level
                if len(wake[2]) != len(chains):
                    raise SimConfigError(
                        f"{profile.source}: chain_first_step/chain_next_step need one row "
                        "per duty_threads level"
                    )
                chains = [c - w for c, w in zip(chains, wake[2], strict=True)]
            if cold is not None and duty_rows == "duty_threads":
                # and the gate's cold start after the level's gaps, charged apart too
                if cold[0] != phases[0]:
                    raise SimConfigError(
                        f"{profile.source}: chain_gate rows must come at the duty_threads "
                        "levels' idle times"
                    )
                chains = [c - g for c, g in zip(chains, cold[1], strict=True)]
                charged_cold = cold
            spread = _spread(comps, duty_rows)
            pairs = sorted(
                (chain / (chain + idle), min(1.0, steps / chain), raw, lo, hi)
                for idle, chain, raw, (lo, hi) in zip(
                    phases[0], chains, phases[1], spread, strict=True
                )
            )
            duty = tuple(p[0] for p in pairs)
            speed = tuple(float(x) for x in _non_decreasing([p[1] for p in pairs]))
            if all(p[3] > 0 for p in pairs):
                spells = tuple(tuple(p[i] for p in pairs) for i in (2, 3, 4))
        gate_h, worker_h = _idle_curve(comps, "handoff_gate"), _idle_curve(comps, "handoff_worker")
        if (gate_h is None) != (worker_h is None) or (
            gate_h and worker_h and gate_h[0] != worker_h[0]
        ):
            raise SimConfigError(
                f"{profile.source}: handoff_gate and handoff_worker rows must come together, "
                "at the same idle times"
            )
        handoff_idle = () if gate_h is None else gate_h[0]
        over = {c: profile.component_latency_s(c) for c in LOOP_COMPONENTS}
        gate_overhead = float(over["gate_overhead"] or 0.0)
        stamped = profile.component_latency_s(GATE_STAMPED_OVERHEAD)
        combine_cost = v["collect"] + float(combine or 0.0)
        extra_w = max(0.0, v["worker_contended"] - v["worker_alone"])
        pair = [profile.component_latency_s(c) for c in COMPLETION_COMPONENTS]
        if pair[0] is not None and pair[1] is not None:  # the combine's own pair
            extra_c = max(0.0, float(pair[1]) - float(pair[0]))
        else:  # older profiles: the worker step's per unit of cost
            extra_c = extra_w * combine_cost / worker
        curve = [] if comps is None else preempt_curve(comps, profile.source)
        handoffs = [] if comps is None else busy_handoff_curve(comps, profile.source)
        joins = None if comps is None else join_shares(comps, profile.source)
        stalls = None if comps is None else stall_terms(comps, profile.source)
        return cls(
            gate_contention_s=max(0.0, v["gate_contended"] - v["gate_alone"]),
            worker_contention_s=(
                extra_w * float(dispatch[1]) / worker,
                extra_w * expert1 / worker,
                extra_c,
            ),
            dispatch_s=dispatch,
            collect_s=v["collect"],
            gate_rate=min(1.0, v["gate_alone"] / v["gate_contended"]),
            worker_rate=min(1.0, v["worker_alone"] / v["worker_contended"]),
            duty=duty,
            duty_speed=speed,
            duty_chain_s=spells[0],
            duty_p10=spells[1],
            duty_p90=spells[2],
            handoff_idle_s=handoff_idle,
            handoff_gate_s=() if gate_h is None else gate_h[1],
            handoff_worker_s=() if worker_h is None else worker_h[1],
            wake_idle_s=() if wake is None else wake[0],
            wake_handoff_s=() if wake is None else wake[1],
            gate_wake_idle_s=() if gate_wake is None else gate_wake[0],
            gate_wake_handoff_s=() if gate_wake is None else gate_wake[1],
            wake_cost_s=() if wake is None else wake[2],
            wake_gather_cost_s=() if wake is None else wake[3],
            gate_cold_idle_s=() if charged_cold is None else charged_cold[0],
            gate_cold_cost_s=() if charged_cold is None else charged_cold[1],
            gate_cold_spread=() if charged_cold is None else _gate_spread(comps),
            gate_overhead_s=gate_overhead,
            gate_stamped_overhead_s=min(gate_overhead, max(0.0, float(stamped or 0.0))),
            batch_overhead_s=float(over["batch_overhead"] or 0.0),
            completion_overhead_s=float(over["completion_overhead"] or 0.0),
            arrival_penalty_gate_s=float(over["arrival_penalty_gate"] or 0.0),
            arrival_penalty_worker_s=float(over["arrival_penalty_worker"] or 0.0),
            arrival_penalty_company_s=_company_penalties(profile, over),
            state=_state(comps),
            preempt_duty=tuple(pt.duty for pt in curve),
            preempt_p=tuple(pt.p for pt in curve),
            busy_handoff_duty=tuple(duty for duty, _ in handoffs),
            busy_handoff_s=tuple(spread for _, spread in handoffs),
            worker_join_p=() if joins is None else joins,
            stall_rate_hz=0.0 if stalls is None else stalls.rate_hz,
            stall_span_s=() if stalls is None or not stalls.rate_hz else stalls.span_s,
            stall_factor=() if stalls is None or not stalls.rate_hz else stalls.factor,
            sched_tick_s=(None if comps is None else sched_tick_s(comps, profile.source)) or 0.0,
        )


def _company_penalties(
    profile: LatencyProfile, alone: dict[str, float | None]
) -> tuple[float, ...]:
    """(gate, worker) per-arrival penalties with both threads at work, from the profile's
    ``*_company`` rows (a loop without its row: its penalty alone; neither: empty)."""
    gate, worker = (profile.component_latency_s(c) for c in COMPANY_PENALTY_COMPONENTS)
    if gate is None and worker is None:
        return ()
    return (
        float(alone["arrival_penalty_gate"] or 0.0) if gate is None else gate,
        float(alone["arrival_penalty_worker"] or 0.0) if worker is None else worker,
    )


def _state(comps: pl.DataFrame | None) -> MachineState | None:
    """The state process fitted to the profile's ``state_window`` rows (None without them)."""
    if comps is None or "idle_s" not in comps.columns:
        return None
    rows = comps.filter(pl.col("component") == STATE_WINDOW).sort("idle_s")
    if rows.height == 0:
        return None
    if (
        not {"latency_p10_s", "latency_p90_s"} <= set(rows.columns)
        or rows.select(
            pl.col("idle_s").is_null().any()
            | pl.col("latency_p10_s").is_null().any()
            | pl.col("latency_p90_s").is_null().any()
        ).item()
    ):
        raise SimConfigError("host model: state_window rows need idle_s, p10 and p90")
    lo, hi = rows["latency_p10_s"].to_numpy(), rows["latency_p90_s"].to_numpy()
    if (rows["idle_s"] <= 0).any() or (lo <= 0).any() or (hi < lo).any():
        raise SimConfigError("host model: state_window rows need a window > 0 and 0 < p10 <= p90")
    sigmas = state_sigma(lo, hi)
    if rows["idle_s"].max() >= STATE_BLOCK_S:
        raise SimConfigError(f"host model: state_window rows must be under {STATE_BLOCK_S} s")
    windows = tuple(float(w) for w in rows["idle_s"])
    return fit_state(windows, tuple(float(x) for x in sigmas), STATE_BLOCK_S)


def _non_decreasing(values: list[float]) -> np.ndarray:
    """The least-squares non-decreasing fit to ``values`` (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, count]
    for x in values:
        blocks.append([x, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return np.repeat([m for m, _ in blocks], [int(n) for _, n in blocks])


def _at(waited_s: float, idle_s: tuple[float, ...], curve: tuple[float, ...]) -> float:
    """A curve over idle times at ``waited_s`` (interpolated, flat outside; empty: 0)."""
    if not curve:
        return 0.0
    return float(np.interp(waited_s, idle_s, curve))


def _at_each(
    x: float, xs: tuple[float, ...], points: tuple[tuple[float, ...], ...]
) -> tuple[float, ...]:
    """Each component of ``points`` (one tuple per ``xs``) interpolated at ``x``, flat
    outside."""
    return tuple(float(np.interp(x, xs, column)) for column in zip(*points, strict=True))


def _wake_curves(
    source: object, comps: pl.DataFrame | None
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...], tuple[float, ...]] | None:
    """(worker waits, hand-offs, wake costs, their gather parts) from the two-thread chain's
    curves: the ``handoff_worker_chain`` rows, the ``chain_first_step`` - ``chain_next_step``
    rows (floored at 0: a warm first step costs nothing extra) and the ``chain_first_gather``
    - ``chain_next_gather`` rows (floored at 0, at most the whole; empty where the profile
    lacks them); None without the first three."""
    hand = _idle_curve(comps, "handoff_worker_chain")
    first = _idle_curve(comps, "chain_first_step")
    warm = _idle_curve(comps, "chain_next_step")
    if hand is None or first is None or warm is None:
        return None
    if not hand[0] == first[0] == warm[0]:
        raise SimConfigError(
            f"{source}: handoff_worker_chain, chain_first_step and chain_next_step rows "
            "must come at the same idle times"
        )
    cost = tuple(max(0.0, a - b) for a, b in zip(first[1], warm[1], strict=True))
    first_g, warm_g = (
        _idle_curve(comps, "chain_first_gather"),
        _idle_curve(comps, "chain_next_gather"),
    )
    if first_g is None or warm_g is None:
        return hand[0], hand[1], cost, ()
    if not hand[0] == first_g[0] == warm_g[0]:
        raise SimConfigError(
            f"{source}: chain_first_gather and chain_next_gather rows must come at the "
            "idle times of the chain's other rows"
        )
    parts = zip(first_g[1], warm_g[1], cost, strict=True)
    gather = tuple(min(c, max(0.0, a - b)) for a, b, c in parts)
    return hand[0], hand[1], cost, gather


def _gate_cold_curve(
    comps: pl.DataFrame | None,
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(idle times, cold costs) of the gate from the two-thread chain's ``chain_gate`` rows
    (the gate's wall time after each level's gaps): each level's over the shortest gaps'
    (floored at 0: a gate no slower than the warm one costs nothing extra); None without
    the rows (profiles before session 16)."""
    gate = _idle_curve(comps, "chain_gate")
    if gate is None:
        return None
    idle, wall = gate
    warm = wall[int(np.argmin(idle))]
    return tuple(idle), tuple(max(0.0, w - warm) for w in wall)


def _gate_spread(comps: pl.DataFrame | None) -> tuple[tuple[float, float], ...]:
    """(p10, p90) over the median of the ``chain_gate`` rows by idle time; empty where any
    lacks its spread."""
    if comps is None:
        return ()
    got = _spread(comps, "chain_gate")
    if any(lo <= 0 for lo, _ in got):
        return ()
    return tuple(got)


def _spread(comps: pl.DataFrame, component: str) -> list[tuple[float, float]]:
    """(p10, p90) over the median of each ``component`` row, by idle time; (0, 0) where
    the profile has no spread."""
    rows = comps.filter(pl.col("component") == component).sort("idle_s")
    if not {"latency_p10_s", "latency_p90_s"} <= set(rows.columns):
        return [(0.0, 0.0)] * rows.height
    out = []
    for med, lo, hi in rows.select("latency_s", "latency_p10_s", "latency_p90_s").iter_rows():
        ok = lo is not None and hi is not None and med > 0 and lo <= med <= hi
        out.append((lo / med, hi / med) if ok else (0.0, 0.0))
    return out


def _idle_curve(
    comps: pl.DataFrame | None, component: str
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(idle times, latencies) of a profile's ``component`` rows, by idle time; None if absent."""
    if comps is None or "idle_s" not in comps.columns:
        return None
    rows = comps.filter(pl.col("component") == component).sort("idle_s")
    if rows.height == 0:
        return None
    return tuple(float(x) for x in rows["idle_s"]), tuple(float(x) for x in rows["latency_s"])
