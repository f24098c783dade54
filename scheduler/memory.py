"""The memory simulator: the only place a peak is computed.

Implements the memory model of ``shared/contracts/graph-format.md`` with numpy,
so a million-node order replays in well under a second. Every strategy's order
is replayed here; solvers' internal estimates are never reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from traces.errors import OrderError
from traces.graph import Graph, GraphIndex

__all__ = [
    "MemoryProfile",
    "buffer_lifetimes",
    "check_order",
    "order_indices",
    "peak_bytes",
    "simulate",
    "trivial_lower_bound",
]

_EXACT_FLOAT = 2**52


@dataclass(frozen=True, slots=True, eq=False)
class MemoryProfile:
    """Memory at every step of an order; ``timeline_bytes[t]`` includes v_t's workspace."""

    peak_bytes: int
    peak_step: int
    timeline_bytes: np.ndarray
    alloc_step: np.ndarray
    free_step: np.ndarray


def _index(graph: Graph | GraphIndex) -> GraphIndex:
    return graph.index if isinstance(graph, Graph) else graph


def order_indices(graph: Graph | GraphIndex, order: Sequence[str] | np.ndarray) -> np.ndarray:
    """Turn node ids (or indices) into an index array; unknown ids raise OrderError."""
    index = _index(graph)
    if isinstance(order, np.ndarray) and order.dtype.kind in "iu":
        return order.astype(np.int64, copy=False)
    pos = index.position_of
    try:  # fast path: one C-level pass of dict lookups, no per-id Python code
        return np.fromiter(map(pos.__getitem__, order), dtype=np.int64, count=len(order))
    except (KeyError, TypeError):
        pass  # some entry is not a node id: the loop below names the first one
    out = np.empty(len(order), dtype=np.int64)
    for i, nid in enumerate(order):
        j = pos.get(nid) if isinstance(nid, str) else None
        if j is None:
            raise OrderError(f"order[{i}] = {nid!r} is not a node of the graph")
        out[i] = j
    return out


def check_order(graph: Graph | GraphIndex, order: np.ndarray) -> np.ndarray:
    """Validate that ``order`` (indices) is a topological order of all nodes; return positions."""
    index = _index(graph)
    n = index.n_nodes
    ids = index.node_ids
    if len(order) and (order.min() < 0 or order.max() >= n):
        raise OrderError("order holds an index outside the graph")
    counts = np.bincount(order, minlength=n)
    if len(order) != n or (counts != 1).any():
        missing = np.flatnonzero(counts == 0)
        dup = np.flatnonzero(counts > 1)
        if len(dup):
            raise OrderError(f"order lists node {ids[dup[0]]!r} more than once")
        raise OrderError(
            f"order misses {len(missing)} node(s), e.g. {ids[missing[0]]!r}"
            if len(missing)
            else f"order has {len(order)} entries for {n} nodes"
        )
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n, dtype=np.int64)
    if len(index.dep_src):
        bad = np.flatnonzero(pos[index.dep_src] >= pos[index.dep_dst])
        if len(bad):
            u, v = ids[index.dep_src[bad[0]]], ids[index.dep_dst[bad[0]]]
            raise OrderError(f"order is not topological: {v!r} comes before its dependency {u!r}")
    return pos


def buffer_lifetimes(index: GraphIndex, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Allocation and free steps ``(a, f)`` of every buffer under positions ``pos``."""
    n = index.n_nodes
    prod = index.buf_producer
    alloc = np.where(prod >= 0, pos[np.maximum(prod, 0)], 0) if n else np.zeros(len(prod), int)
    counts = np.diff(index.cons_ptr)
    has = counts > 0
    last = alloc.copy()
    if has.any():
        starts = index.cons_ptr[:-1][has]
        last[has] = np.maximum.reduceat(pos[index.cons_idx], starts)
    free = np.where(index.buf_pinned, n - 1, last)
    return alloc, free


def simulate(
    graph: Graph | GraphIndex,
    order: Sequence[str] | np.ndarray,
    *,
    validate: bool = True,
) -> MemoryProfile:
    """Replay ``order`` and return the memory at every step and the peak."""
    index = _index(graph)
    idx = order_indices(index, order)
    n = index.n_nodes
    if validate:
        pos = check_order(index, idx)
    else:
        pos = np.empty(n, dtype=np.int64)
        pos[idx] = np.arange(n, dtype=np.int64)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return MemoryProfile(0, 0, empty, empty, empty)
    alloc, free = buffer_lifetimes(index, pos)
    size = index.buf_size
    if int(size.sum()) < _EXACT_FLOAT:
        delta = np.bincount(alloc, weights=size, minlength=n + 1)
        delta -= np.bincount(free + 1, weights=size, minlength=n + 1)
        live = np.rint(np.cumsum(delta[:n])).astype(np.int64)
    else:  # exact integer path for absurd totals
        delta_i = np.zeros(n + 1, dtype=np.int64)
        np.add.at(delta_i, alloc, size)
        np.add.at(delta_i, free + 1, -size)
        live = np.cumsum(delta_i[:n])
    timeline = live + index.workspace[idx]
    step = int(np.argmax(timeline))
    return MemoryProfile(int(timeline[step]), step, timeline, alloc, free)


def peak_bytes(graph: Graph | GraphIndex, order: Sequence[str] | np.ndarray) -> int:
    """Peak memory of ``order`` (validated)."""
    return simulate(graph, order).peak_bytes


def trivial_lower_bound(graph: Graph | GraphIndex) -> int:
    """A bound every order must reach: at each node, its inputs, outputs, workspace and the
    pinned graph inputs are live together; at the last step every pinned buffer is live."""
    index = _index(graph)
    n = index.n_nodes
    if n == 0:
        return 0
    size = index.buf_size
    pinned_inputs = (index.buf_producer < 0) & index.buf_pinned
    base = int(size[pinned_inputs].sum())
    need = index.workspace.astype(np.int64).copy() + base
    # Buffers touched by a node (read or written) that are not already pinned inputs.
    counts = np.diff(index.cons_ptr)
    owner = np.repeat(np.arange(index.n_buffers), counts)
    extra = ~pinned_inputs
    touch_nodes = np.concatenate([index.cons_idx[extra[owner]], index.buf_producer[extra]])
    touch_bufs = np.concatenate([owner[extra[owner]], np.flatnonzero(extra)])
    keep = touch_nodes >= 0
    touch_nodes, touch_bufs = touch_nodes[keep], touch_bufs[keep]
    if len(touch_nodes):
        need += np.bincount(touch_nodes, weights=size[touch_bufs], minlength=n).astype(np.int64)
    at_end = int(size[index.buf_pinned].sum())
    return int(max(int(need.max()), at_end))
