"""Expert queues of size B (system-model §3), computed exactly in numpy.

Why not a SimPy process per queue: by §3 a batch is formed from enqueue times
alone (B items, the ``max_wait`` deadline of the oldest item, or the drain at
the last gate-done instant), and enqueue times come from the FCFS gate, which
depends only on arrivals. Nothing a device does feeds back into a queue, so the
queue rule is a pure function of the enqueue times and is evaluated here once,
vectorized; the SimPy model (``sim.engine``) then simulates the part with
contention and coupling: devices, combine and completion. ``sim.naive`` keeps
the literal process-per-request version (a ``simpy.Store`` per expert that gives
B items at once) and the tests check both agree request for request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DRAINED", "EXACT", "FLUSHED", "KIND_NAMES", "Batches", "form_batches"]

EXACT, FLUSHED, DRAINED = 0, 1, 2
KIND_NAMES = ("exact", "flush", "drain")  # traces.serving.BATCH_KINDS


@dataclass(frozen=True, eq=False)
class Batches:
    """Formed batches, numbered in (expert, formation) order.

    Items (request, expert) are sorted by expert then request (each expert's
    FIFO order); batch j holds items ``offset[j] : offset[j] + size[j]``.
    """

    expert: np.ndarray
    size: np.ndarray
    kind: np.ndarray
    formed_s: np.ndarray
    offset: np.ndarray
    item_request: np.ndarray
    item_expert: np.ndarray

    @property
    def item_batch(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.size)), self.size)

    def members(self, j: int) -> np.ndarray:
        return self.item_request[self.offset[j] : self.offset[j] + self.size[j]]


def _segment(
    t: np.ndarray, base: int, b: int, max_wait_s: float | None, drain_s: float
) -> tuple[list[int], list[int], list[int], list[float]]:
    """Batches of one expert's queue: (start offsets, sizes, kinds, formation times)."""
    n = len(t)
    if max_wait_s is None:
        full = n // b
        starts = list(range(base, base + full * b, b))
        sizes = [b] * full
        kinds = [EXACT] * full
        formed = t[b - 1 : full * b : b].tolist()
        if n % b:
            starts.append(base + full * b)
            sizes.append(n % b)
            kinds.append(DRAINED)
            formed.append(drain_s)
        return starts, sizes, kinds, formed
    starts, sizes, kinds, formed = [], [], [], []
    s = 0
    while s < n:
        deadline = t[s] + max_wait_s
        if s + b <= n and t[s + b - 1] <= deadline:
            # The B-th item arrives no later than the deadline: an exact batch.
            size, kind, when = b, EXACT, t[s + b - 1]
        elif deadline < drain_s:
            # Flush: everything enqueued up to and including the deadline instant.
            size = int(np.searchsorted(t, deadline, side="right")) - s
            kind, when = FLUSHED, deadline
        else:
            size, kind, when = n - s, DRAINED, drain_s
        starts.append(base + s)
        sizes.append(size)
        kinds.append(kind)
        formed.append(float(when))
        s += size
    return starts, sizes, kinds, formed


def form_batches(
    experts: np.ndarray,
    enqueue_s: np.ndarray,
    n_experts: int,
    batch_size: int,
    max_wait_s: float | None,
    drain_s: float,
) -> Batches:
    """Apply §3 to every expert queue.

    ``experts[i]`` are request i's experts (-1 padded); ``enqueue_s[i]`` its
    gate-done instant, nondecreasing in i; ``drain_s`` the last gate-done instant.
    """
    used = experts >= 0
    req = np.nonzero(used)[0]
    exp = experts[used]
    order = np.argsort(exp, kind="stable")  # stable: request (FIFO) order within an expert
    req, exp = req[order], exp[order]
    t = enqueue_s[req]
    bounds = np.searchsorted(exp, np.arange(n_experts + 1))
    starts: list[int] = []
    sizes: list[int] = []
    kinds: list[int] = []
    formed: list[float] = []
    bexp: list[int] = []
    for e in range(n_experts):
        lo, hi = int(bounds[e]), int(bounds[e + 1])
        if hi == lo:
            continue
        s, z, k, f = _segment(t[lo:hi], lo, batch_size, max_wait_s, drain_s)
        starts += s
        sizes += z
        kinds += k
        formed += f
        bexp += [e] * len(s)
    return Batches(
        expert=np.asarray(bexp, dtype=np.int64),
        size=np.asarray(sizes, dtype=np.int64),
        kind=np.asarray(kinds, dtype=np.int8),
        formed_s=np.asarray(formed, dtype=float),
        offset=np.asarray(starts, dtype=np.int64),
        item_request=req,
        item_expert=exp,
    )
