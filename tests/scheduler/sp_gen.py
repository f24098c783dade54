"""Random series-parallel graph/1 graphs for the SP tests, and an independent
Wheatstone-bridge checker (path enumeration with networkx, nothing from scheduler.sp).
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

import networkx as nx

from traces.graph import Buffer, Graph, Node

__all__ = ["has_bridge", "is_bridge", "random_sp_graph", "task_digraph"]


def _sp_edges(rng: random.Random, n: int, p_parallel: float) -> list[tuple[int, int]]:
    """A random TTSP multigraph on ``n`` vertices (0 = source, 1 = sink before relabel):
    repeatedly subdivide a random edge (series) or double it (parallel)."""
    edges = [(0, 1)]
    k = 2
    while k < n:
        i = rng.randrange(len(edges))
        if rng.random() < p_parallel:
            edges.append(edges[i])
            continue
        u, v = edges[i]
        edges[i] = (u, k)
        edges.append((k, v))
        k += 1
    return edges


def random_sp_graph(
    rng: random.Random,
    n: int,
    *,
    p_parallel: float = 0.4,
    multi_consumer: bool = False,
    p_control: float = 0.1,
    p_workspace: float = 0.3,
    p_dead: float = 0.15,
    inputs: bool = True,
    pin_sink: bool = True,
    bridge: bool = False,
) -> Graph:
    """A random graph whose dependency DAG is two-terminal SP (``n >= 2`` nodes).

    Every SP edge becomes a buffer (``multi_consumer``: a producer's edges are grouped
    into buffers with several consumers) or, with ``p_control``, a control edge. Extras:
    workspace, dead outputs, a graph input read by the source node, a pinned parameter,
    a pinned output of the sink node. ``bridge`` replaces one edge u->v by a Wheatstone
    gadget u->a, a->b, a->c, b->c, b->d, c->d, d->v (4 more nodes), so it is not SP.
    """
    edges = _sp_edges(rng, n, p_parallel)
    if bridge:
        i = rng.randrange(len(edges))
        u, v = edges[i]
        a, b, c, d = n, n + 1, n + 2, n + 3
        edges[i : i + 1] = [(u, a), (a, b), (a, c), (b, c), (b, d), (c, d), (d, v)]
        n += 4
    succ: dict[int, list[int]] = defaultdict(list)
    indeg = [0] * n
    for u, v in edges:
        succ[u].append(v)
        indeg[v] += 1
    ready = [v for v in range(n) if indeg[v] == 0]
    topo: list[int] = []
    while ready:
        v = ready.pop(rng.randrange(len(ready)))
        topo.append(v)
        for w in succ[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    label = {v: i for i, v in enumerate(topo)}
    edges = [(label[u], label[v]) for u, v in edges]

    def name(i: int) -> str:
        return f"v{i}"

    nodes = [
        Node(name(i), "op", rng.randint(1, 50) if rng.random() < p_workspace else 0)
        for i in range(n)
    ]
    buffers: list[Buffer] = []
    control: list[tuple[str, str]] = []
    outs: dict[int, list[int]] = defaultdict(list)
    for u, v in edges:
        if rng.random() < p_control:
            control.append((name(u), name(v)))
        else:
            outs[u].append(v)
    for u, vs in sorted(outs.items()):
        if multi_consumer:
            vs = sorted(set(vs))
            rng.shuffle(vs)
            while vs:
                k = rng.randint(1, len(vs))
                group, vs = vs[:k], vs[k:]
                cons = tuple(name(c) for c in sorted(group))
                buffers.append(Buffer(f"b{len(buffers)}", rng.randint(1, 100), name(u), cons))
        else:
            for v in vs:
                buffers.append(Buffer(f"b{len(buffers)}", rng.randint(1, 100), name(u), (name(v),)))
    for i in range(n):
        if rng.random() < p_dead:
            buffers.append(Buffer(f"d{len(buffers)}", rng.randint(1, 100), name(i), ()))
    if inputs:
        buffers.append(Buffer("input", rng.randint(1, 100), None, (name(0),)))
        buffers.append(Buffer("param", rng.randint(1, 100), None, (name(rng.randrange(n)),), True))
    if pin_sink:
        buffers.append(Buffer("output", rng.randint(1, 100), name(n - 1), (), True))
    return Graph.build(f"sp{n}", nodes, buffers, control)


def task_digraph(graph: Graph) -> nx.DiGraph:
    """The task graph of the SP docs, built independently: dependency pairs, a source
    before every root and every reader of an unpinned graph input, a sink after every
    leaf and every producer of a pinned buffer."""
    g = nx.DiGraph()
    g.add_nodes_from(["<source>", "<sink>", *graph.node_ids])
    for b in graph.buffers:
        for c in b.consumers:
            if b.producer is not None:
                g.add_edge(b.producer, c)
            elif not b.pinned:
                g.add_edge("<source>", c)
        if b.pinned and b.producer is not None:
            g.add_edge(b.producer, "<sink>")
    g.add_edges_from(graph.edges)
    deps = nx.DiGraph()
    deps.add_nodes_from(graph.node_ids)
    deps.add_edges_from(
        (b.producer, c) for b in graph.buffers if b.producer is not None for c in b.consumers
    )
    deps.add_edges_from(graph.edges)
    for v in graph.node_ids:
        if deps.in_degree(v) == 0:
            g.add_edge("<source>", v)
        if deps.out_degree(v) == 0:
            g.add_edge(v, "<sink>")
    return g


def is_bridge(g: nx.DiGraph, s: str, x: str, y: str, t: str) -> bool:
    """Are there internally disjoint paths s~>x, s~>y, x~>y, x~>t, y~>t avoiding the
    four branch vertices inside? (Exhaustive search: small graphs only.)"""
    ends = (s, x, y, t)
    if len(set(ends)) < 4:
        return False
    pairs = [(s, x), (s, y), (x, y), (x, t), (y, t)]
    options = []
    for a, b in pairs:
        paths = [set(p[1:-1]) for p in nx.all_simple_paths(g, a, b) if not set(p[1:-1]) & set(ends)]
        if not paths:
            return False
        options.append(paths)

    def search(k: int, used: set[str]) -> bool:
        if k == len(options):
            return True
        return any(not (inner & used) and search(k + 1, used | inner) for inner in options[k])

    return search(0, set())


def has_bridge(g: nx.DiGraph) -> bool:
    """Does ``g`` contain a subdivided Wheatstone bridge? (Exhaustive: tiny graphs.)"""
    reach = {v: nx.descendants(g, v) for v in g}
    for s, x, y, t in itertools.permutations(g.nodes, 4):
        if x in reach[s] and y in reach[x] and t in reach[y] and is_bridge(g, s, x, y, t):
            return True
    return False
