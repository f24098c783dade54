"""PyTorch Inductor's peak-memory reordering heuristics (LPMF, BFS, DFS) on graph/1.

These are the baselines every other strategy is compared against, so they
re-implement, decision for decision, the three topological sorts that
``torch/_inductor/memory.py`` (torch 2.13) tries in ``reorder_for_peak_memory``.
The module never imports torch; ``tests/scheduler/test_heuristics.py`` drives
torch's own functions on stand-in objects and checks that the orders agree.

How graph/1 maps onto Inductor's planning information
(``get_freeable_input_buf`` and ``assign_memory_planning_info_for_scheduler_*``):

- a node's output buffers are the buffers it produces; every buffer allocates
  and frees ``size_bytes`` (no MultiOutputLayout or mutation aliases here);
- a node's ``pred_buffers`` are the buffers it consumes, except pinned graph
  inputs (Inductor's non-freeable ``primals_``/``arg``/``tangents`` inputs,
  which it leaves out of all accounting);
- freeable input buffers are unpinned buffers with no producer that some node
  reads (an unread input is unknown to Inductor);
- graph outputs are the pinned buffers;
- ``pred_nodes``/``succ_nodes`` (used for ordering) are the dependency
  adjacency, extra ``edges`` included (Inductor's fake ``WeakDep``: ordering
  only, no effect on buffer lifetimes; an edge out of a node with no output
  buffer, which Inductor cannot express, is kept as an ordering constraint);
- a node's Inductor index is its position in the file's node list.

Inductor ignores ``workspace_bytes``, and so do the decisions here; the peak
that is reported is always the simulator's (:func:`scheduler.result.finish_result`).
"""

from __future__ import annotations

import heapq
import time
from bisect import bisect_right

import numpy as np

from scheduler.errors import SchedulerError
from scheduler.result import ScheduleResult, finish_result
from traces.graph import Graph, GraphIndex

__all__ = ["schedule_bfs", "schedule_dfs", "schedule_lpmf"]

_INF = float("inf")


class _Planning:
    """Inductor's per-node planning info, computed once from a GraphIndex."""

    def __init__(self, index: GraphIndex) -> None:
        size = index.buf_size.tolist()
        producer = index.buf_producer.tolist()
        pinned = index.buf_pinned.tolist()
        self.size: list[int] = size
        self.pinned: list[bool] = pinned
        self.consumers: list[list[int]] = index.consumer_lists
        # Buffers Inductor tracks: node outputs, and graph inputs that are freeable.
        self.pred_buffers: list[list[int]] = [
            [b for b in bufs if producer[b] >= 0 or not pinned[b]] for bufs in index.consumed_by
        ]
        self.outputs: list[list[int]] = index.produced_by
        # mpi_node.size: what the node allocates (sum of its outputs' size_alloc).
        self.node_size: list[int] = [sum(size[b] for b in bufs) for bufs in self.outputs]
        # Freeable graph inputs that some node reads.
        self.freeable_inputs: list[int] = [
            b
            for b in range(len(size))
            if producer[b] < 0 and not pinned[b] and len(self.consumers[b]) > 0
        ]


