"""Independent references for scheduler tests: random graphs, a pure-Python peak recount,
and the exact optimum by dynamic programming over executed-node subsets.

Nothing here uses scheduler.memory, so agreement with it is real evidence.
"""

from __future__ import annotations

import random
from functools import cache

import networkx as nx

from traces.graph import Buffer, Graph, Node

__all__ = ["brute_force_min_peak", "random_dag", "random_topological_order", "recount_peak"]


def random_dag(
    rng: random.Random,
    n: int,
    *,
    max_outputs: int = 2,
    max_consumers: int = 3,
    p_pinned: float = 0.15,
    n_inputs: int | None = None,
    p_workspace: float = 0.3,
    p_extra_edge: float = 0.05,
) -> Graph:
    """A random graph/1 DAG: multi-consumer buffers, graph inputs, pinned outputs, workspace.

    Node list order is a topological order (index order); ids are shuffled names.
    """
    names = [f"v{i}" for i in range(n)]
    rng.shuffle(names)
    nodes = [
        Node(
            names[i], "op", rng.choice([0, rng.randint(1, 64)]) if rng.random() < p_workspace else 0
        )
        for i in range(n)
    ]
    buffers: list[Buffer] = []
    k = rng.randint(0, 2) if n_inputs is None else n_inputs
    for j in range(k):
        cons = rng.sample(range(n), rng.randint(0, min(max_consumers, n)))
        buffers.append(
            Buffer(
                f"in{j}",
                rng.randint(1, 100),
                None,
                tuple(names[c] for c in sorted(cons)),
                rng.random() < 0.5,
            )
        )
    for i in range(n):
        for o in range(rng.randint(1, max_outputs)):
            later = list(range(i + 1, n))
            cons = rng.sample(later, rng.randint(0, min(max_consumers, len(later))))
            buffers.append(
                Buffer(
                    f"b{i}_{o}",
                    rng.randint(1, 100),
                    names[i],
                    tuple(names[c] for c in sorted(cons)),
                    rng.random() < p_pinned,
                )
            )
    edges = [
        (names[i], names[j])
        for i in range(n)
        for j in range(i + 1, n)
        if rng.random() < p_extra_edge
    ]
    return Graph.build(f"random{n}", nodes, buffers, edges)


def recount_peak(graph: Graph, order: list[str]) -> int:
    """Peak by the contract's definition, counted naively step by step."""
    pos = {v: i for i, v in enumerate(order)}
    n = len(order)
    ws = {nd.id: nd.workspace_bytes for nd in graph.nodes}
    peak = 0
    for t in range(n):
        mem = ws[order[t]]
        for b in graph.buffers:
            a = 0 if b.producer is None else pos[b.producer]
            if b.pinned:
                f = n - 1
            elif b.consumers:
                f = max(pos[c] for c in b.consumers)
            else:
                f = a
            if a <= t <= f:
                mem += b.size_bytes
        peak = max(peak, mem)
    return peak


def brute_force_min_peak(graph: Graph) -> int:
    """Exact minimum peak over all topological orders (DP over subsets; n <= ~14)."""
    ids = [nd.id for nd in graph.nodes]
    n = len(ids)
    idx = {v: i for i, v in enumerate(ids)}
    ws = [nd.workspace_bytes for nd in graph.nodes]
    preds = [0] * n
    for b in graph.buffers:
        if b.producer is not None:
            for c in b.consumers:
                preds[idx[c]] |= 1 << idx[b.producer]
    for u, v in graph.edges:
        preds[idx[v]] |= 1 << idx[u]
    bufs = []
    for b in graph.buffers:
        prod = -1 if b.producer is None else idx[b.producer]
        cmask = 0
        for c in b.consumers:
            cmask |= 1 << idx[c]
        bufs.append((b.size_bytes, prod, cmask, b.pinned))

    def mem_running(done: int, v: int) -> int:
        total = ws[v]
        for size, prod, cmask, pinned in bufs:
            if prod == -1:
                if cmask == 0 and not pinned:
                    alive = done == 0
                else:
                    alive = pinned or (cmask & ~done) != 0
            elif prod == v:
                alive = True
            elif (done >> prod) & 1:
                alive = pinned or (cmask & ~done) != 0
            else:
                alive = False
            if alive:
                total += size
        return total

    full = (1 << n) - 1

    @cache
    def best(done: int) -> int:
        if done == full:
            return 0
        out = None
        for v in range(n):
            if not (done >> v) & 1 and (preds[v] & ~done) == 0:
                val = max(mem_running(done, v), best(done | (1 << v)))
                out = val if out is None or val < out else out
        assert out is not None
        return out

    return best(0)


def random_topological_order(graph: Graph, rng: random.Random) -> list[str]:
    """A uniformly drawn ready node at every step (networkx only, not scheduler code)."""
    g = nx.DiGraph()
    g.add_nodes_from(graph.node_ids)
    idx = graph.index
    g.add_edges_from(
        (idx.node_ids[a], idx.node_ids[b]) for a, b in zip(idx.dep_src, idx.dep_dst, strict=True)
    )
    indeg = dict(g.in_degree())
    ready = [v for v, d in indeg.items() if d == 0]
    order: list[str] = []
    while ready:
        v = ready.pop(rng.randrange(len(ready)))
        order.append(v)
        for w in g.successors(v):
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    return order
