"""Cut a compute graph into independent pieces whose peaks can be minimized one at a time.

Under the graph/1 memory model the memory at a step depends only on the *set* of
nodes done before it and on the node that runs. So if a contiguous stretch
``order[i:j]`` of an order is reordered among itself, every step outside the
stretch keeps its memory, and the stretch is a smaller scheduling problem of its
own: buffers from before become graph inputs, buffers still needed after it become
pinned, and buffers that merely pass over it add a constant. Two uses:

* *windows* of a given order (large-neighbourhood search never makes the peak worse);
* *segments* between cut nodes (nodes comparable to every other node), which every
  topological order runs contiguously, so optimal segment orders concatenate into
  an optimal order of the whole graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.memory import buffer_lifetimes, trivial_lower_bound
from traces.graph import GraphIndex

__all__ = [
    "STRUCTURE_MAX_NODES",
    "Subproblem",
    "ancestor_masks",
    "cut_segments",
    "descendant_masks",
    "structural_lower_bound",
    "subproblem",
    "topological_order",
]


STRUCTURE_MAX_NODES = 20_000
"""Ancestor/descendant bitmasks take n^2/8 bytes each (50 MB at this size); above it the
structural bound falls back to the trivial one and the graph is one segment."""


@dataclass(frozen=True, slots=True, eq=False)
class Subproblem:
    """A stretch of an order as a graph of its own.

    ``nodes[k]`` is the full-graph index of sub-node ``k``; the memory of the full
    graph at a step inside the stretch equals the sub-graph's memory plus
    ``offset_bytes`` (buffers live across the whole stretch that it never touches).
    """

    index: GraphIndex
    nodes: np.ndarray
    offset_bytes: int


def topological_order(index: GraphIndex) -> list[int]:
    """Kahn's algorithm, smallest index first (the given order when it is topological)."""
    import heapq

    n = index.n_nodes
    indeg = np.bincount(index.dep_dst, minlength=n).tolist() if n else []
    succ = index.succ_lists
    ready = [v for v in range(n) if indeg[v] == 0]
    heapq.heapify(ready)
    out: list[int] = []
    while ready:
        v = heapq.heappop(ready)
        out.append(v)
        for w in succ[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                heapq.heappush(ready, w)
    return out


def ancestor_masks(index: GraphIndex, topo: Sequence[int] | None = None) -> list[int]:
    """Per node, the bitmask of its strict ancestors (Python ints; fine to ~10^4 nodes)."""
    topo = topological_order(index) if topo is None else topo
    pred = index.pred_lists
    anc = [0] * index.n_nodes
    for v in topo:
        m = 0
        for u in pred[v]:
            m |= anc[u] | (1 << u)
        anc[v] = m
    return anc


def descendant_masks(index: GraphIndex, topo: Sequence[int] | None = None) -> list[int]:
    """Per node, the bitmask of its strict descendants."""
    topo = topological_order(index) if topo is None else topo
    succ = index.succ_lists
    desc = [0] * index.n_nodes
    for v in reversed(topo):
        m = 0
        for w in succ[v]:
            m |= desc[w] | (1 << w)
        desc[v] = m
    return desc


def _mask_to_bool(mask: int, n: int) -> np.ndarray:
    raw = np.frombuffer(mask.to_bytes((n + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:n].astype(bool)


def structural_lower_bound(index: GraphIndex) -> int:
    """A bound every order must reach, at least :func:`scheduler.memory.trivial_lower_bound`.

    When ``v`` runs, all its ancestors have run and none of its descendants has, so
    besides ``v``'s workspace and outputs, every buffer made by an ancestor (or a graph
    input) that is pinned or read by ``v`` or a descendant of ``v`` is live. The bound is
    the largest such sum over ``v`` (and the pinned total, live at the last step).
    Costs O(buffers x nodes / 8) numpy work.
    """
    n = index.n_nodes
    if n == 0:
        return 0
    if n > STRUCTURE_MAX_NODES:
        return trivial_lower_bound(index)
    topo = topological_order(index)
    anc = ancestor_masks(index, topo)
    desc = descendant_masks(index, topo)
    all_nodes = (1 << n) - 1
    need = index.workspace.astype(np.int64).copy()
    size = index.buf_size.tolist()
    prod = index.buf_producer.tolist()
    pinned = index.buf_pinned.tolist()
    cons = index.consumer_lists
    for b, s in enumerate(size):
        if s == 0:
            continue
        p = prod[b]
        if p >= 0:
            need[p] += s  # live while its producer runs
        made = desc[p] if p >= 0 else all_nodes
        if pinned[b]:
            live = made
        elif cons[b]:
            waiting = 0
            for c in cons[b]:
                waiting |= anc[c] | (1 << c)
            live = made & waiting
        else:
            continue
        if live:
            need += s * _mask_to_bool(live, n)
    at_end = int(index.buf_size[index.buf_pinned].sum())
    return int(max(int(need.max()), at_end, trivial_lower_bound(index)))


def cut_segments(index: GraphIndex) -> list[list[int]]:
    """Split the nodes into groups every topological order runs one after the other.

    A *cut node* is comparable to every other node (its ancestors plus its
    descendants are everything else). Nodes between two consecutive cut nodes form
    one segment; each cut node is a segment of its own. Segments are returned in
    execution order, each in a topological order of its own nodes.
    """
    n = index.n_nodes
    if n == 0:
        return []
    topo = topological_order(index)
    if n > STRUCTURE_MAX_NODES:  # sound: one segment is always a valid split
        return [topo]
    anc = ancestor_masks(index, topo)
    n_anc = [m.bit_count() for m in anc]
    desc = descendant_masks(index, topo)
    cuts = [v for v in range(n) if n_anc[v] + desc[v].bit_count() == n - 1]
    cuts.sort(key=lambda v: n_anc[v])
    cut_mask = 0
    for c in cuts:
        cut_mask |= 1 << c
    rank = {c: k for k, c in enumerate(cuts)}
    groups: dict[int, list[int]] = {}
    for v in topo:  # keeps each group topologically ordered
        key = 2 * rank[v] + 1 if v in rank else 2 * (anc[v] & cut_mask).bit_count()
        groups.setdefault(key, []).append(v)
    return [groups[k] for k in sorted(groups)]


def subproblem(
    index: GraphIndex,
    order: np.ndarray,
    start: int,
    stop: int,
    *,
    lifetimes: tuple[np.ndarray, np.ndarray] | None = None,
) -> Subproblem:
    """The stretch ``order[start:stop]`` of a topological ``order`` (indices) as a graph.

    ``lifetimes`` are the ``(alloc, free)`` steps of every buffer under ``order``
    (:func:`scheduler.memory.buffer_lifetimes`), passed when many stretches of one
    order are cut.
    """
    n = index.n_nodes
    order = np.asarray(order, dtype=np.int64)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n, dtype=np.int64)
    alloc, free = buffer_lifetimes(index, pos) if lifetimes is None else lifetimes
    nodes = order[start:stop]
    local = {int(v): k for k, v in enumerate(nodes.tolist())}
    prod = index.buf_producer
    touched: set[int] = set()
    for v in nodes.tolist():
        touched.update(index.produced_by[v])
        touched.update(index.consumed_by[v])
    from_before = (prod < 0) | (alloc < start)
    across = from_before & ((free >= stop) | index.buf_pinned)
    if touched:
        across[np.fromiter(touched, dtype=np.int64)] = False
    offset = int(index.buf_size[across].sum())

    sizes: list[int] = []
    producers: list[int] = []
    pinned: list[bool] = []
    ptr = [0]
    cons: list[int] = []
    cons_lists = index.consumer_lists
    for b in sorted(touched):
        p = int(prod[b])
        inside = [local[c] for c in cons_lists[b] if c in local]
        if p >= 0 and p in local:
            producers.append(local[p])
        elif p < 0 or pos[p] < start:
            producers.append(-1)
        else:  # produced after the stretch; only read after it too
            continue
        sizes.append(int(index.buf_size[b]))
        pinned.append(bool(index.buf_pinned[b]) or int(free[b]) >= stop)
        cons.extend(inside)
        ptr.append(len(cons))
    if start == 0:  # unconsumed, unpinned graph inputs live at step 0 only
        dead_in = (prod < 0) & (np.diff(index.cons_ptr) == 0) & ~index.buf_pinned
        for b in np.flatnonzero(dead_in).tolist():
            sizes.append(int(index.buf_size[b]))
            producers.append(-1)
            pinned.append(False)
            ptr.append(len(cons))
    src = index.dep_src
    dst = index.dep_dst
    in_win = np.zeros(n, dtype=bool)
    in_win[nodes] = True
    keep = in_win[src] & in_win[dst]
    remap = np.full(n, -1, dtype=np.int64)
    remap[nodes] = np.arange(len(nodes), dtype=np.int64)
    edges = np.stack([remap[src[keep]], remap[dst[keep]]], axis=1)
    sub = GraphIndex.from_arrays(
        workspace=index.workspace[nodes],
        buf_size=np.asarray(sizes, dtype=np.int64),
        buf_producer=np.asarray(producers, dtype=np.int64),
        cons_ptr=np.asarray(ptr, dtype=np.int64),
        cons_idx=np.asarray(cons, dtype=np.int64),
        buf_pinned=np.asarray(pinned, dtype=bool),
        extra_edges=edges,
        node_ids=[index.node_ids[v] for v in nodes.tolist()],
    )
    return Subproblem(sub, nodes.copy(), offset)
