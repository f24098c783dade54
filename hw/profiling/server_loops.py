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

(The load generator's per-arrival penalties, timed on the same loops:
:mod:`hw.profiling.arrival_penalty`.)

Each overhead is a difference of a loop and its bare calls timed in the same
round, one after the other, so that the machine's drift (±20% between
timings a few seconds apart on this box) cancels; the row is the median over
rounds, floored at 0. The simulator adds them to the gate, dispatch and
combine jobs (``sim.host_terms.HostTerms.from_profile``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from hw.profiling.errors import ProfilingError
from hw.profiling.model import ServedModel
from hw.serving.plan import Workload
from hw.serving.server import QueuedServer

__all__ = [
    "LOOP_REQUESTS",
    "run_gate_loop",
    "run_worker_loop",
    "server_loop_overheads",
    "synthetic_requests",
]

LOOP_REQUESTS = 32  # requests per timed round: one sample = one round's time / its units


def server_loop_overheads(served: ServedModel, rounds: int) -> dict[str, list[float]]:
    """``rounds`` paired samples of each overhead (module docstring), after one untimed round."""
    dev = served.devices[0]
    wl, x = synthetic_requests(served)
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


def synthetic_requests(
    served: ServedModel, n: int = LOOP_REQUESTS, k: int | None = None
) -> tuple[Workload, torch.Tensor]:
    """``n`` requests, all routed to the first k experts of device 0 (default the model's k),
    and their inputs."""
    on_first = [e for e in range(served.n_experts) if served.placement[e] == 0]
    k = min(served.cfg.k if k is None else k, len(on_first))
    if k < 1:
        raise ProfilingError("no expert is placed on device 0: cannot time the server's loops")
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
    start, end = run_gate_loop(server, wl, x)
    gate_s = end - start
    stamped = np.full(wl.n, np.nan)
    if timed is not None:
        calls = np.asarray(timed.calls_s)
        if len(calls) != wl.n:
            raise ProfilingError("server loop timing: one gate call per request expected")
        stamped = server._gate_done[: wl.n] - server._gate_start[: wl.n] - calls
        server.served = served
    if not completing:
        server._remaining[:] = len(_experts_of(wl)) + 1
    start, end = run_worker_loop(server, wl.n if completing else 0)
    return gate_s, stamped, end - start


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


def run_gate_loop(server: QueuedServer, wl: Workload, x: torch.Tensor) -> tuple[float, float]:
    """Run the server's gate loop over every request of ``wl`` (the inbox filled up front, the
    server reset first); its (start, end) ``perf_counter`` times."""
    server._reset(wl, x)
    server._t0 = time.perf_counter()
    for i in range(wl.n):
        server._arrival[i] = 0.0
        server._inbox.put(i)
    server._inbox.put(None)
    t0 = time.perf_counter()
    server._gate_loop()
    t1 = time.perf_counter()
    _raise_failure(server)
    return t0, t1


def run_worker_loop(server: QueuedServer, completing: int) -> tuple[float, float]:
    """Run device 0's worker loop over the batches the gate loop formed; its (start, end)
    ``perf_counter`` times. ``completing``: the completions it must reach (else an error)."""
    t0 = time.perf_counter()
    server._worker_loop(0)
    t1 = time.perf_counter()
    _raise_failure(server)
    if server._completed != completing:
        raise ProfilingError("server loop timing: unexpected completions")
    return t0, t1


def _raise_failure(server: QueuedServer) -> None:
    if server._error is not None:
        raise ProfilingError(f"server loop timing failed: {server._error!r}") from server._error
