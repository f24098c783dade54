"""Exact minimum peak by best-first search over sets of executed nodes.

Under the graph/1 memory model the memory while node ``v`` runs depends only on
the set ``S`` of nodes already done: ``R(S) + workspace(v) + outputs(v)``, where
``R(S)`` is what stays resident between steps. The peak of an order is then the
largest edge on a path from the empty set to the full set in the lattice of
down-closed sets, and the minimum peak is a bottleneck shortest path, which a
Dijkstra-like search finds while visiting only sets cheaper than the optimum.

Two reductions keep the search small, both exact:

* it starts at a known lower bound ``L``: every order peaks at ``L`` or more, so
  steps costing at most ``L`` are free;
* a ready node that costs no more than the bottleneck reached so far and does not
  grow ``R`` is taken at once (moving such a node earlier in any order never
  raises a later step, since ``R(X ∪ {v}) - R(X)`` only shrinks as ``X`` grows).

Truncated by a state or time budget, the search still proves a lower bound: the
smallest bottleneck left in its queue.

The decision form of the problem ("is there an order within ``limit``?") proves optima
much faster: :mod:`scheduler.decide`, built on the same :class:`_Model`.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

from traces.graph import GraphIndex

__all__ = ["SearchOutcome", "search_min_peak"]

_BIT_CACHE = 200_000
"""Most ready sets whose node lists a search keeps memoized at once."""


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """``order`` (indices) reaches ``peak_bytes``; ``bound_bytes`` is a proven lower bound.

    ``order`` is None when no order below ``upper_bound`` exists (then the bound
    equals that upper bound) or when the budget ran out first.
    """

    order: tuple[int, ...] | None
    peak_bytes: int | None
    bound_bytes: int
    complete: bool
    states: int


class _Model:
    """Per-node quantities of the search, precomputed once.

    Unconsumed, unpinned graph inputs (live at step 0 only) are charged to the first
    step rather than kept in ``R``, so that ``R(X ∪ {v}) - R(X)`` is monotone in ``X``.
    """

    def __init__(self, index: GraphIndex) -> None:
        n = index.n_nodes
        self.n = n
        self.pred_mask = [0] * n
        for u, v in zip(index.dep_src.tolist(), index.dep_dst.tolist(), strict=True):
            self.pred_mask[v] |= 1 << u
        self.succ = index.succ_lists
        size = index.buf_size.tolist()
        pinned = index.buf_pinned.tolist()
        prod = index.buf_producer.tolist()
        cons = index.consumer_lists
        self.run_cost = index.workspace.tolist()
        self.kept_out = [0] * n
        self.reads: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        self.r0 = 0
        self.r0_dead = 0
        for b in range(len(size)):
            p = prod[b]
            if p >= 0:
                self.run_cost[p] += size[b]
                if pinned[b] or cons[b]:
                    self.kept_out[p] += size[b]
            elif pinned[b] or cons[b]:
                self.r0 += size[b]
            else:
                self.r0_dead += size[b]
            if not pinned[b] and cons[b]:
                mask = 0
                for c in cons[b]:
                    mask |= 1 << c
                for c in cons[b]:
                    self.reads[c].append((mask, size[b]))
        # A free move must not grow R: a node whose kept outputs outweigh everything it
        # could ever free is never free, and the closures skip it.
        self.may_free = 0
        for v in range(n):
            if self.kept_out[v] <= sum(s for _, s in self.reads[v]):
                self.may_free |= 1 << v
        self.succ_mask = [0] * n
        for u, v in zip(index.dep_src.tolist(), index.dep_dst.tolist(), strict=True):
            self.succ_mask[u] |= 1 << v
        self.preds = index.pred_lists
        self.start_ready = sum(1 << v for v in range(n) if self.pred_mask[v] == 0)
        # the backward start: every node done, only pinned buffers resident
        self.n_full_mask = (1 << n) - 1
        self.tail_start = sum(1 << v for v in range(n) if self.succ_mask[v] == 0)
        self.r_full = int(index.buf_size[index.buf_pinned].sum())
        self._bit_lists: dict[int, list[int]] = {}

    def step(self, done: int, resident: int, v: int) -> tuple[int, int]:
        """Memory while ``v`` runs after ``done``, and the resident memory after it."""
        cost = resident + self.run_cost[v] + (self.r0_dead if done == 0 else 0)
        after = done | (1 << v)
        freed = 0
        for mask, size in self.reads[v]:
            if mask & ~after == 0:
                freed += size
        return cost, resident + self.kept_out[v] - freed

    def unstep(self, done: int, resident: int, v: int) -> tuple[int, int]:
        """The step of ``v`` seen from after it: ``done`` contains ``v`` and has
        ``resident`` memory; returns the step's memory and the resident memory before it."""
        freed = 0
        for mask, size in self.reads[v]:
            if mask & ~done == 0:
                freed += size
        before = resident - self.kept_out[v] + freed
        rest = done & ~(1 << v)
        return before + self.run_cost[v] + (self.r0_dead if rest == 0 else 0), before

    def newly_tail(self, rest: int, v: int) -> int:
        """Predecessors of ``v`` that no node of ``rest`` (``v`` just dropped) depends on."""
        out = 0
        for u in self.preds[v]:
            if self.succ_mask[u] & rest == 0:
                out |= 1 << u
        return out

    def bits(self, mask: int) -> list[int]:
        """:func:`_bits`, memoized: the same ready sets recur across many states."""
        out = self._bit_lists.get(mask)
        if out is None:
            if len(self._bit_lists) > _BIT_CACHE:
                self._bit_lists.clear()
            out = self._bit_lists[mask] = _bits(mask)
        return out

    def close(
        self, limit: int, done: int, resident: int, ready: int
    ) -> tuple[int, int, int, list[int]]:
        """Take free moves (cost <= ``limit``, resident memory not growing) until none is
        left; ``limit`` must not exceed the peak of any completion that is looked for."""
        taken: list[int] = []
        may = self.may_free
        run = self.run_cost
        todo = ready & may
        while todo:
            fresh = 0
            for v in self.bits(todo):
                if resident + run[v] > limit:  # the cheap half of the cost test
                    continue
                cost, res2 = self.step(done, resident, v)
                if cost <= limit and res2 <= resident:
                    done |= 1 << v
                    ready = (ready & ~(1 << v)) | self.newly_ready(done, v)
                    resident = res2
                    taken.append(v)
                    fresh = ready & may  # a free move can make others free: look again
            todo = fresh
        return done, resident, ready, taken

    def newly_ready(self, after: int, v: int) -> int:
        out = 0
        for w in self.succ[v]:
            if self.pred_mask[w] & ~after == 0:
                out |= 1 << w
        return out


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def search_min_peak(
    index: GraphIndex,
    *,
    lower_bound: int = 0,
    upper_bound: int | None = None,
    max_states: int = 200_000,
    deadline_s: float | None = None,
) -> SearchOutcome:
    """Minimum peak over all topological orders of ``index`` (exact unless truncated).

    ``upper_bound``: only orders peaking strictly below it are searched for (pass
    an incumbent's peak); ``deadline_s`` is a :func:`time.perf_counter` instant.
    """
    m = _Model(index)
    n = m.n
    full = (1 << n) - 1
    if n == 0:
        return SearchOutcome((), 0, 0, True, 0)
    best: dict[int, int] = {}
    parent: dict[int, tuple[int, tuple[int, ...]]] = {}
    heap: list[tuple[int, int, int, int, int]] = []
    counter = 0
    close = m.close

    key0 = max(int(lower_bound), 0)
    d0, r0, ready0, taken0 = close(key0, 0, m.r0, m.start_ready)
    best[d0] = key0
    parent[d0] = (-1, tuple(taken0))
    heap.append((key0, counter, d0, r0, ready0))
    popped = 0
    while heap:
        key, _, done, resident, ready = heapq.heappop(heap)
        if best.get(done, key + 1) < key:
            continue
        if done == full:
            return SearchOutcome(_walk(parent, done), key, key, True, popped)
        popped += 1
        if popped > max_states or (
            deadline_s is not None and popped % 256 == 0 and time.perf_counter() > deadline_s
        ):
            return SearchOutcome(None, None, key, False, popped)
        for v in m.bits(ready):
            cost, res2 = m.step(done, resident, v)
            k2 = max(key, cost)
            if upper_bound is not None and k2 >= upper_bound:
                continue
            after = done | (1 << v)
            ready2 = (ready & ~(1 << v)) | m.newly_ready(after, v)
            after, res2, ready2, taken = close(k2, after, res2, ready2)
            if best.get(after, k2 + 1) <= k2:
                continue
            best[after] = k2
            parent[after] = (done, (v, *taken))
            counter += 1
            heapq.heappush(heap, (k2, counter, after, res2, ready2))
    bound = upper_bound if upper_bound is not None else key0
    return SearchOutcome(None, None, int(bound), True, popped)


def _walk(parent: dict[int, tuple[int, tuple[int, ...]]], state: int) -> tuple[int, ...]:
    parts: list[tuple[int, ...]] = []
    while state != -1:
        prev, seq = parent[state]
        parts.append(seq)
        state = prev
    return tuple(v for seq in reversed(parts) for v in seq)
