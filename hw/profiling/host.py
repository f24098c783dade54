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
  the server's GIL switch interval. Alone ÷ contended is the speed of each
  thread when both run (the host model's rates): the cost of two Python
  threads sharing one interpreter lock, measured without a server.
- ``wake`` (one row per idle time ``idle_s``): one request's whole host chain
  at B = 1 (gate, k worker steps, collect, combine) called after the process
  slept ``idle_s``. Chain at idle 0 ÷ chain after ``idle_s`` is the speed of a
  host that wakes from that much idleness (a CPU leaving an idle state runs
  slower for a while: caches, frequency, the hypervisor's scheduling).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hw.profiling.model import ServedModel
from hw.timing import LatencyStats, measure_samples

__all__ = [
    "WAKE_IDLE_S",
    "HostTiming",
    "collect_call",
    "contended_samples",
    "dispatch_call",
    "measure_host",
    "worker_step",
]

WAKE_IDLE_S = (0.0, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)
WAKE_MIN_CALLS = 60  # per idle time: one call per sleep, so the count, not the time, bounds it


@dataclass(frozen=True)
class HostTiming:
    """How the host terms are measured: per point, at least ``min_calls`` calls and
    ``min_time_s`` seconds, spread over ``rounds`` alternating visits."""

    min_calls: int = 40
    min_time_s: float = 0.2
    max_time_s: float = 5.0
    rounds: int = 4
    switch_interval_s: float = 1e-5
    wake_idle_s: tuple[float, ...] = WAKE_IDLE_S


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


def _after_idle(call: Callable[[], Any], idle_s: float, n: int) -> list[float]:
    """``n`` timings of ``call``, each right after sleeping ``idle_s`` (0: back to back)."""
    out = []
    for _ in range(n):
        if idle_s > 0:
            time.sleep(idle_s)
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def measure_host(
    served: ServedModel, timing: HostTiming, gen: torch.Generator
) -> list[tuple[str, float | None, LatencyStats]]:
    """(component, idle_s, stats) of every host term except ``dispatch`` (module docstring).

    CPU only: the wake and contention effects are those of the host's cores.
    """
    device = served.devices[0]
    k = min(served.cfg.k, served.n_experts)
    pool = torch.randn(4096, served.d_model, generator=gen).to(device, served.dtype)
    x = torch.randn(1, served.n_features, generator=gen).to(device, served.dtype)
    gate = lambda: served.gate(x)  # noqa: E731
    work = worker_step(served, pool)
    collect = collect_call(served, k, gen)

    def chain() -> None:
        gate()
        for _ in range(k):
            work()
        outs, w = collect()
        served.combine(outs[None], w[None])

    per_round = {
        "min_calls": -(-timing.min_calls // timing.rounds),
        "min_time_s": timing.min_time_s / timing.rounds,
        "max_time_s": timing.max_time_s / timing.rounds,
    }
    found: dict[tuple[str, float | None], list[float]] = {}
    old = sys.getswitchinterval()
    sys.setswitchinterval(timing.switch_interval_s)
    try:
        with torch.inference_mode():
            for r in range(timing.rounds):
                warm = 5 if r == 0 else 1
                plain = {"collect": collect, "gate_alone": gate, "worker_alone": work}
                for name, call in plain.items():
                    got = measure_samples(call, device=device, warmup=warm, **per_round)
                    found.setdefault((name, None), []).extend(got)
                for name, timed, other in (
                    ("gate_contended", gate, work),
                    ("worker_contended", work, gate),
                ):
                    got = contended_samples(
                        timed,
                        other,
                        device=device,
                        switch_interval_s=timing.switch_interval_s,
                        **per_round,
                    )
                    found.setdefault((name, None), []).extend(got)
                for _ in range(warm):
                    chain()
                for idle in timing.wake_idle_s:
                    calls = -(-max(timing.min_calls, WAKE_MIN_CALLS) // timing.rounds)
                    got = _after_idle(chain, idle, calls)
                    found.setdefault(("wake", idle), []).extend(got)
    finally:
        sys.setswitchinterval(old)
    return [(c, idle, LatencyStats.from_samples(s)) for (c, idle), s in found.items()]
