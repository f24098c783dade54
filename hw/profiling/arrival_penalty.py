"""The wall time each arrival of the load generator costs the server's loops (system-model §8).

``hw serve``'s load generator is a third thread: at every arrival it wakes from its sleep,
takes the interpreter lock from the thread at work, puts into the gate's inbox, and the
thread at work has to win the lock back. ``arrival_penalty_gate`` /
``arrival_penalty_worker`` price that: the progress the server's own gate loop / worker
loop loses per arrival.

The earlier measurement timed a loop alone, then with a generator running, and divided the
difference by the ~40 arrivals during it: the machine's drift between two timings tens of
milliseconds apart (±20 %) is several milliseconds, as large as the whole effect, so each
sample was mostly noise (block 36-37's profiles read the gate's median 0-22 µs, p10 0,
p90 85-142) and its median over 33 rounds moved from profile to profile.

Here the loops run back to back (a fresh :class:`~hw.serving.server.QueuedServer` per
round, its gate loop then its worker loop, as ``server_loops`` runs them) for a few seconds
while a generator thread follows a schedule of short windows (``PENALTY_WINDOW_S``), each
on or off at random: Poisson arrivals at ``PENALTY_RATE_RPS`` inside the on windows, one
sleep through the off ones. The loops' progress is stamped (each gate call, each expert
call); the off windows give each loop's rate of progress, and the time lost per arrival is

    (loop time in on windows - progress made in them / off windows' rate) / arrivals in them,

with the loop's time the part of each window its spans cover. On and off windows
alternate every few milliseconds, so the machine's drift cancels, and the windows are
drawn before the run, so neither a slow loop nor a fast one chooses how many arrivals it
meets (a per-iteration regression of wall time on the arrivals during it reads the long
iterations' length as penalty). The samples are the estimate over ``PENALTY_BLOCKS``
consecutive stretches of the run (fewer in a short run: at least ``BLOCK_WINDOWS`` windows
each), each against its own off windows; the profile row is their median.

:func:`company_penalties` reads the same with both loops at work together, as in the
server's busy spells: ``QueuedServer.run`` itself, its own generator putting a backlog at the
start (each request routed to ``COMPANY_K`` experts, so that the worker falls behind the gate
and neither waits) and the windows' arrivals on top; progress is the server's own stamps
(gate starts, batch starts), each loop read until it first waits. Rows
``arrival_penalty_gate_company`` / ``arrival_penalty_worker_company``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hw.profiling.errors import ProfilingError
from hw.profiling.model import ServedModel
from hw.profiling.server_loops import run_gate_loop, run_worker_loop, synthetic_requests
from hw.serving.plan import Workload
from hw.serving.server import QueuedServer
from traces.alone_gates import covered_until

__all__ = [
    "MIN_PENALTY_S",
    "PENALTY_BLOCKS",
    "PENALTY_RATE_RPS",
    "PENALTY_S",
    "PENALTY_WINDOW_S",
    "Windows",
    "arrival_penalties",
    "company_penalties",
    "lost_per_arrival",
]

PENALTY_RATE_RPS = 1000.0  # the generator's arrival rate inside the on windows
PENALTY_WINDOW_S = 0.005  # on / off windows: many loop iterations, shorter than the drift
PENALTY_BLOCKS = 16  # samples per loop: stretches of the run estimated apart
BLOCK_WINDOWS = 25  # at least so many windows per stretch (a shorter run has fewer stretches)
PENALTY_S = 8.0  # seconds of loops (gate and worker alternating) in a full profile
MIN_PENALTY_S = 0.5  # in a quick profile (fewer calls asked): enough windows to read
PENALTY_REQUESTS = 128  # requests per round: the server's reset between rounds stays small
COMPANY_LEAD_S = 0.2  # the windows start after the run's: the worker has fallen behind
COMPANY_BACKLOG_RPS = 1000.0  # requests queued up front per second: more than the gate passes
COMPANY_K = 8  # experts per request: the worker falls behind the gate, and both stay at work


@dataclass(frozen=True)
class Windows:
    """The generator's schedule: window ``w`` is [t0 + w·window_s, t0 + (w + 1)·window_s),
    ``on[w]`` whether arrivals come in it."""

    t0: float
    window_s: float
    on: np.ndarray

    def index(self, t: np.ndarray) -> np.ndarray:
        """The window of each time (may fall outside 0 .. len(on) - 1)."""
        return np.floor((np.asarray(t, dtype=float) - self.t0) / self.window_s).astype(np.int64)

    def arrivals(self, rng: np.random.Generator, rate_rps: float) -> np.ndarray:
        """Poisson arrival times at ``rate_rps`` inside the on windows, none in the others."""
        times: list[np.ndarray] = []
        for w in np.flatnonzero(self.on):
            lo = self.t0 + w * self.window_s
            gaps = rng.exponential(1.0 / rate_rps, size=max(8, int(3 * rate_rps * self.window_s)))
            at = lo + np.cumsum(gaps)
            times.append(at[at < lo + self.window_s])
        return np.concatenate(times) if times else np.zeros(0)


def lost_per_arrival(
    progress_s: np.ndarray,
    arrivals_s: np.ndarray,
    spans: np.ndarray,
    windows: Windows,
    among: np.ndarray | None = None,
) -> float:
    """Seconds of a loop's progress lost per arrival (module docstring): ``progress_s`` its
    progress stamps, ``spans`` the (start, end) rows when it ran, ``arrivals_s`` when the
    generator put; over the windows ``among`` (default all). NaN where the windows hold no
    arrival during the loop or no progress while off."""
    n = len(windows.on)
    w = np.arange(n) if among is None else np.asarray(among)
    rows = np.asarray(spans, dtype=float).reshape(-1, 2)
    edges = windows.t0 + windows.window_s * np.arange(n + 1)
    exposure = np.diff(covered_until(rows)(edges))[w]
    progress = np.bincount(_inside(windows, progress_s), minlength=n + 1)[:n][w]
    during = _within(rows, np.asarray(arrivals_s))
    arrived = np.bincount(_inside(windows, during), minlength=n + 1)[:n][w]
    on = windows.on[w]
    off_time, off_progress = exposure[~on].sum(), progress[~on].sum()
    if arrived[on].sum() == 0 or off_progress == 0:
        return float("nan")
    rate = off_progress / off_time
    return float((exposure[on].sum() - progress[on].sum() / rate) / arrived[on].sum())


def _within(spans: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The times of ``t`` inside one of ``spans`` (disjoint (start, end) rows, any order)."""
    spans = spans[np.argsort(spans[:, 0])]
    i = np.searchsorted(spans[:, 0], t, side="right") - 1
    return t[(i >= 0) & (t < spans[np.maximum(i, 0), 1])]


