"""The real server's own gate and worker loops, timed as units (``docs/system-model.md`` §8).

The host model prices each step by its isolated call (``gate``, ``dispatch``,
expert, ``collect``, ``combine``), but the server's threads run more Python
than those calls: stamping, the queues and ready lists under the lock, the
heap of ready batches, delivering answers, counting completions. That work
holds the interpreter lock, so besides its own time it slows the other
thread. Here :class:`~hw.serving.server.QueuedServer`'s own ``_gate_loop`` and
``_worker_loop`` run in this thread on synthetic requests (B = 1, every
request routed to the same k experts of device 0), back to back:

- ``gate_overhead``: per request, the gate thread's whole loop (take from the
  inbox, gate, store, enqueue and form k batches under the lock) minus the
  bare gate call;
- ``gate_stamped_overhead``: the part of it inside the server's own
  ``gate_start`` / ``gate_done`` stamps (the loop's stamps, the routing
  lookup and storing the gate's output): per request its stamped time minus
  its own gate call, timed inside the loop; the median request, so that
  the model stamps its gate where the server does and reads the run's gate
  walls like for like (``sim.run_speed``);
- ``batch_overhead``: per batch of one sample whose answer completes no
  request, the worker loop (lock, heap pop, gather, expert, delivery) minus
  the bare gather and expert;
- ``completion_overhead``: per request, the worker loop over its k batches,
  the last completing it, minus k such batches and the bare collect and
  combine.

- ``arrival_penalty_gate`` / ``arrival_penalty_worker``: wall time each
  arrival costs the gate loop / the worker loop while it runs: the loop timed
  while a load-generator thread (exponential sleeps at ``PENALTY_RATE_RPS``,
  then a ``SimpleQueue.put``, as ``QueuedServer.run`` does) wakes up, minus
  the loop alone in the same round, divided by the arrivals during it. Each
  wake-up takes the interpreter lock from the loop, and winning it back
  costs far more than the generator's own few microseconds (150–250 µs per
  arrival on this box).

Each overhead is a difference of a loop and its bare calls timed in the same
round, one after the other, so that the machine's drift (±20% between
timings a few seconds apart on this box) cancels; the row is the median over
rounds, floored at 0. The simulator adds them to the gate, dispatch and
combine jobs (``sim.host_terms.HostTerms.from_profile``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from hw.profiling.errors import ProfilingError
from hw.profiling.model import ServedModel
from hw.serving.plan import Workload
from hw.serving.server import QueuedServer

__all__ = ["LOOP_REQUESTS", "PENALTY_RATE_RPS", "arrival_penalties", "server_loop_overheads"]

LOOP_REQUESTS = 32  # requests per timed round: one sample = one round's time / its units
PENALTY_RATE_RPS = 1000.0  # the generator's arrival rate while the penalties are measured
PENALTY_BLOCKS = 4  # loop rounds per penalty sample (about 40 arrivals)


def server_loop_overheads(served: ServedModel, rounds: int) -> dict[str, list[float]]:
    """``rounds`` paired samples of each overhead (module docstring), after one untimed round."""
    dev = served.devices[0]
    wl, x = _synthetic_requests(served)
    n, experts = wl.n, _experts_of(wl)
    k = len(experts)
    h = torch.zeros(n, served.d_model, device=dev, dtype=served.dtype)
    answers = [torch.zeros(served.d_model, device=dev, dtype=served.dtype)] * k
    weights = [1.0 / k] * k
    out: dict[str, list[float]] = {
        "gate_overhead": [],
        "gate_stamped_overhead": [],
        "batch_overhead": [],
        "completion_overhead": [],
    }

    def bare_gate() -> None:
        for i in range(n):
            served.gate(x[i : i + 1])

    def bare_batches() -> None:
        for i in range(n):
            for e in experts:
                served.expert(e, served.gather(h, [i], dev))

    def bare_completions() -> None:
        for _ in range(n):
            outs, w = served.collect(answers, weights, dev)
            served.combine(outs[None], w[None])

    with torch.inference_mode():
        for r in range(rounds + 1):
            t: dict[str, float] = {}
            for completing in (True, False):
                # the completing round's gate loop runs plain (its time: gate_overhead),
                # the other's with its gate calls timed (its stamps: the stamped part)
                gate_s, stamped, worker_s = _server_round(
                    served, wl, x, completing, time_gate_calls=not completing
                )
                if completing:
                    t["gate_loop"] = gate_s
                t["worker_request" if completing else "worker_batch"] = worker_s
            for name, call in (
                ("gate", bare_gate),
                ("batches", bare_batches),
                ("completions", bare_completions),
            ):
                t0 = time.perf_counter()
                call()
                t[name] = time.perf_counter() - t0
            if r == 0:
                continue  # warm-up round
            per_batch = (t["worker_batch"] - t["batches"]) / (n * k)
            out["gate_overhead"].append((t["gate_loop"] - t["gate"]) / n)
            # per request, paired: its stamped time minus its own gate call (timed inside
            # the loop), the median request (the model adds it to every gate, and a run's
            # speed is read from its median gate)
            out["gate_stamped_overhead"].append(float(np.median(stamped)))
            out["batch_overhead"].append(per_batch)
            out["completion_overhead"].append(
                (t["worker_request"] - t["worker_batch"] - t["completions"]) / n
            )
    return out


def arrival_penalties(served: ServedModel, rounds: int, seed: int) -> dict[str, list[float]]:
    """``rounds`` paired samples of the per-arrival penalty of each loop (module docstring)."""
    wl, x = _synthetic_requests(served)

    def gate_loops() -> None:
        for _ in range(PENALTY_BLOCKS):
            _gate_round(QueuedServer(served, 1), wl, x)

    def worker_loops() -> None:
        for _ in range(PENALTY_BLOCKS):
            _server_round(served, wl, x, completing=True)

    out: dict[str, list[float]] = {"arrival_penalty_gate": [], "arrival_penalty_worker": []}
    rng = np.random.default_rng(seed)
    with torch.inference_mode():
        gate_loops()  # warm-up
        worker_loops()
        for _ in range(rounds):
            for name, loops in (("arrival_penalty_gate", gate_loops),
                                ("arrival_penalty_worker", worker_loops)):  # fmt: skip
                t0 = time.perf_counter()
                loops()
                alone = time.perf_counter() - t0
                with _generator(rng) as count:
                    t0 = time.perf_counter()
                    before = count[0]
                    loops()
                    loaded = time.perf_counter() - t0
                    arrivals = count[0] - before
                out[name].append((loaded - alone) / max(arrivals, 1))
    return out


@contextmanager
def _generator(rng: np.random.Generator) -> Iterator[list[int]]:
    """A thread that sleeps exponential gaps at PENALTY_RATE_RPS and puts into a queue,
    like the server's load generator; yields its running count of arrivals."""
    stop = threading.Event()
    count = [0]
    gaps = rng.exponential(1.0 / PENALTY_RATE_RPS, size=100_000).tolist()

    def run() -> None:
        inbox: queue.SimpleQueue[int] = queue.SimpleQueue()
        next_at = time.perf_counter()
        for gap in gaps:
            if stop.is_set():
                return
            next_at += gap
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            inbox.put(count[0])
            count[0] += 1

    thread = threading.Thread(target=run, name="penalty-generator", daemon=True)
    thread.start()
    time.sleep(0.005)
    try:
        yield count
    finally:
        stop.set()
        thread.join()