def _lpmf_order(index: GraphIndex) -> list[int]:
    """Inductor's ``topological_sort_lpmf`` decision rule, with a segment tree instead of a
    linear ``min`` over the ready set at every step: O((n + m) log n) instead of
    O(n * |ready| + m)."""
    n = index.n_nodes
    if n == 0:
        return []
    plan = _Planning(index)
    size, consumers, pred_buffers = plan.size, plan.consumers, plan.pred_buffers
    node_size = plan.node_size
    pinned = plan.pinned
    succ = index.succ_lists
    indegree = [len(p) for p in index.pred_lists]

    # Buffers' unmet successors, +1 for graph outputs (pinned ones never reach 0).
    outdegree = [len(c) + (1 if p else 0) for c, p in zip(consumers, pinned, strict=True)]

    live = sum(size[b] for b in plan.freeable_inputs)
    producer = index.buf_producer.tolist()
    output_memory = sum(s for s, p, pr in zip(size, pinned, producer, strict=True) if p and pr >= 0)
    max_memory = max(live, output_memory)
    gap = max_memory - live

    # memory_to_free: inputs last used by this node and outputs no one reads.
    to_free = [0] * n
    for v in range(n):
        acc = 0
        for b in pred_buffers[v]:
            if outdegree[b] == 1:
                acc += size[b]
        for b in plan.outputs[v]:
            if outdegree[b] == 0:
                acc += size[b]
        to_free[v] = acc

    # Leaves sorted by (size, index): the nodes with size <= gap form a prefix.
    leaf_node = np.lexsort((np.arange(n), np.asarray(node_size, dtype=np.int64))).tolist()
    leaf_of = [0] * n
    for pos, v in enumerate(leaf_node):
        leaf_of[v] = pos
    sorted_sizes = [node_size[v] for v in leaf_node]
    # A min-tree over the leaves holding (size - to_free, index) packed into one int
    # (a * n + index keeps lexicographic order), +inf for nodes that are not ready.
    # Inductor's key (size if size > gap else 0, size - to_free, index) is then: the
    # tree minimum over the prefix of sizes <= gap; failing that, the minimum within
    # the size class of the first ready leaf past that prefix.
    width = 1
    while width < n:
        width *= 2
    tree: list[float | int] = [_INF] * (2 * width)
    ready = [False] * n
    scheduled = [False] * n

    # A ready node's key only ever decreases (to_free only grows), so insertions and
    # credits walk up while they improve the minimum, and a removal recomputes only the
    # ancestors whose minimum it was (keys are unique: the index is part of them).
    def lower(v: int) -> None:
        """Set ready node v's key to its current value (never higher than before)."""
        key = (node_size[v] - to_free[v]) * n + v
        i = leaf_of[v] + width
        tree[i] = key
        i >>= 1
        while i and tree[i] > key:
            tree[i] = key
            i >>= 1

    def remove(v: int) -> None:
        """Set node v's key to +inf."""
        i = leaf_of[v] + width
        old = tree[i]
        tree[i] = _INF
        i >>= 1
        while i and tree[i] == old:
            a, b = tree[2 * i], tree[2 * i + 1]
            tree[i] = a if a < b else b
            i >>= 1

    def query(lo: int, hi: int) -> float | int:
        """Minimum of leaves [lo, hi)."""
        best: float | int = _INF
        lo += width
        hi += width
        while lo < hi:
            if lo & 1:
                if tree[lo] < best:
                    best = tree[lo]
                lo += 1
            if hi & 1:
                hi -= 1
                if tree[hi] < best:
                    best = tree[hi]
            lo >>= 1
            hi >>= 1
        return best

    def first_ready(lo: int) -> int:
        """Leftmost ready leaf at or after ``lo``, or -1."""
        i = lo + width
        if tree[i] != _INF:
            return lo
        while True:
            while i & 1:  # climb while a right child
                i >>= 1
            if i == 0:
                return -1
            i += 1  # the right sibling covers the next leaves
            if tree[i] != _INF:
                break
        while i < width:
            i = 2 * i if tree[2 * i] != _INF else 2 * i + 1
        return i - width

    for v in range(n):
        if indegree[v] == 0:
            ready[v] = True
            lower(v)

    order: list[int] = []
    while len(order) < n:
        cut = bisect_right(sorted_sizes, gap)
        key = query(0, cut) if cut else _INF
        if key == _INF:
            first = first_ready(cut) if cut < n else -1
            if first < 0:
                break  # nothing ready: cannot happen on a DAG
            key = query(first, bisect_right(sorted_sizes, sorted_sizes[first]))
        v = int(key) % n
        ready[v] = False
        scheduled[v] = True
        remove(v)
        order.append(v)

        live += node_size[v]
        if live > max_memory:
            max_memory = live
        live -= to_free[v]
        gap = max_memory - live

        for w in succ[v]:
            indegree[w] -= 1
            if indegree[w] == 0:
                ready[w] = True
                lower(w)
        for b in pred_buffers[v]:
            outdegree[b] -= 1
            if outdegree[b] == 1:
                # Inductor credits every reader; only unscheduled ones can still matter.
                for c in consumers[b]:
                    if not scheduled[c]:
                        to_free[c] += size[b]
                        if ready[c]:
                            lower(c)
    return order


