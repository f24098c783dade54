"""A lower bound on the peak of every order of a graph/1 graph, from what must be live.

When node ``v`` runs, in *any* topological order, its ancestors have run and its
descendants have not. So a buffer whose producer is an ancestor of ``v`` (or a graph
input) and that is pinned or still has a reader among ``v``'s descendants is live
then, besides what ``v`` itself reads and writes and its workspace. The largest such
sum over all nodes bounds every order's peak from below. It needs no solver and is
often much tighter than a per-node bound on graphs with long-lived skip connections
(checkpointed backward graphs): it is how the benchmark shows how far Inductor's own
order can be from the best possible one.
"""

from __future__ import annotations

from traces.graph import Graph

__all__ = ["must_live_lower_bound"]


def must_live_lower_bound(graph: Graph) -> int:
    """Max over nodes ``v`` of the bytes live at ``v`` in every order (see module doc).

    >>> from traces.graph import Buffer, Node
    >>> g = Graph.build(
    ...     "skip",
    ...     [Node("a"), Node("b"), Node("c")],
    ...     [Buffer("x", 100, "a", ("b", "c")), Buffer("y", 10, "b", ("c",))],
    ... )
    >>> must_live_lower_bound(g)  # x is live while b runs, whatever the order
    110
    """
    ids = list(graph.node_ids)
    pos = {n: i for i, n in enumerate(ids)}
    preds: list[set[int]] = [set() for _ in ids]
    for b in graph.buffers:
        if b.producer is not None:
            for c in b.consumers:
                preds[pos[c]].add(pos[b.producer])
    for a, z in graph.edges:
        preds[pos[z]].add(pos[a])
    order = _topological(preds)
    anc = [0] * len(ids)  # bitsets of strict ancestors
    for v in order:
        for p in preds[v]:
            anc[v] |= anc[p] | (1 << p)
    desc = [0] * len(ids)
    succs: list[list[int]] = [[] for _ in ids]
    for v, ps in enumerate(preds):
        for p in ps:
            succs[p].append(v)
    for v in reversed(order):
        for s in succs[v]:
            desc[v] |= desc[s] | (1 << s)
    ws = {n.id: n.workspace_bytes for n in graph.nodes}
    bufs = []  # (size, producer position or -1, readers bitset, pinned)
    for b in graph.buffers:
        readers = 0
        for c in b.consumers:
            readers |= 1 << pos[c]
        bufs.append(
            (b.size_bytes, -1 if b.producer is None else pos[b.producer], readers, b.pinned)
        )
    best = sum(b.size_bytes for b in graph.buffers if b.pinned)  # all live at the last step
    for v in range(len(ids)):
        total = ws[ids[v]]
        bit = 1 << v
        for size, prod, readers, pinned in bufs:
            if prod == v or readers & bit:
                total += size  # v writes or reads it
            elif (prod < 0 or anc[v] >> prod & 1) and (pinned or readers & desc[v]):
                total += size  # made before v, read after v (or kept to the end)
        best = max(best, total)
    return best


def _topological(preds: list[set[int]]) -> list[int]:
    indeg = [len(p) for p in preds]
    succs: list[list[int]] = [[] for _ in preds]
    for v, ps in enumerate(preds):
        for p in ps:
            succs[p].append(v)
    ready = [v for v, d in enumerate(indeg) if d == 0]
    out = []
    while ready:
        v = ready.pop()
        out.append(v)
        for s in succs[v]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    return out
