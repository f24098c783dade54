"""The real queued MoE server of ``docs/system-model.md``: one gate thread, size-B expert
queues, one worker thread per device executing real batches, an optional max_wait flusher.

Threads share one lock guarding the queues, the per-device ready lists and
the completion counters, with one condition per kind of waiter (each device
worker, the flusher, the caller) so a wake-up reaches only a thread that can
act on it. torch ops release the GIL while they compute, so the gate and the
device workers overlap as far as the cores allow.
On CUDA each worker (and the gate) runs on its own stream and synchronizes it
before taking a timestamp, so every timestamp is a wall-clock instant at which
the work is done. The open-loop load generator is the calling thread: it never
waits for the server, except that it stops generating when the backlog
(arrived - completed) reaches ``max_backlog``, which bounds the run time under
overload and is reported as overload.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from hw.profiling.errors import ServeError
from hw.profiling.model import ServedModel
from hw.serving.plan import Workload
from traces.serving import RecordRow

__all__ = ["PointResult", "QueuedServer", "prewarm"]


@dataclass
class _Batch:
    id: int
    expert: int
    device: int
    kind: str
    formed_s: float
    members: list[tuple[int, int]]  # (request, slot)
    start_s: float = float("nan")
    end_s: float = float("nan")


@dataclass(frozen=True)
class PointResult:
    """One B of a sweep: its record rows and what the run itself observed."""

    B: int
    rows: list[RecordRow]
    requests: int  # generated (== completed)
    stopped_early: bool
    wall_s: float
    combine_counts: np.ndarray = field(repr=False)  # per request: combines run (1 = exactly once)


def prewarm(served: ServedModel, max_batch: int) -> None:
    """Run every step once at every batch size the run can produce (1..B), untimed, so lazy
    initialization (allocator, kernel selection, CUDA context) lands before the clock."""
    with torch.inference_mode():
        x = served.inputs(2)
        for _ in range(3):
            served.gate(x[:1])
        for e in range(served.n_experts):
            dev = served.devices[served.placement[e]]
            for b in range(1, max_batch + 1):
                served.expert(e, torch.zeros(b, served.d_model, device=dev, dtype=served.dtype))
        k = min(served.cfg.k, served.n_experts)
        for d, dev in enumerate(served.devices):
            outs = torch.zeros(1, k, served.d_model, device=dev, dtype=served.dtype)
            w = torch.full((1, k), 1.0 / k, device=dev, dtype=served.dtype)
            for _ in range(3):
                served.combine(outs, w, device=d)
        for dev in served.devices:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)


class QueuedServer:
    """Serve one workload at one B; :meth:`run` returns its per-(request, expert) records."""

    def __init__(
        self,
        served: ServedModel,
        B: int,
        *,
        max_wait_s: float | None = None,
        warmup: int = 0,
        max_backlog: int = 4096,
        rate_rps: float | None = None,
        gate_k: int | None = None,
        stall_s: float = 60.0,
    ) -> None:
        if B < 1:
            raise ServeError(f"B must be >= 1, got {B}")
        self.served = served
        self.B = B
        self.max_wait_s = max_wait_s
        self.warmup = warmup
        self.max_backlog = max_backlog
        self.rate_rps = rate_rps
        self.gate_k = gate_k
        self.stall_s = stall_s

    # --- shared state, set up per run ------------------------------------------------------

    def _reset(self, wl: Workload, x: torch.Tensor) -> None:
        n, m = wl.n, self.served.n_experts
        self._wl, self._x = wl, x
        # one lock; a condition per waiter kind, so a wake-up goes only to who can act on it
        self._lock = threading.Lock()
        self._dev_cv = [threading.Condition(self._lock) for _ in self.served.devices]
        self._flush_cv = threading.Condition(self._lock)
        self._done_cv = threading.Condition(self._lock)
        self._target = wl.n + 1  # completions the caller waits for; set when arrivals end
        self._inbox: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._queues: list[list[tuple[int, int, float]]] = [[] for _ in range(m)]
        self._ready: list[list[tuple[float, int, int]]] = [[] for _ in self.served.devices]
        self._batches: dict[int, _Batch] = {}
        self._next_batch = 0
        self._gate_finished = False
        self._error: BaseException | None = None
        self._completed = 0
        self._arrival = np.full(n, np.nan)
        self._gate_start = np.full(n, np.nan)
        self._gate_done = np.full(n, np.nan)
        self._combine_start = np.full(n, np.nan)
        self._complete = np.full(n, np.nan)
        self._combine_batch = np.full(n, -1, dtype=np.int64)
        self._combines = np.zeros(n, dtype=np.int64)
        self._remaining = np.zeros(n, dtype=np.int64)
        self._experts: list[list[int]] = [[] for _ in range(n)]
        self._weights: list[list[float]] = [[] for _ in range(n)]
        self._enqueue: list[list[float]] = [[] for _ in range(n)]
        self._batch_of: list[list[int]] = [[] for _ in range(n)]
        self._outs: list[list[torch.Tensor | None]] = [[] for _ in range(n)]
        with torch.inference_mode():
            self._h = torch.zeros(
                n, self.served.d_model, device=self.served.devices[0], dtype=self.served.dtype
            )

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _wake_all(self) -> None:
        """Wake every waiter (end of the gate's work, an error). Called with the lock held."""
        for cv in (*self._dev_cv, self._flush_cv, self._done_cv):
            cv.notify_all()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc
            self._wake_all()

    def _form(self, expert: int, kind: str, now: float) -> None:
        """Move everything queued at ``expert`` into one batch on its device's ready list.

        Called with the condition held."""
        q = self._queues[expert]
        bid = self._next_batch
        self._next_batch += 1
        dev = self.served.placement[expert]
        members = [(i, slot) for i, slot, _ in q]
        self._batches[bid] = _Batch(bid, expert, dev, kind, now, members)
        for i, slot in members:
            self._batch_of[i][slot] = bid
        q.clear()
        heapq.heappush(self._ready[dev], (now, expert, bid))
        self._dev_cv[dev].notify()

    # --- threads ---------------------------------------------------------------------------

    def _stream(self, device: torch.device) -> torch.cuda.Stream | None:
        return torch.cuda.Stream(device) if device.type == "cuda" else None

    def _gate_loop(self) -> None:
        served, wl = self.served, self._wl
        dev0 = served.devices[0]
        stream = self._stream(dev0)
        try:
            with torch.inference_mode(), torch.cuda.stream(stream) if stream else nullcontext():
                while True:
                    i = self._inbox.get()
                    if i is None:
                        break
                    self._gate_start[i] = self._now()
                    h, ex, w = served.gate(self._x[i : i + 1], k=self.gate_k)
                    if wl.experts is not None and wl.weights is not None:
                        experts, weights = wl.experts[i], wl.weights[i]
                    else:
                        pairs = sorted(
                            (e, wt) for e, wt in zip(ex[0].tolist(), w[0].tolist(), strict=True)
                            if e >= 0
                        )  # fmt: skip
                        experts, weights = [p[0] for p in pairs], [p[1] for p in pairs]
                    self._h[i] = h[0]
                    if stream is not None:
                        stream.synchronize()
                    self._gate_done[i] = self._now()
                    k = len(experts)
                    self._experts[i], self._weights[i] = experts, weights
                    self._outs[i] = [None] * k
                    self._batch_of[i] = [-1] * k
                    self._remaining[i] = k
                    with self._lock:
                        now = self._now()
                        self._enqueue[i] = [now] * k
                        new_head = False
                        for slot, e in enumerate(experts):
                            q = self._queues[e]
                            q.append((i, slot, now))
                            if len(q) == self.B:
                                self._form(e, "exact", now)
                            elif len(q) == 1:
                                new_head = True  # a new flush deadline
                        if new_head:
                            self._flush_cv.notify()
            with self._lock:  # drain: the last request has passed the gate
                now = self._now()
                for e, q in enumerate(self._queues):
                    if q:
                        self._form(e, "drain", now)
                self._gate_finished = True
                self._wake_all()
        except BaseException as exc:  # surfaced by run(); a dead thread must not hang it
            self._fail(exc)

    def _flush_loop(self) -> None:
        wait = self.max_wait_s
        assert wait is not None
        try:
            with self._lock:
                while not self._gate_finished and self._error is None:
                    now = self._now()
                    heads = [(q[0][2] + wait, e) for e, q in enumerate(self._queues) if q]
                    due = sorted(e for t, e in heads if t <= now)
                    if due:
                        for e in due:
                            self._form(e, "flush", now)
                        continue
                    timeout = min(t for t, _ in heads) - now if heads else None
                    self._flush_cv.wait(timeout)
        except BaseException as exc:
            self._fail(exc)

    def _worker_loop(self, d: int) -> None:
        served = self.served
        dev = served.devices[d]
        stream = self._stream(dev)
        try:
            with torch.inference_mode(), torch.cuda.stream(stream) if stream else nullcontext():
                while True:
                    with self._lock:
                        while not self._ready[d] and not self._gate_finished and not self._error:
                            self._dev_cv[d].wait()
                        if self._error is not None or not self._ready[d]:
                            return
                        bid = heapq.heappop(self._ready[d])[2]
                    self._run_batch(self._batches[bid], dev, d, stream)
        except BaseException as exc:
            self._fail(exc)

    def _run_batch(
        self, b: _Batch, dev: torch.device, d: int, stream: torch.cuda.Stream | None
    ) -> None:
        served = self.served
        inp = served.gather(self._h, [i for i, _ in b.members], dev)
        b.start_s = self._now()
        out = served.expert(b.expert, inp)
        if stream is not None:
            stream.synchronize()
        completing = []
        with self._lock:
            # The end is stamped under the lock that delivers the answers, so that of two
            # batches ending together on different devices the later stamp is the one that
            # delivered last (and runs the combine), as the records and the model assume.
            b.end_s = self._now()
            for j, (i, slot) in enumerate(b.members):
                self._outs[i][slot] = out[j]
                self._remaining[i] -= 1
                if self._remaining[i] == 0:
                    completing.append(i)
        for i in completing:  # combine on this device, right after the batch, in batch order
            self._combine_start[i] = self._now()
            answers = [o for o in self._outs[i] if o is not None]
            outs, w = served.collect(answers, self._weights[i], dev)
            served.combine(outs[None], w[None], device=d)
            if stream is not None:
                stream.synchronize()
            self._complete[i] = self._now()
            self._combine_batch[i] = b.id
            self._combines[i] += 1
            self._outs[i] = []
        if completing:
            with self._lock:
                self._completed += len(completing)
                if self._completed >= self._target:
                    self._done_cv.notify_all()

    # --- the run ---------------------------------------------------------------------------

    def run(
        self,
        wl: Workload,
        x: torch.Tensor,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> PointResult:
        """Serve ``wl`` (inputs ``x[i]``); returns when every generated request completed."""
        if len(x) < wl.n:
            raise ServeError(f"{wl.n} requests but only {len(x)} inputs")
        self._reset(wl, x)
        threads = [threading.Thread(target=self._gate_loop, name="gate", daemon=True)]
        threads += [
            threading.Thread(target=self._worker_loop, args=(d,), name=f"device-{d}", daemon=True)
            for d in range(len(self.served.devices))
        ]
        if self.max_wait_s is not None:
            threads.append(threading.Thread(target=self._flush_loop, name="flush", daemon=True))
        wall0 = time.perf_counter()
        self._t0 = time.perf_counter()
        for t in threads:
            t.start()
        generated, stopped = 0, False
        try:
            for i in range(wl.n):
                delay = wl.arrival_s[i] - self._now()
                if delay > 0:
                    time.sleep(delay)
                if i - self._completed >= self.max_backlog:  # at request i's arrival (§1)
                    stopped = True
                    break
                self._arrival[i] = self._now()
                self._inbox.put(i)
                generated = i + 1
                if self._error is not None:
                    break
                if on_progress is not None and i % 16 == 0:
                    on_progress(self._completed, wl.n)
        finally:
            self._inbox.put(None)
        last, last_change = -1, time.perf_counter()
        with self._lock:
            self._target = generated
            while self._completed < generated and self._error is None:
                self._done_cv.wait(timeout=0.2)
                if self._completed != last:
                    last, last_change = self._completed, time.perf_counter()
                    if on_progress is not None:
                        on_progress(self._completed, generated)
                elif time.perf_counter() - last_change > self.stall_s:
                    self._error = ServeError(
                        f"server stalled: {self._completed}/{generated} requests completed "
                        f"and none for {self.stall_s:.0f} s"
                    )
                    self._wake_all()
        for t in threads:
            t.join(timeout=self.stall_s)
        if self._error is not None:
            if isinstance(self._error, ServeError):
                raise self._error
            raise RuntimeError(f"server thread failed: {self._error!r}") from self._error
        wall = time.perf_counter() - wall0
        if on_progress is not None:
            on_progress(generated, generated)
        return PointResult(
            self.B, self._rows(generated), generated, stopped, wall, self._combines[:generated]
        )

    def _rows(self, n: int) -> list[RecordRow]:
        rows = []
        for i in range(n):
            k = len(self._experts[i])
            for slot in range(k):
                b = self._batches[self._batch_of[i][slot]]
                rows.append(
                    RecordRow(
                        B=self.B,
                        rate_rps=self.rate_rps,
                        request=i,
                        warmup=i < self.warmup,
                        arrival_s=float(self._arrival[i]),
                        gate_start_s=float(self._gate_start[i]),
                        gate_done_s=float(self._gate_done[i]),
                        k=k,
                        slot=slot,
                        expert=self._experts[i][slot],
                        weight=float(self._weights[i][slot]),
                        device=b.device,
                        enqueue_s=self._enqueue[i][slot],
                        batch=b.id,
                        batch_size=len(b.members),
                        batch_kind=b.kind,
                        batch_formed_s=b.formed_s,
                        batch_start_s=b.start_s,
                        batch_end_s=b.end_s,
                        combine_batch=int(self._combine_batch[i]),
                        combine_start_s=float(self._combine_start[i]),
                        complete_s=float(self._complete[i]),
                    )
                )
        return rows