def _bfs_order(index: GraphIndex) -> list[int]:
    """Inductor's ``topological_sort_bfs``: a heap keyed by the sorted execution positions
    of a node's predecessors, ties broken by index."""
    n = index.n_nodes
    preds = index.pred_lists
    succ = index.succ_lists
    indegree = [len(p) for p in preds]
    position = [-1] * n
    heap: list[tuple[tuple[int, ...], int]] = [((), v) for v in range(n) if indegree[v] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, v = heapq.heappop(heap)
        position[v] = len(order)
        order.append(v)
        for w in succ[v]:
            indegree[w] -= 1
            if indegree[w] == 0:
                prio = tuple(sorted(position[p] for p in preds[w]))
                heapq.heappush(heap, (prio, w))
    return order


def _dfs_order(index: GraphIndex) -> list[int]:
    """Inductor's ``topological_sort_dfs``: post-order DFS over predecessors, roots and
    predecessors visited by (size of outputs + size of freeable reads, index)."""
    n = index.n_nodes
    if n == 0:
        return []
    plan = _Planning(index)
    size = plan.size
    weight = [plan.node_size[v] + sum(size[b] for b in plan.pred_buffers[v]) for v in range(n)]
    by_priority = np.lexsort((np.arange(n), np.asarray(weight, dtype=np.int64))).tolist()
    rank = [0] * n
    for r, v in enumerate(by_priority):
        rank[v] = r
    preds = [sorted(p, key=rank.__getitem__) for p in index.pred_lists]

    seen = [False] * n
    order: list[int] = []
    for root in by_priority:
        if seen[root]:
            continue
        seen[root] = True
        stack: list[list[int]] = [[root, 0]]  # (node, next predecessor to look at)
        while stack:
            frame = stack[-1]
            v, i = frame
            pv = preds[v]
            while i < len(pv) and seen[pv[i]]:
                i += 1
            if i < len(pv):
                frame[1] = i + 1
                w = pv[i]
                seen[w] = True
                stack.append([w, 0])
            else:
                order.append(v)
                stack.pop()
    return order


def _finish(graph: Graph, name: str, order: list[int], started_s: float) -> ScheduleResult:
    index = graph.index
    if len(order) != index.n_nodes:  # only an unvalidated, cyclic graph gets here
        raise SchedulerError(
            f"{name}: only {len(order)} of {index.n_nodes} nodes could be ordered; "
            "the dependencies contain a cycle"
        )
    return finish_result(
        graph,
        name,
        np.asarray(order, dtype=np.int64),
        started_s,
        details={"mirrors": f"torch._inductor.memory.topological_sort_{name}"},
    )


def schedule_lpmf(graph: Graph, *, time_limit_s: float | None = None) -> ScheduleResult:
    """Inductor's "least peak memory first" greedy order.

    Mirrors ``torch._inductor.memory.topological_sort_lpmf`` (torch 2.13) with its
    default ``size_threshold_for_succ_based_strategy = 0``: among ready nodes, pick the
    least ``(size if size > memory_gap else 0, size - memory_to_free, index)``, where
    ``size`` is what the node allocates, ``memory_to_free`` what it releases (inputs it
    reads last, outputs no one reads) and ``memory_gap`` the headroom below the peak
    so far. Inductor's running estimate starts from the freeable graph inputs and the
    pinned outputs' total, and ignores workspace; both are kept as they are. Difference:
    the ready-set minimum is found with a segment tree over nodes sorted by size
    (same key, same tie-break) instead of a linear scan. ``time_limit_s`` is unused.

    >>> from traces.graph import Buffer, Node
    >>> g = Graph.build("v", [Node("a"), Node("b"), Node("c")],
    ...     [Buffer("x", 8, "a", ("c",)), Buffer("y", 1, "b", ("c",))])
    >>> schedule_lpmf(g).order
    ('b', 'a', 'c')
    """
    t0 = time.perf_counter()
    return _finish(graph, "lpmf", _lpmf_order(graph.index), t0)


def schedule_bfs(graph: Graph, *, time_limit_s: float | None = None) -> ScheduleResult:
    """Inductor's FIFO-like breadth-first order.

    Mirrors ``torch._inductor.memory.topological_sort_bfs`` (torch 2.13): a ready node's
    priority is the sorted list of its predecessors' execution positions, compared
    lexicographically (a prefix sorts first), ties broken by index. No deliberate
    difference; ``time_limit_s`` is unused.

    >>> from traces.graph import Buffer, Node
    >>> g = Graph.build("v", [Node("a"), Node("b"), Node("c")],
    ...     [Buffer("x", 8, "a", ("c",)), Buffer("y", 1, "b", ("c",))])
    >>> schedule_bfs(g).order
    ('a', 'b', 'c')
    """
    t0 = time.perf_counter()
    return _finish(graph, "bfs", _bfs_order(graph.index), t0)


def schedule_dfs(graph: Graph, *, time_limit_s: float | None = None) -> ScheduleResult:
    """Inductor's depth-first order.

    Mirrors ``torch._inductor.memory.topological_sort_dfs`` (torch 2.13): each node's
    weight is what it allocates plus the size of the freeable buffers it reads; roots
    of the outer loop, and each node's predecessors, are visited by ascending
    ``(weight, index)``, and a node is emitted after all its predecessors (post-order).
    Difference: an explicit stack instead of recursion, so deep graphs do not hit
    Python's recursion limit. ``time_limit_s`` is unused.

    >>> from traces.graph import Buffer, Node
    >>> g = Graph.build("v", [Node("a"), Node("b"), Node("c")],
    ...     [Buffer("x", 8, "a", ("c",)), Buffer("y", 1, "b", ("c",))])
    >>> schedule_dfs(g).order
    ('b', 'a', 'c')
    """
    t0 = time.perf_counter()
    return _finish(graph, "dfs", _dfs_order(graph.index), t0)
