"""The SimPy model of MoE serving (implements ``docs/system-model.md``).

Event structure, chosen for speed (the plain process-per-request version is
``sim.naive``; the benchmark prints the ratio, the tests check both agree
request for request):

- §1 arrivals and §2 routing are drawn up front in numpy (``sim.workload``);
- §2 the gate is one FCFS server (a fixed service time, or per-request
  measured times in replays): its Lindley recursion
  ``start = max(arrival, previous done)`` is a running maximum in numpy (no
  later event can change it);
- §3 batch formation is a pure function of enqueue times (``sim.queues``);
- §4–§5 run in SimPy, one process per device. A device's ready list is FIFO
  in (formation time, expert index) order and every formation time is known,
  so the list *is* the device's batches sorted by that key: the process walks
  it, and when the next batch is not formed yet it sleeps until its formation
  instant (one timeout, no polling) — the same behaviour as a ``simpy.Store``
  fed by a former process, without a put and a get event per batch. After a
  batch, the device counts the answers: a request completes when its counter
  of outstanding experts reaches 0, the equivalent of ``env.all_of`` over its
  k answer events without creating k events per request; the combine step
  then holds the same device (§5).

So SimPy processes about two events per batch, not O(requests × k).
Measured terms of a real run (``sim.terms``) can replace any service time.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace

import numpy as np
import simpy

from sim.config import SimConfig
from sim.errors import SimConfigError
from sim.host import simulate_host
from sim.queues import form_batches
from sim.records import RunResult
from sim.service import ServiceTable, draw_service
from sim.terms import ServiceTerms
from sim.workload import Workload, streams

__all__ = ["backlog_stop", "gate_times", "simulate"]


def gate_times(
    arrival_s: np.ndarray, gate_latency_s: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """§2: one FCFS gate; returns (gate start, gate done) per request.

    The Lindley recursion ``done_i = max(a_i, done_{i-1}) + g_i`` unrolls to
    ``done_i = G_i + max_{j <= i} (a_j - G_{j-1})`` with ``G`` the running sum
    of the service times: a running maximum, vectorized. ``gate_latency_s`` is
    one time for every request or one per request (a replay of measured times).
    """
    g = np.broadcast_to(np.asarray(gate_latency_s, dtype=float), arrival_s.shape)
    if not g.any():
        return arrival_s.copy(), arrival_s.copy()
    before = np.cumsum(g) - g  # G_{i-1}
    start = np.maximum(arrival_s, np.maximum.accumulate(arrival_s - before) + before)
    return start, start + g


def backlog_stop(arrival_s: np.ndarray, completion_s: np.ndarray, max_backlog: int) -> int | None:
    """§1 overload guard: the first request i whose arrival finds ``max_backlog`` in the system.

    Backlog just before request i arrives = i − (completions before its arrival).
    """
    done_before = np.searchsorted(np.sort(completion_s), arrival_s, side="left")
    over = np.flatnonzero(np.arange(len(arrival_s)) - done_before >= max_backlog)
    return int(over[0]) if len(over) else None


def simulate(
    config: SimConfig,
    table: ServiceTable,
    workload: Workload,
    terms: ServiceTerms | None = None,
) -> RunResult:
    """Run one configuration on one workload; deterministic given the config's seed.

    ``terms`` replaces model service times by measured ones where given
    (``sim check --terms replay``, see :mod:`sim.terms`). ``config.host`` runs the
    shared-host model instead (:mod:`sim.host`, system-model §8).

    With the §1 overload guard (``max_backlog``): the run is simulated in full;
    if some arrival finds the backlog at ``max_backlog``, arrivals stop there.
    Everything before that arrival is the same in both runs (no later request
    has arrived yet), so the run is simulated again on the requests before it
    and marked ``stopped_early``.
    """
    one = _simulate
    if config.host:
        if table.host is None:
            raise SimConfigError(
                "the host model needs a profile with the host terms "
                "(dispatch, collect, gate_/worker_ alone/contended: a newer `hw profile`)"
            )
        if terms is not None:
            raise SimConfigError("the host model predicts from the profile; it takes no --terms")

        def one(c: SimConfig, t: ServiceTable, w: Workload, _: ServiceTerms | None) -> RunResult:
            return simulate_host(c, t, w, t.host)  # type: ignore[arg-type]

    result = one(config, table, workload, terms)
    if config.max_backlog is None:
        return result
    stop = backlog_stop(result.arrival_s, result.completion_s, config.max_backlog)
    if stop is None:
        return result
    return replace(one(config, table, workload.head(stop), terms), stopped_early=True)


def _simulate(
    config: SimConfig, table: ServiceTable, workload: Workload, terms: ServiceTerms | None
) -> RunResult:
    n = workload.n_requests
    n_dev = config.n_devices
    terms = terms or ServiceTerms()
    gate = config.gate_latency_s if terms.gate_s is None else terms.gate_s[:n]
    gate_start, gate_done = gate_times(workload.arrival_s, gate)
    enqueue = gate_done
    if terms.enqueue_delay_s is not None:
        enqueue = gate_done + terms.enqueue_delay_s[:n]
    drain_s = float(enqueue.max())
    b = form_batches(
        workload.experts,
        enqueue,
        config.n_experts,
        config.batch_size,
        None if config.max_wait_s is None else config.max_wait_s + terms.flush_lag_s,
        drain_s,
    )
    rng = streams(config.seed)["service"]
    service = draw_service(table, b.expert, b.size, config.service, rng)
    if config.batch_overhead_s:
        service = service + config.batch_overhead_s
    if terms.batch_s is not None or terms.batch_draw is not None:
        service = terms.batch_service(b.expert, b.size, service)
    combine_s = np.full(n, config.combine_latency_s)
    if terms.combine_s is not None:
        combine_s = np.asarray(terms.combine_s[:n], dtype=float)
    device_of = np.asarray(config.device_of(), dtype=np.int64)
    bdev = device_of[b.expert]
    nb = len(b.size)

    env = simpy.Environment()
    starts = [0.0] * nb
    ends = [0.0] * nb
    completion = [0.0] * workload.n_requests
    completed_by = [-1] * workload.n_requests
    remaining = workload.k.tolist()
    members = b.item_request.tolist()
    offsets = b.offset.tolist()
    sizes = b.size.tolist()
    service_l = service.tolist()
    formed_l = b.formed_s.tolist()
    combine_l = combine_s.tolist()
    order = np.lexsort((b.expert, b.formed_s))  # §4: formed first, ties by expert index

    # §5 ties: batches ending at the same instant on several devices deliver their
    # answers in increasing device index, so "the last answer" is well defined. Only
    # matters when a combine step exists and there are several devices.
    ordered_delivery = bool(combine_s.any()) and n_dev > 1
    pending: dict[float, tuple[simpy.Event, list[tuple[int, int]]]] = {}
    batch_combine_s = [0.0] * nb

    def count_answers(j: int, t: float) -> float:
        """Deliver batch j's answers at t; return when this device's combines end."""
        o = offsets[j]
        for r in members[o : o + sizes[j]]:
            left = remaining[r] - 1
            remaining[r] = left
            if left == 0:
                t += combine_l[r]  # §5: combines run one after another on this device
                completion[r] = t
                completed_by[r] = j
        return t

    def resolve(t: float) -> None:
        for _, j in sorted(pending.pop(t)[1]):
            batch_combine_s[j] = count_answers(j, t) - t

    def device(d: int, batches: list[int]) -> Generator[simpy.Event, None, None]:
        for j in batches:
            now = env.now
            if formed_l[j] > now:  # idle until the next batch of this device is formed
                yield env.timeout(formed_l[j] - now)
            starts[j] = env.now
            yield env.timeout(service_l[j])
            t = env.now
            ends[j] = t
            if not ordered_delivery:
                done = count_answers(j, t)
                if done > t:
                    yield env.timeout(done - t)
                continue
            slot = pending.get(t)
            if slot is None:
                # Fires after every batch ending at t (those were scheduled earlier).
                slot = (env.timeout(0), [])
                slot[0].callbacks.append(lambda _ev, t=t: resolve(t))
                pending[t] = slot
            slot[1].append((d, j))
            yield slot[0]
            if batch_combine_s[j]:
                yield env.timeout(batch_combine_s[j])

    dev_sorted = bdev[order]
    for d in range(n_dev):
        env.process(device(d, order[dev_sorted == d].tolist()))
    env.run()
    return RunResult(
        config=config,
        arrival_s=workload.arrival_s,
        gate_start_s=gate_start,
        gate_done_s=gate_done,
        enqueue_s=enqueue,
        combine_s=combine_s,
        completion_s=np.asarray(completion),
        combine_batch=np.asarray(completed_by, dtype=np.int64),
        k=workload.k,
        batch_expert=b.expert,
        batch_device=bdev,
        batch_size=b.size,
        batch_kind=b.kind,
        batch_formed_s=b.formed_s,
        batch_start_s=np.asarray(starts),
        batch_end_s=np.asarray(ends),
        item_request=b.item_request,
        item_expert=b.item_expert,
        item_batch=b.item_batch,
    )