def _inside(windows: Windows, t: np.ndarray) -> np.ndarray:
    """Window index of each time, those outside the schedule mapped to one spare bin."""
    i = windows.index(t)
    return np.where((i >= 0) & (i < len(windows.on)), i, len(windows.on))


def arrival_penalties(served: ServedModel, seconds: float, seed: int) -> dict[str, list[float]]:
    """``PENALTY_BLOCKS`` samples of each loop's penalty per arrival, from ``seconds`` of the
    server's gate and worker loops run back to back under an on / off generator."""
    wl, x = synthetic_requests(served, PENALTY_REQUESTS)
    rng = np.random.default_rng(seed)
    n_windows = int(np.ceil(seconds / PENALTY_WINDOW_S))
    progress = _Progress(served)
    spans: dict[str, list[tuple[float, float]]] = {"gate": [], "worker": []}
    with torch.inference_mode():
        _round(progress, wl, x, spans)  # warm-up, untimed
        progress.clear()
        spans = {"gate": [], "worker": []}
        on = rng.random(n_windows) < 0.5
        windows = Windows(time.perf_counter() + 0.002, PENALTY_WINDOW_S, on)
        with _generator(windows.arrivals(rng, PENALTY_RATE_RPS)) as put_s:
            end = windows.t0 + n_windows * PENALTY_WINDOW_S
            while time.perf_counter() < end:
                _round(progress, wl, x, spans)
    arrivals = np.asarray(put_s)
    return {
        f"arrival_penalty_{name}": _samples(
            name, np.asarray(stamps), arrivals, np.asarray(spans[name]), windows
        )
        for name, stamps in (("gate", progress.gate_s), ("worker", progress.expert_s))
    }


