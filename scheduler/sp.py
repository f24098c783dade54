"""Two-terminal series-parallel (TTSP) recognition, decomposition tree and witness.

The graph that is recognized is the *task multigraph* of a graph/1 file (the model of
Kayaaslan, Lambert, Marchal and Uçar): vertices are the nodes ``0..n-1`` plus a super
source ``n`` and a super sink ``n+1``; edges are the deduplicated dependency pairs
(producer -> consumer and the file's ``edges``), plus

- ``source -> v`` for every node without predecessors and for every consumer of a
  graph input that is not pinned (a pinned graph input is live at every step: a constant),
- ``v -> sink`` for every node without successors and for every producer of a pinned
  buffer (it lives to the end).

Recognition runs the reductions of Valdes, Tarjan and Lawler with a work list: a *series*
reduction removes a vertex of in-degree 1 and out-degree 1 and joins its two edges; a
*parallel* reduction merges two edges with the same ends. Each live edge carries the
decomposition subtree of the subgraph it stands for, so when the reductions stop the graph
is SP iff one edge ``source -> sink`` is left, and its subtree is the decomposition tree.
Otherwise what is left is the *irreducible core* (:func:`reduce_sp`), a small DAG whose
edges each carry an SP subtree; the hybrid strategy orders the core and treats every
composite edge as one macro task. The witness of non-SP-ness is a Wheatstone bridge
(four vertices s, x, y, t joined by internally disjoint paths s~>x, s~>y, x~>y, x~>t,
y~>t) when the cheap search of :func:`find_bridge` finds one, else the core's nodes.

>>> from traces.graph import Buffer, Graph, Node
>>> g = Graph.build("v", [Node("a"), Node("b"), Node("c")],
...                 [Buffer("x", 4, "a", ("b", "c")), Buffer("y", 4, "b", ("c",))])
>>> rec = recognize(g)
>>> rec.is_sp, rec.witness
(True, None)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from traces.graph import Graph, GraphIndex

__all__ = [
    "SINK_NAME",
    "SOURCE_NAME",
    "Core",
    "CoreEdge",
    "Recognition",
    "SPTree",
    "TaskGraph",
    "find_bridge",
    "recognize",
    "reduce_sp",
    "task_graph",
]

SOURCE_NAME = "<source>"
SINK_NAME = "<sink>"

_SERIES, _PARALLEL = 1, 2


@dataclass(frozen=True, eq=False)
class TaskGraph:
    """The two-terminal task multigraph: vertices ``0..n-1`` are nodes, ``n`` the super
    source, ``n+1`` the super sink; edge ``e`` is ``edge_src[e] -> edge_dst[e]`` (pairs are
    unique). Built by :func:`task_graph`."""

    n_nodes: int
    edge_src: np.ndarray
    edge_dst: np.ndarray
    node_ids: tuple[str, ...]

    @property
    def source(self) -> int:
        return self.n_nodes

    @property
    def sink(self) -> int:
        return self.n_nodes + 1

    @property
    def n_edges(self) -> int:
        return len(self.edge_src)

    def name(self, v: int) -> str:
        """Node id of vertex ``v`` (terminals are ``<source>`` / ``<sink>``)."""
        if v == self.source:
            return SOURCE_NAME
        if v == self.sink:
            return SINK_NAME
        return self.node_ids[v]

    def edge_index(self) -> dict[tuple[int, int], int]:
        """(src, dst) -> edge number."""
        return {
            (u, v): e
            for e, (u, v) in enumerate(
                zip(self.edge_src.tolist(), self.edge_dst.tolist(), strict=True)
            )
        }


@dataclass(frozen=True, slots=True)
class SPTree:
    """A node of the decomposition tree of the subgraph between ``source`` and ``sink``.

    ``kind`` is ``"edge"`` (a leaf: task-graph edge number ``edge``), ``"series"``
    (``children`` in order, joined at ``mids``: ``len(mids) == len(children) - 1``, child
    ``i`` runs from ``mids[i-1]`` to ``mids[i]``) or ``"parallel"`` (every child runs from
    ``source`` to ``sink``). Series and parallel nodes are flattened: no child has its
    parent's kind. The *internal vertices* (all but the two terminals) are what a schedule
    of the subtree orders.
    """

    kind: str
    source: int
    sink: int
    children: tuple[SPTree, ...] = ()
    mids: tuple[int, ...] = ()
    edge: int = -1

    def internal_vertices(self) -> list[int]:
        """All vertices strictly between ``source`` and ``sink`` (any order)."""
        out: list[int] = []
        stack = [self]
        while stack:
            t = stack.pop()
            out.extend(t.mids)
            stack.extend(t.children)
        return out

    def edges(self) -> list[int]:
        """Task-graph edge numbers of the leaves."""
        out: list[int] = []
        stack = [self]
        while stack:
            t = stack.pop()
            if t.kind == "edge":
                out.append(t.edge)
            stack.extend(t.children)
        return out


@dataclass(frozen=True, slots=True)
class CoreEdge:
    """One edge of the irreducible core: the SP subgraph ``tree`` between ``source`` and
    ``sink`` (a single task-graph edge when ``tree.kind == "edge"``)."""

    source: int
    sink: int
    tree: SPTree


@dataclass(frozen=True, eq=False)
class Core:
    """What is left when no series or parallel reduction applies.

    ``vertices`` are task-graph vertices (node indices, plus ``task.source`` and
    ``task.sink``), in a topological order of the core; ``edges`` are unique per
    (source, sink) pair and together cover every task-graph edge exactly once, and every
    node is either a core vertex or internal to exactly one core edge's tree. The graph is
    SP iff the core is the single edge ``source -> sink``.
    """

    task: TaskGraph
    vertices: tuple[int, ...]
    edges: tuple[CoreEdge, ...]

    @property
    def is_single_edge(self) -> bool:
        return len(self.edges) == 1 and len(self.vertices) == 2

    def successors(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {v: [] for v in self.vertices}
        for e in self.edges:
            out[e.source].append(e.sink)
        return out

    def predecessors(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {v: [] for v in self.vertices}
        for e in self.edges:
            out[e.sink].append(e.source)
        return out


@dataclass(frozen=True, eq=False)
class Recognition:
    """Answer of :func:`recognize`: ``tree`` is set iff ``is_sp``; otherwise ``witness``
    holds node ids (a Wheatstone bridge's s, x, y, t when ``bridge`` is true, else the
    core's non-terminal nodes)."""

    is_sp: bool
    witness: tuple[str, ...] | None
    tree: SPTree | None
    core: Core
    bridge: bool = False

    @property
    def task(self) -> TaskGraph:
        return self.core.task


def _as_index(graph: Graph | GraphIndex) -> GraphIndex:
    return graph.index if isinstance(graph, Graph) else graph


def task_graph(graph: Graph | GraphIndex) -> TaskGraph:
    """The two-terminal task multigraph of ``graph`` (see the module docstring)."""
    index = _as_index(graph)
    n = index.n_nodes
    src_v, snk_v = n, n + 1
    parts_src = [index.dep_src.astype(np.int64)]
    parts_dst = [index.dep_dst.astype(np.int64)]
    has_pred = np.zeros(n, dtype=bool)
    has_succ = np.zeros(n, dtype=bool)
    has_pred[index.dep_dst] = True
    has_succ[index.dep_src] = True
    roots = np.flatnonzero(~has_pred)
    leaves = np.flatnonzero(~has_succ)
    parts_src += [np.full(len(roots), src_v), leaves]
    parts_dst += [roots, np.full(len(leaves), snk_v)]
    counts = np.diff(index.cons_ptr)
    owner = np.repeat(np.arange(index.n_buffers), counts)
    is_input = index.buf_producer < 0
    free_input = is_input & ~index.buf_pinned
    sel = free_input[owner]
    parts_src.append(np.full(int(sel.sum()), src_v))
    parts_dst.append(index.cons_idx[sel])
    pinned_prod = index.buf_producer[index.buf_pinned & ~is_input]
    parts_src.append(pinned_prod)
    parts_dst.append(np.full(len(pinned_prod), snk_v))
    if n == 0:  # the empty graph is the single edge source -> sink
        parts_src.append(np.array([src_v]))
        parts_dst.append(np.array([snk_v]))
    src = np.concatenate(parts_src).astype(np.int64)
    dst = np.concatenate(parts_dst).astype(np.int64)
    key = np.unique(src * (n + 2) + dst)
    return TaskGraph(n, key // (n + 2), key % (n + 2), index.node_ids)


class _Forest:
    """Binary decomposition nodes built during reduction, flattened when frozen. A leaf
    (task-graph edge ``e``) is not stored: it is referred to as ``-1 - e``."""

    def __init__(self) -> None:
        self.kind: list[int] = []
        self.a: list[int] = []
        self.b: list[int] = []
        self.mid: list[int] = []
        self.src: list[int] = []
        self.dst: list[int] = []

    def add(self, kind: int, a: int, b: int, mid: int, src: int, dst: int) -> int:
        self.kind.append(kind)
        self.a.append(a)
        self.b.append(b)
        self.mid.append(mid)
        self.src.append(src)
        self.dst.append(dst)
        return len(self.kind) - 1

    def _flat(self, t: int) -> tuple[list[int], list[int]]:
        """Flattened children (binary-node ids of another kind) and mids of node ``t``."""
        kind = self.kind[t]
        children: list[int] = []
        mids: list[int] = []
        stack: list[tuple[int, int]] = [(t, 0)]  # (node, 0 = enter / 1 = emit mid)
        while stack:
            u, phase = stack.pop()
            if phase == 1:
                mids.append(self.mid[u])
                continue
            if u < 0 or self.kind[u] != kind:
                children.append(u)
                continue
            stack.append((self.b[u], 0))
            if kind == _SERIES:
                stack.append((u, 1))
            stack.append((self.a[u], 0))
        return children, mids

    def freeze(self, root: int, task: TaskGraph) -> SPTree:
        """The frozen, flattened :class:`SPTree` of binary node ``root`` (iterative)."""
        if root < 0:
            e = -1 - root
            return SPTree("edge", int(task.edge_src[e]), int(task.edge_dst[e]), edge=e)
        src, dst = task.edge_src, task.edge_dst
        built: dict[int, SPTree] = {}
        stack: list[tuple[int, list[int] | None, list[int] | None]] = [(root, None, None)]
        while stack:
            t, children, mids = stack.pop()
            if t < 0:
                e = -1 - t
                built[t] = SPTree("edge", int(src[e]), int(dst[e]), edge=e)
                continue
            if children is None:
                children, mids = self._flat(t)
                stack.append((t, children, mids))
                stack.extend((c, None, None) for c in children if c not in built)
                continue
            kind = "series" if self.kind[t] == _SERIES else "parallel"
            built[t] = SPTree(
                kind,
                self.src[t],
                self.dst[t],
                tuple(built[c] for c in children),
                tuple(mids or ()),
            )
            for c in children:  # each binary node belongs to one parent: free memory
                del built[c]
        return built[root]


def reduce_sp(task: TaskGraph) -> Core:
    """Apply series and parallel reductions until none applies; return the core.

    Interface for divide and conquer (the hybrid strategy): the result's ``edges`` are
    the core's edges, each a :class:`CoreEdge` ``(source, sink, tree)`` whose ``tree`` is
    the SP decomposition of the subgraph it replaced (its internal vertices run strictly
    between ``source`` and ``sink`` in any order of the whole graph, and no other vertex
    has an edge into or out of them). ``vertices`` are in topological order and include
    ``task.source`` and ``task.sink``. Linear time: each reduction removes an edge.
    """
    n_v = task.n_nodes + 2
    s, t = task.source, task.sink
    forest = _Forest()
    out: list[dict[int, int]] = [{} for _ in range(n_v)]
    inn: list[dict[int, int]] = [{} for _ in range(n_v)]
    for e, (u, v) in enumerate(zip(task.edge_src.tolist(), task.edge_dst.tolist(), strict=True)):
        out[u][v] = -1 - e
        inn[v][u] = -1 - e
    alive = [True] * n_v
    work = [v for v in range(task.n_nodes) if len(inn[v]) == 1 and len(out[v]) == 1]
    while work:
        x = work.pop()
        if not alive[x] or len(inn[x]) != 1 or len(out[x]) != 1:
            continue
        ((u, t1),) = inn[x].items()
        ((w, t2),) = out[x].items()
        alive[x] = False
        inn[x].clear()
        out[x].clear()
        del out[u][x]
        del inn[w][x]
        joined = forest.add(_SERIES, t1, t2, x, u, w)
        old = out[u].get(w)
        if old is None:
            out[u][w] = joined
            inn[w][u] = joined
            continue
        merged = forest.add(_PARALLEL, old, joined, -1, u, w)
        out[u][w] = merged
        inn[w][u] = merged
        for y in (u, w):
            if y != s and y != t and len(inn[y]) == 1 and len(out[y]) == 1:
                work.append(y)
    verts = [v for v in range(n_v) if alive[v]]
    order = _topo(verts, out)
    edges = tuple(
        CoreEdge(u, w, forest.freeze(b, task)) for u in order for w, b in sorted(out[u].items())
    )
    return Core(task, tuple(order), edges)


def _topo(verts: list[int], out: list[dict[int, int]]) -> list[int]:
    indeg = dict.fromkeys(verts, 0)
    for u in verts:
        for w in out[u]:
            indeg[w] += 1
    queue = deque(v for v in verts if indeg[v] == 0)
    order: list[int] = []
    while queue:
        u = queue.popleft()
        order.append(u)
        for w in out[u]:
            indeg[w] -= 1
            if indeg[w] == 0:
                queue.append(w)
    return order


def find_bridge(core: Core) -> tuple[int, int, int, int] | None:
    """Vertices ``(s, x, y, t)`` of a Wheatstone bridge in the core, or None if the cheap
    search fails.

    Construction: ``y`` is the first core vertex (topological order) with two in-edges,
    from ``p1 != p2``. Every earlier vertex but the source has one in-edge, so the
    ancestors of ``y`` form a tree rooted at the source; ``s`` is the meeting point of the
    tree paths of ``p1`` and ``p2`` and ``x`` whichever of them is not ``s``. ``x`` has one
    in-edge, so (being irreducible) another out-edge ``x -> z``; a path from ``z`` that
    avoids ``y`` until it meets a fixed path ``y ~> sink`` gives ``t``. Descendants of
    ``x`` are not on the tree paths and descendants of ``y`` are not its ancestors, so
    the five paths are internally disjoint; core edges stand for disjoint subgraphs, so
    the bridge lifts to the task graph.
    """
    if core.is_single_edge:
        return None
    succ = core.successors()
    pred = core.predecessors()
    y = next((v for v in core.vertices if len(pred[v]) >= 2), None)
    if y is None or y == core.task.sink:
        return None
    p1, p2 = pred[y][0], pred[y][1]

    def tree_path(v: int) -> list[int]:
        path = [v]
        while pred[path[-1]]:
            path.append(pred[path[-1]][0])
        return path

    path1, path2 = tree_path(p1), tree_path(p2)
    on2 = set(path2)
    s = next(v for v in path1 if v in on2)
    x = p1 if p1 != s else p2
    y_path = [y]
    while succ[y_path[-1]]:
        y_path.append(succ[y_path[-1]][0])
    on_y = set(y_path[1:])
    for z in succ[x]:
        if z == y:
            continue
        if z in on_y:
            return (s, x, y, z)
        seen = {z}
        queue = deque([z])
        while queue:
            u = queue.popleft()
            for w in succ[u]:
                if w in on_y:
                    return (s, x, y, w)
                if w != y and w not in seen:
                    seen.add(w)
                    queue.append(w)
    return None


def recognize(graph: Graph | GraphIndex) -> Recognition:
    """Is the task multigraph of ``graph`` two-terminal series-parallel?

    Returns the decomposition tree when it is, else a witness (see :class:`Recognition`).
    """
    task = task_graph(graph)
    core = reduce_sp(task)
    if core.is_single_edge:
        return Recognition(True, None, core.edges[0].tree, core)
    bridge = find_bridge(core)
    if bridge is not None:
        return Recognition(False, tuple(task.name(v) for v in bridge), None, core, bridge=True)
    inner = tuple(task.name(v) for v in core.vertices if v < task.n_nodes)
    return Recognition(False, inner, None, core)