def _synthetic_requests(served: ServedModel) -> tuple[Workload, torch.Tensor]:
    """LOOP_REQUESTS requests, all routed to the first k experts of device 0, and inputs."""
    on_first = [e for e in range(served.n_experts) if served.placement[e] == 0]
    k = min(served.cfg.k, len(on_first))
    if k < 1:
        raise ProfilingError("no expert is placed on device 0: cannot time the server's loops")
    n = LOOP_REQUESTS
    return Workload(np.zeros(n), [on_first[:k]] * n, [[1.0 / k] * k] * n), served.inputs(n)


def _experts_of(wl: Workload) -> list[int]:
    assert wl.experts is not None
    return wl.experts[0]


def _server_round(
    served: ServedModel,
    wl: Workload,
    x: torch.Tensor,
    completing: bool,
    time_gate_calls: bool = False,
) -> tuple[float, np.ndarray, float]:
    """A fresh server's gate loop over every request, then its worker loop over the batches
    formed; seconds of each, and per request the seconds inside the gate loop's own gate
    stamps beyond its gate call (``time_gate_calls``: each call timed inside the loop, which
    adds its own microsecond to the loop; else NaN). ``completing=False``: answers are
    delivered but no request ever completes (only the per-batch work is timed)."""
    timed = _TimedGate(served) if time_gate_calls else None
    server = QueuedServer(timed or served, 1)  # type: ignore[arg-type]
    gate_s = _gate_round(server, wl, x)
    stamped = np.full(wl.n, np.nan)
    if timed is not None:
        calls = np.asarray(timed.calls_s)
        if len(calls) != wl.n:
            raise ProfilingError("server loop timing: one gate call per request expected")
        stamped = server._gate_done[: wl.n] - server._gate_start[: wl.n] - calls
        server.served = served
    if not completing:
        server._remaining[:] = len(_experts_of(wl)) + 1
    t0 = time.perf_counter()
    server._worker_loop(0)
    worker_s = time.perf_counter() - t0
    _raise_failure(server)
    if server._completed != (wl.n if completing else 0):
        raise ProfilingError("server loop timing: unexpected completions")
    return gate_s, stamped, worker_s


class _TimedGate:
    """``served`` with its gate call timed, call by call (the rest passed through): the part
    of the server's gate loop inside its stamps is their difference, request by request."""

    def __init__(self, served: ServedModel) -> None:
        self._served = served
        self.calls_s: list[float] = []

    def gate(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self._served.gate(*args, **kwargs)
        self.calls_s.append(time.perf_counter() - t0)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._served, name)


def _gate_round(server: QueuedServer, wl: Workload, x: torch.Tensor) -> float:
    """Run the gate loop over every request of ``wl`` (the inbox filled up front); seconds."""
    server._reset(wl, x)
    server._t0 = time.perf_counter()
    for i in range(wl.n):
        server._arrival[i] = 0.0
        server._inbox.put(i)
    server._inbox.put(None)
    t0 = time.perf_counter()
    server._gate_loop()
    took = time.perf_counter() - t0
    _raise_failure(server)
    return took


def _raise_failure(server: QueuedServer) -> None:
    if server._error is not None:
        raise ProfilingError(f"server loop timing failed: {server._error!r}") from server._error
