"""The plain, obvious SimPy model: one process per request (the baseline of the benchmark).

A literal reading of ``docs/system-model.md`` in SimPy's own idiom: a
``simpy.Resource`` gate, a :class:`BatchStore` per expert whose ``get`` hands
out B items at once (or whatever is there after a flush), one process per
expert moving formed batches to its device's ready ``simpy.Store``, one
process per device, and ``env.all_of`` so a request completes when all its k
experts have answered. It is slow (several events per request and expert) but
easy to check line by line against the spec; the tests require
:func:`sim.engine.simulate` to give the same completion time for every request.
The overload guard (§1 ``max_backlog``) is not modelled here. Simultaneous
events (an enqueue exactly at a ``max_wait`` deadline) follow
SimPy's scheduling order here, which has probability zero with random arrivals.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from sim.config import SimConfig
from sim.queues import DRAINED, EXACT, FLUSHED
from sim.records import RunResult
from sim.service import ServiceTable, draw_service
from sim.workload import Workload, streams

__all__ = ["BatchStore", "simulate_naive"]


class BatchStore(simpy.Store):
    """FIFO store whose ``get`` yields ``(kind, items)``: B items at once, or all after a flush."""

    def __init__(self, env: simpy.Environment, batch_size: int) -> None:
        super().__init__(env)
        self.batch_size = batch_size
        self._flush_kind: int | None = None

    def flush(self, kind: int) -> None:
        """Let the next get take everything queued (a partial batch)."""
        if self.items:
            self._flush_kind = kind
            self._trigger_get(None)

    def _do_get(self, event: Any) -> None:  # type: ignore[override]
        n = len(self.items)
        if n >= self.batch_size:
            batch = self.items[: self.batch_size]
            del self.items[: self.batch_size]
            event.succeed((EXACT, batch))
        elif self._flush_kind is not None and n:
            batch, self.items = self.items, []
            event.succeed((self._flush_kind, batch))
            self._flush_kind = None
        elif not n:
            self._flush_kind = None


def simulate_naive(config: SimConfig, table: ServiceTable, workload: Workload) -> RunResult:
    """Same contract as :func:`sim.engine.simulate`, one SimPy process per request."""
    env = simpy.Environment()
    n = workload.n_requests
    g, c, wait = config.gate_latency_s, config.combine_latency_s, config.max_wait_s
    device_of = config.device_of()
    rng = streams(config.seed)["service"]
    gate = simpy.Resource(env, capacity=1)
    queues = [BatchStore(env, config.batch_size) for _ in range(config.n_experts)]
    ready = [simpy.Store(env) for _ in range(config.n_devices)]
    answers: list[list[simpy.Event]] = [[] for _ in range(n)]
    gate_start = np.zeros(n)
    gate_done = np.zeros(n)
    completion = np.zeros(n)
    completed_by = np.full(n, -1, dtype=np.int64)
    batches: list[tuple[int, int, int, float, float, float, list[int]]] = []

    def service_time(e: int, size: int) -> float:
        one = draw_service(table, np.array([e]), np.array([size]), config.service, rng)
        return float(one[0]) + config.batch_overhead_s

    def watchdog(e: int, item: tuple[int, simpy.Event]) -> Generator[simpy.Event, None, None]:
        yield env.timeout(wait)  # type: ignore[arg-type]
        if item in queues[e].items:  # still waiting: it is the oldest, flush its queue
            queues[e].flush(FLUSHED)

    def request(i: int) -> Generator[simpy.Event, None, None]:
        with gate.request() as turn:
            yield turn
            gate_start[i] = env.now
            yield env.timeout(g)
        gate_done[i] = env.now
        for e in workload.experts[i][: workload.k[i]].tolist():
            item = (i, env.event())
            answers[i].append(item[1])
            queues[e].put(item)
            if wait is not None:
                env.process(watchdog(e, item))
        if i == n - 1:  # §3 drain: the last request has passed the gate
            for q in queues:
                q.flush(DRAINED)
        yield env.all_of(answers[i])

    def source() -> Generator[simpy.Event, None, None]:
        for i, a in enumerate(workload.arrival_s.tolist()):
            yield env.timeout(a - env.now)
            env.process(request(i))

    def expert(e: int) -> Generator[simpy.Event, None, None]:
        while True:
            kind, items = yield queues[e].get()
            ready[device_of[e]].put((e, kind, env.now, items))

    pending: dict[float, tuple[simpy.Event, list[tuple[int, int]]]] = {}
    done_by: dict[int, list[int]] = {}

    def deliver(t: float) -> None:
        # §5 ties: batches ending at the same instant answer in increasing device index.
        for _, j in sorted(pending.pop(t)[1]):
            items = batch_items[j]
            for _, ev in items:
                ev.succeed()
            done_by[j] = [i for i, _ in items if all(ev.triggered for ev in answers[i])]

    batch_items: list[list[tuple[int, simpy.Event]]] = []

    def device(d: int) -> Generator[simpy.Event, None, None]:
        while True:
            e, kind, formed, items = yield ready[d].get()
            start = env.now
            yield env.timeout(service_time(e, len(items)))
            end = env.now
            j = len(batches)
            batches.append((e, d, kind, formed, start, end, [i for i, _ in items]))
            batch_items.append(items)
            if end not in pending:
                ev = env.timeout(0)
                ev.callbacks.append(lambda _ev, t=end: deliver(t))
                pending[end] = (ev, [])
            pending[end][1].append((d, j))
            yield pending[end][0]
            for i in done_by.pop(j):
                if c:
                    yield env.timeout(c)
                completion[i] = env.now
                completed_by[i] = j

    env.process(source())
    for e in range(config.n_experts):
        env.process(expert(e))
    for d in range(config.n_devices):
        env.process(device(d))
    env.run()

    item_req, item_exp, item_batch = [], [], []
    for j, (e, *_rest, members) in enumerate(batches):
        item_req += members
        item_exp += [e] * len(members)
        item_batch += [j] * len(members)
    cols = list(zip(*batches, strict=True)) if batches else [[]] * 7
    return RunResult(
        config=config,
        arrival_s=workload.arrival_s,
        gate_start_s=gate_start,
        gate_done_s=gate_done,
        enqueue_s=gate_done,
        combine_s=np.full(n, c),
        completion_s=completion,
        combine_batch=completed_by,
        k=workload.k,
        batch_expert=np.asarray(cols[0], dtype=np.int64),
        batch_device=np.asarray(cols[1], dtype=np.int64),
        batch_kind=np.asarray(cols[2], dtype=np.int8),
        batch_size=np.asarray([len(m) for m in cols[6]], dtype=np.int64),
        batch_formed_s=np.asarray(cols[3], dtype=float),
        batch_start_s=np.asarray(cols[4], dtype=float),
        batch_end_s=np.asarray(cols[5], dtype=float),
        item_request=np.asarray(item_req, dtype=np.int64),
        item_expert=np.asarray(item_exp, dtype=np.int64),
        item_batch=np.asarray(item_batch, dtype=np.int64),
    )