def company_penalties(served: ServedModel, seconds: float, seed: int) -> dict[str, list[float]]:
    """Samples of each loop's penalty per arrival with both loops at work together, in the
    server's own threads under its own load generator (``QueuedServer.run``): a backlog
    queued up front keeps the gate and the worker busy while ``seconds`` of on / off windows
    of arrivals come on top; each loop is read up to the first time it waited (a loop that
    waited before the windows' first stretch was over has no samples: no key)."""
    rng = np.random.default_rng(seed)
    n_windows = int(np.ceil(seconds / PENALTY_WINDOW_S))
    windows = Windows(COMPANY_LEAD_S, PENALTY_WINDOW_S, rng.random(n_windows) < 0.5)
    backlog = int(COMPANY_BACKLOG_RPS * (COMPANY_LEAD_S + seconds))
    arrival = np.concatenate([np.zeros(backlog), windows.arrivals(rng, PENALTY_RATE_RPS)])
    routed, x = synthetic_requests(served, len(arrival), COMPANY_K)
    server = QueuedServer(served, 1, max_backlog=len(arrival) + 1)
    server.run(Workload(arrival, routed.experts, routed.weights), x)
    n, t0, end = len(arrival), windows.t0, windows.t0 + n_windows * windows.window_s
    gate_start, gate_done = server._gate_start[:n], server._gate_done[:n]
    order = np.argsort(gate_start)
    done_before = gate_done[order][:-1]
    waited = (server._arrival[order][1:] > done_before) & (done_before > t0)  # inbox empty
    batches = sorted(server._batches.values(), key=lambda b: b.start_s)
    starts, ends = np.array([b.start_s for b in batches]), np.array([b.end_s for b in batches])
    free = dict(zip((b.id for b in batches), ends.tolist(), strict=True))
    for i in range(n):  # the worker is free after the combines its batch ran
        bid = int(server._combine_batch[i])
        free[bid] = max(free[bid], float(server._complete[i]))
    ends = np.array([free[b.id] for b in batches])
    idle = (np.array([b.formed_s for b in batches])[1:] > ends[:-1]) & (ends[:-1] > t0)
    arrivals = server._arrival[backlog:n]
    out: dict[str, list[float]] = {}
    for name, stamps, until in (
        ("gate", gate_start, done_before[waited].min(initial=end)),
        ("worker", starts, ends[:-1][idle].min(initial=end)),
    ):
        spans = np.array([[t0, min(end, until)]])
        if got := _samples(name, stamps, arrivals, spans, windows, strict=False):
            out[f"arrival_penalty_{name}_company"] = got
    return out


def _samples(
    name: str,
    stamps: np.ndarray,
    arrivals: np.ndarray,
    spans: np.ndarray,
    windows: Windows,
    strict: bool = True,
) -> list[float]:
    """The loop's penalty over each stretch of the windows (module docstring); none readable:
    a ``ProfilingError`` (``strict``) or no samples."""
    n_windows = len(windows.on)
    stretches = max(1, min(PENALTY_BLOCKS, n_windows // BLOCK_WINDOWS))
    loop = stamps, arrivals, spans, windows
    got = [
        g
        for b in np.array_split(np.arange(n_windows), stretches)
        if np.isfinite(g := lost_per_arrival(*loop, b))
    ]
    if not got:  # no stretch had both kinds of window: the run as one
        got = [g] if np.isfinite(g := lost_per_arrival(*loop)) else []
    if not got and strict:
        span = n_windows * windows.window_s
        raise ProfilingError(
            f"arrival penalty: {span:.2f} s of the {name} loop met no arrival in an on "
            "window or made no progress in an off one; time it longer"
        )
    return got


def _round(
    progress: _Progress,
    wl: Workload,
    x: torch.Tensor,
    spans: dict[str, list[tuple[float, float]]],
) -> None:
    """One fresh server: its gate loop over every request, then its worker loop; their spans."""
    server = QueuedServer(progress, 1)  # type: ignore[arg-type]
    spans["gate"].append(run_gate_loop(server, wl, x))
    spans["worker"].append(run_worker_loop(server, wl.n))


class _Progress:
    """``served`` with the start of each gate call and each expert call stamped: the loops'
    progress (the rest passed through)."""

    def __init__(self, served: ServedModel) -> None:
        self._served = served
        self.gate_s: list[float] = []
        self.expert_s: list[float] = []

    def clear(self) -> None:
        self.gate_s.clear()
        self.expert_s.clear()

    def gate(self, *args: Any, **kwargs: Any) -> Any:
        self.gate_s.append(time.perf_counter())
        return self._served.gate(*args, **kwargs)

    def expert(self, *args: Any, **kwargs: Any) -> Any:
        self.expert_s.append(time.perf_counter())
        return self._served.expert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._served, name)


def _arrive(inbox: queue.SimpleQueue[int], i: int) -> None:
    """One arrival's work in the generator thread, as ``QueuedServer.run`` does it."""
    inbox.put(i)


@contextmanager
def _generator(arrivals_s: np.ndarray) -> Iterator[list[float]]:
    """A thread that sleeps until each of ``arrivals_s`` (perf_counter times) and puts into a
    queue; yields the times it put (it stops early when the block exits)."""
    stop = threading.Event()
    put_s: list[float] = []

    def run() -> None:
        inbox: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i, at in enumerate(arrivals_s.tolist()):
            delay = at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if stop.is_set():
                return
            _arrive(inbox, i)
            put_s.append(time.perf_counter())

    thread = threading.Thread(target=run, name="penalty-generator", daemon=True)
    thread.start()
    try:
        yield put_s
    finally:
        stop.set()
        thread.join()
