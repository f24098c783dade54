"""Seeded synthetic graph/1 families for tests and benchmarks.

Every generator returns a :class:`scheduler.graph_arrays.GraphArrays`: the graph as
flat integer arrays, cheap enough for a million nodes. ``.to_index()`` hands it to the
memory simulator directly (:meth:`traces.graph.GraphIndex.from_arrays`); ``.to_graph()`` builds the
validated :class:`traces.graph.Graph` records that the strategies take (fine up to
~10^5 nodes). In every family the node list (the *given* order) is topological, and
the same ``seed`` gives the same graph. The transformer family lives in
:mod:`scheduler.synthetic_transformer` and is re-exported here.

>>> g = chain(5, seed=1).to_graph()
>>> len(g), g.nodes[0].id
(5, 'n0')
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable

import numpy as np

from scheduler.errors import SchedulerError
from scheduler.graph_arrays import GraphArrays, consumer_csr, split_forward_backward
from scheduler.synthetic_transformer import transformer_fwbw, transformer_layers_for_nodes

__all__ = [
    "FAMILIES",
    "GraphArrays",
    "chain",
    "in_tree",
    "layered_dag",
    "make",
    "out_tree",
    "series_parallel",
    "split_forward_backward",
    "transformer_fwbw",
    "transformer_layers_for_nodes",
]

_KIB = 1024


def _sizes(rng: np.random.Generator, k: int, lo_kib: int = 4, hi_kib: int = 256) -> np.ndarray:
    """Buffer sizes in bytes: whole KiB drawn uniformly from [lo_kib, hi_kib]."""
    return rng.integers(lo_kib, hi_kib + 1, size=k, dtype=np.int64) * _KIB


def _workspace(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    ws = rng.integers(1, 65, size=n, dtype=np.int64) * _KIB
    return np.where(rng.random(n) < p, ws, 0)


def _check_n(n: int, minimum: int = 1) -> None:
    if n < minimum:
        raise SchedulerError(f"n must be >= {minimum}, got {n}")


# ------------------------------------------------------------------ vectorized families


def chain(n: int, *, seed: int = 0, p_workspace: float = 0.2) -> GraphArrays:
    """A straight pipeline (e.g. a sequential MLP without residuals): node i reads the
    output of node i-1; the input feeds node 0 and the last output is pinned. Every
    order is the same, so it checks that strategies do not lose anything on trivial input."""
    _check_n(n)
    rng = np.random.default_rng(seed)
    size = _sizes(rng, n + 1)
    prod = np.concatenate([np.arange(n), [-1]])
    cons = np.concatenate([np.arange(1, n), [0]])
    owner = np.concatenate([np.arange(n - 1), [n]])
    ptr, idx = consumer_csr(n + 1, owner, cons)
    pinned = np.zeros(n + 1, dtype=bool)
    pinned[n - 1] = True
    return GraphArrays(
        f"chain-{n}-s{seed}",
        _workspace(rng, n, p_workspace),
        size,
        prod.astype(np.int64),
        pinned,
        ptr,
        idx,
        meta={"family": "chain", "seed": seed},
    )


def _random_parents(rng: np.random.Generator, n: int, branching: int | None) -> np.ndarray:
    """parent[i] < i for i >= 1: a random recursive tree, or a complete k-ary tree."""
    i = np.arange(1, n)
    if branching is None:
        return np.concatenate([[-1], (rng.random(n - 1) * i).astype(np.int64)])
    return np.concatenate([[-1], (i - 1) // branching])


def in_tree(
    n: int, *, seed: int = 0, branching: int | None = None, p_workspace: float = 0.2
) -> GraphArrays:
    """A reduction tree (e.g. a sum of many partial results, a tree all-reduce): every node
    feeds one buffer to its parent and the root's output is pinned. ``branching=None``
    draws a random recursive tree; an int gives the complete tree of that arity. Which
    subtree to finish first is the whole problem here (Liu's classic case)."""
    _check_n(n)
    rng = np.random.default_rng(seed)
    parent = _random_parents(rng, n, branching)
    # Reverse so children (larger labels) come first in the given order: node k = n-1-i.
    child = n - 1 - np.arange(1, n)
    par = n - 1 - parent[1:]
    size = _sizes(rng, n)
    prod = np.arange(n, dtype=np.int64)  # buffer j is node j's output
    ptr, idx = consumer_csr(n, child, par)
    pinned = np.zeros(n, dtype=bool)
    pinned[n - 1] = True
    return GraphArrays(
        f"in-tree-{n}-s{seed}",
        _workspace(rng, n, p_workspace),
        size,
        prod,
        pinned,
        ptr,
        idx,
        meta={"family": "in_tree", "seed": seed, "branching": branching},
    )


def out_tree(
    n: int, *, seed: int = 0, branching: int | None = None, p_workspace: float = 0.2
) -> GraphArrays:
    """A broadcast tree (e.g. one activation feeding many heads or experts): every node's
    output is one buffer read by all its children; leaves' outputs die at once. A pinned
    graph input feeds the root."""
    _check_n(n)
    rng = np.random.default_rng(seed)
    parent = _random_parents(rng, n, branching)
    size = _sizes(rng, n + 1)
    prod = np.concatenate([np.arange(n), [-1]]).astype(np.int64)
    owner = np.concatenate([parent[1:], [n]])
    cons = np.concatenate([np.arange(1, n), [0]])
    ptr, idx = consumer_csr(n + 1, owner, cons)
    pinned = np.zeros(n + 1, dtype=bool)
    pinned[n] = True
    return GraphArrays(
        f"out-tree-{n}-s{seed}",
        _workspace(rng, n, p_workspace),
        size,
        prod,
        pinned,
        ptr,
        idx,
        meta={"family": "out_tree", "seed": seed, "branching": branching},
    )


def layered_dag(
    n: int,
    *,
    seed: int = 0,
    width: int | None = None,
    max_skip: int = 3,
    p_extra: float = 0.5,
    p_pinned_output: float = 0.02,
    p_workspace: float = 0.2,
) -> GraphArrays:
    """A random layered DAG (a generic wide network): layers of about ``width`` nodes
    (default ~sqrt(n)); every node outside layer 0 reads a random output of the previous
    layer and, with probability ``p_extra``, one more from up to ``max_skip`` layers back
    (skip connections), so many buffers have several consumers. One input batch feeds
    layer 0; the last layer's outputs (and a few random others) are pinned. Built with
    numpy only, so a million nodes take well under a second."""
    _check_n(n)
    rng = np.random.default_rng(seed)
    width = width or max(2, round(math.sqrt(n)))
    lo_w, hi_w = max(1, width // 2), width + max(1, width // 2)
    sizes = rng.integers(lo_w, hi_w + 1, size=n // lo_w + 1)
    cum = np.cumsum(sizes)
    n_layers = int(np.searchsorted(cum, n)) + 1
    sizes = sizes[:n_layers].copy()
    sizes[-1] -= int(cum[n_layers - 1]) - n
    start = np.concatenate([[0], np.cumsum(sizes)])
    layer = np.repeat(np.arange(n_layers), sizes)
    v = np.arange(int(start[1]) if n_layers > 1 else n, n)
    lv = layer[v]
    prim = start[lv - 1] + (rng.random(len(v)) * sizes[lv - 1]).astype(np.int64)
    extra_mask = rng.random(len(v)) < p_extra
    ve, le = v[extra_mask], lv[extra_mask]
    lo = start[np.maximum(le - max_skip, 0)]
    hi = start[le]
    extra = lo + (rng.random(len(ve)) * (hi - lo)).astype(np.int64)
    first = np.arange(int(start[1]) if n_layers > 1 else n)
    owner = np.concatenate([prim, extra, np.full(len(first), n)])
    cons = np.concatenate([v, ve, first])
    ptr, idx = consumer_csr(n + 1, owner, cons)
    pinned = np.zeros(n + 1, dtype=bool)
    pinned[:n] = (layer == n_layers - 1) | (rng.random(n) < p_pinned_output)
    return GraphArrays(
        f"layered-{n}-s{seed}",
        _workspace(rng, n, p_workspace),
        _sizes(rng, n + 1),
        np.concatenate([np.arange(n), [-1]]).astype(np.int64),
        pinned,
        ptr,
        idx,
        meta={"family": "layered", "seed": seed, "layers": n_layers, "width": width},
    )


# ------------------------------------------------------------------ series-parallel


def _topological_relabel(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``new_label[old]`` such that labels follow a topological (Kahn, FIFO) order."""
    order = np.argsort(src, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=ptr[1:])
    succ = dst[order].tolist()
    ptr_l = ptr.tolist()
    indeg = np.bincount(dst, minlength=n).tolist()
    queue = deque(v for v in range(n) if indeg[v] == 0)
    label = [0] * n
    k = 0
    while queue:
        v = queue.popleft()
        label[v] = k
        k += 1
        for w in succ[ptr_l[v] : ptr_l[v + 1]]:
            indeg[w] -= 1
            if indeg[w] == 0:
                queue.append(w)
    if k != n:  # pragma: no cover - construction guarantees a DAG
        raise RuntimeError("generated graph has a cycle")
    return np.asarray(label, dtype=np.int64)


def series_parallel(
    n: int,
    *,
    seed: int = 0,
    p_parallel: float = 0.35,
    single_consumer: bool = False,
    p_workspace: float = 0.2,
) -> GraphArrays:
    """A random two-terminal series-parallel DAG (fork-join programs, Inception-style
    branches): starting from one edge source->sink, repeatedly pick a random edge and
    either subdivide it with a new node (series) or double it (parallel) until there
    are ``n`` nodes, so the dependency graph is SP by construction.

    Buffers: by default each node's output is one buffer read by all its successors
    (the DL model); ``single_consumer=True`` gives every edge its own buffer (the
    "file per edge" model of the SP-scheduling literature). A graph input feeds the
    source; the sink's output is pinned.
    """
    _check_n(n, 2)
    rng = random.Random(seed)
    edges: list[tuple[int, int]] = [(0, 1)]
    k = 2
    while k < n:
        i = int(rng.random() * len(edges))
        if rng.random() < p_parallel:
            edges.append(edges[i])
            continue
        u, v = edges[i]
        edges[i] = (u, k)
        edges.append((k, v))
        k += 1
    arr = np.unique(np.asarray(edges, dtype=np.int64), axis=0)
    label = _topological_relabel(n, arr[:, 0], arr[:, 1])
    src, dst = label[arr[:, 0]], label[arr[:, 1]]
    nprng = np.random.default_rng(seed)
    if single_consumer:
        m = len(src)
        prod = np.concatenate([src, [-1, n - 1]])
        owner = np.concatenate([np.arange(m), [m]])
        cons = np.concatenate([dst, [0]])
        n_buf = m + 2
    else:
        prod = np.concatenate([np.arange(n), [-1]])
        owner = np.concatenate([src, [n]])
        cons = np.concatenate([dst, [0]])
        n_buf = n + 1
    ptr, idx = consumer_csr(n_buf, owner, cons)
    pinned = np.zeros(n_buf, dtype=bool)
    pinned[n - 1 if not single_consumer else n_buf - 1] = True
    return GraphArrays(
        f"sp-{n}-s{seed}{'-single' if single_consumer else ''}",
        _workspace(nprng, n, p_workspace),
        _sizes(nprng, n_buf),
        prod.astype(np.int64),
        pinned,
        ptr,
        idx,
        meta={"family": "series_parallel", "seed": seed, "single_consumer": single_consumer},
    )


# ------------------------------------------------------------------ registry


def _transformer_nodes(n: int, *, seed: int = 0) -> GraphArrays:
    return transformer_fwbw(transformer_layers_for_nodes(n), seed=seed)


FAMILIES: dict[str, Callable[..., GraphArrays]] = {
    "layered": layered_dag,
    "sp": series_parallel,
    "sp-single": lambda n, *, seed=0: series_parallel(n, seed=seed, single_consumer=True),
    "transformer": _transformer_nodes,
    "chain": chain,
    "in-tree": in_tree,
    "out-tree": out_tree,
}
"""Family name -> ``f(n, *, seed)`` giving a graph of about ``n`` nodes."""


def make(family: str, n: int, *, seed: int = 0) -> GraphArrays:
    """A graph of about ``n`` nodes from the named family (see :data:`FAMILIES`)."""
    try:
        gen = FAMILIES[family]
    except KeyError:
        raise SchedulerError(
            f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}"
        ) from None
    return gen(n, seed=seed)
