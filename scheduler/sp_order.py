"""Peak-memory-optimal orders of series-parallel graphs (Kayaaslan, Lambert, Marchal, Uçar,
"Scheduling series-parallel task graphs to minimize peak memory", TCS 2018).

Our buffers are mapped onto the paper's edge-weighted task graph (see
``docs/scheduler.md``, section "Series-parallel", for the mapping and the proof of when the
result is optimal under our model). The decomposition tree of :mod:`scheduler.sp` is
scheduled bottom-up, every subtree turned into a *chain*: its internal vertices in order
with their memory profile. A series node concatenates its children's chains; a parallel
node cuts every branch at its minimum resident point (the branch's minimum cut), merges the
branches' parts before the cut by Liu's rule on the reversed sequences and the parts after
the cut by Liu's rule (hill-valley segments in non-increasing order of hill minus valley).

>>> from traces.graph import Buffer, Graph, Node
>>> g = Graph.build("fork", [Node("a"), Node("b"), Node("c"), Node("d")],
...     [Buffer("x", 10, "a", ("b",)), Buffer("y", 1, "a", ("c",)),
...      Buffer("u", 1, "b", ("d",)), Buffer("v", 10, "c", ("d",))])
>>> r = schedule_sp(g)
>>> r.order, r.peak_bytes, r.optimal
(('a', 'b', 'c', 'd'), 12, True)
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass

import numpy as np

from scheduler.memory import simulate
from scheduler.result import ScheduleResult, finish_result
from scheduler.sp import Core, SPTree, TaskGraph, recognize
from traces.errors import DeltasimError
from traces.graph import Graph, GraphIndex

__all__ = [
    "Chain",
    "Segment",
    "Weights",
    "hill_valley_segments",
    "merge_chains",
    "schedule_core_serialized",
    "schedule_sp",
    "schedule_tree",
    "task_weights",
]

_REACH_BUDGET_PER_NODE = 64
_REFINE_ROUNDS = 3  # re-solves with the mapping that is exact for the best order so far
_NUMPY_FROM = 48  # sequences longer than this are segmented with numpy


@dataclass(frozen=True, eq=False)
class Weights:
    """Task-graph weights of one mapping of our buffers onto the paper's model.

    ``edge_bytes[e]`` is the file size of task-graph edge ``e``; ``node_bytes[v]`` is node
    ``v``'s own memory (workspace plus outputs nobody reads); ``constant_bytes`` is live at
    every step (pinned graph inputs; in the upper model also unread graph inputs).
    ``exact`` is true when this mapping gives the same memory as ours at every step of
    every order.
    """

    edge_bytes: np.ndarray
    node_bytes: np.ndarray
    constant_bytes: int
    exact: bool


@dataclass(frozen=True, slots=True)
class Segment:
    """Steps ``start..end`` (inclusive) of a chain: ``hill_bytes`` is the highest memory in
    them, ``valley_bytes`` the resident memory after ``end``."""

    start: int
    end: int
    hill_bytes: int
    valley_bytes: int


@dataclass(frozen=True, eq=False)
class Chain:
    """A schedule of an SP subgraph's internal vertices and its memory profile.

    Memory counts only the subgraph's own edges and vertices. ``exec_bytes[k]`` is the
    memory while ``order[k]`` runs (files produced and not yet consumed, plus the vertex's
    own memory and outputs); ``resident_bytes[k]`` is what stays after it. ``init_bytes``
    (the source's files into the subgraph) is resident before the first step and
    ``final_bytes`` (files into the sink) after the last one; for a subgraph without
    internal vertices both equal its total edge weight. A composite core edge is a macro
    task with exactly this profile.
    """

    order: np.ndarray
    exec_bytes: np.ndarray
    resident_bytes: np.ndarray
    init_bytes: int
    final_bytes: int

    def __len__(self) -> int:
        return len(self.order)

    @property
    def peak_bytes(self) -> int:
        """Highest memory of the subgraph alone (``init_bytes`` when it has no steps)."""
        return int(self.exec_bytes.max()) if len(self.order) else self.init_bytes

    def segments(self) -> tuple[Segment, ...]:
        """Liu's hill-valley segments of the whole chain."""
        return hill_valley_segments(self.exec_bytes, self.resident_bytes)


def _empty_chain(weight: int) -> Chain:
    z = np.zeros(0, dtype=np.int64)
    return Chain(z, z, z, weight, weight)


# ---------------------------------------------------------------- weights


def _determined_last_consumer(
    index: GraphIndex, consumers: list[int], pos: np.ndarray, budget: list[int]
) -> int | None:
    """The consumer that every other consumer precedes (so it is always the last to run),
    found by a reverse search bounded by ``budget``; None if absent or out of budget."""
    last = max(consumers, key=lambda c: pos[c])
    lo = min(pos[c] for c in consumers)
    want = set(consumers) - {last}
    ptr, idx = index.pred
    seen = {last}
    stack = [last]
    while stack and want:
        v = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            return None
        for u in idx[ptr[v] : ptr[v + 1]].tolist():
            if u not in seen and pos[u] >= lo:
                seen.add(u)
                want.discard(u)
                stack.append(u)
    return None if want else last


def _topological_positions(index: GraphIndex) -> np.ndarray:
    """Position of every node in one topological order (the given order need not be one)."""
    n = index.n_nodes
    indeg = np.bincount(index.dep_dst, minlength=n).tolist()
    ptr, idx = index.succ
    ptr_l, succ = ptr.tolist(), idx.tolist()
    ready = [v for v in range(n) if indeg[v] == 0]
    pos = np.zeros(n, dtype=np.int64)
    k = 0
    while ready:
        v = ready.pop()
        pos[v] = k
        k += 1
        for w in succ[ptr_l[v] : ptr_l[v + 1]]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    return pos


def task_weights(graph: Graph | GraphIndex, task: TaskGraph) -> tuple[Weights, Weights]:
    """The lower and the upper mapping of our buffers onto ``task``'s edges.

    A buffer with several consumers, none of which always runs last, is put on one
    consumer's edge in the lower mapping (its paper lifetime is shorter than ours) and on
    every consumer's edge in the upper mapping (counted once per unfinished consumer).
    Both mappings coincide, and are ``exact``, when every such buffer is pinned or has a
    consumer that the others precede, and no unpinned graph input is unread.
    """
    low, high, _ = _map_buffers(graph, task)
    return low, high


# (size, its edge in the lower mapping, [(reader, edge to it), ...])
_Undetermined = tuple[int, int, list[tuple[int, int]]]


def _map_buffers(
    graph: Graph | GraphIndex, task: TaskGraph
) -> tuple[Weights, Weights, list[_Undetermined]]:
    """:func:`task_weights` plus the buffers whose last reader depends on the order."""
    index = graph.index if isinstance(graph, Graph) else graph
    n = index.n_nodes
    src_v, snk_v = n, n + 1
    edge_of = task.edge_index()
    low = np.zeros(task.n_edges, dtype=np.int64)
    high = np.zeros(task.n_edges, dtype=np.int64)
    node = index.workspace.astype(np.int64).copy()
    const_low = 0
    const_high = 0
    exact = True
    pos = _topological_positions(index)
    budget = [_REACH_BUDGET_PER_NODE * (n + 1)]
    undetermined: list[_Undetermined] = []
    sizes = index.buf_size.tolist()
    prods = index.buf_producer.tolist()
    pinned = index.buf_pinned.tolist()
    for b, cons in enumerate(index.consumer_lists):
        size, p = sizes[b], prods[b]
        tail = src_v if p < 0 else p
        if pinned[b]:
            if p < 0:
                const_low += size
                const_high += size
            else:
                e = edge_of[(p, snk_v)]
                low[e] += size
                high[e] += size
            continue
        if not cons:
            if p < 0:
                const_high += size
                exact = exact and size == 0
            else:
                node[p] += size
            continue
        last = cons[0] if len(cons) == 1 else _determined_last_consumer(index, cons, pos, budget)
        if last is not None:
            e = edge_of[(tail, last)]
            low[e] += size
            high[e] += size
            continue
        exact = exact and size == 0
        low_edge = edge_of[(tail, max(cons, key=lambda c: pos[c]))]
        low[low_edge] += size
        readers = [(c, edge_of[(tail, c)]) for c in cons]
        for _, e in readers:
            high[e] += size
        undetermined.append((size, low_edge, readers))
    return (
        Weights(low, node, const_low, exact),
        Weights(high, node, const_high, exact),
        undetermined,
    )


def _retarget(
    low: Weights, high: Weights, undetermined: list[_Undetermined], order: np.ndarray
) -> Weights:
    """A mapping that is exact *for ``order``*: every order-dependent buffer goes on the
    edge to its last reader in ``order`` (a heuristic for other orders, used to improve an
    order by re-solving; never used for a bound)."""
    pos = np.empty(len(order), dtype=np.int64)
    pos[order] = np.arange(len(order))
    edge = low.edge_bytes.copy()
    for size, low_edge, readers in undetermined:
        edge[low_edge] -= size
        edge[max(readers, key=lambda ce: pos[ce[0]])[1]] += size
    return Weights(edge, low.node_bytes, high.constant_bytes, False)


# ---------------------------------------------------------------- hill-valley segments


def _suffix_last_arg(values: np.ndarray, use_max: bool) -> np.ndarray:
    """For each i, the last index j >= i where values[j] is the max (min) of values[i:]."""
    rev = values[::-1]
    acc = np.maximum.accumulate(rev) if use_max else np.minimum.accumulate(rev)
    rec = np.ones(len(rev), dtype=bool)
    rec[1:] = acc[1:] != acc[:-1]
    first = np.maximum.accumulate(np.where(rec, np.arange(len(rev)), 0))
    return (len(rev) - 1 - first)[::-1]


def hill_valley_segments(exec_bytes: np.ndarray, resident_bytes: np.ndarray) -> tuple[Segment, ...]:
    """Liu's decomposition: the first hill is the last step of highest memory, its valley
    the last step of lowest resident memory at or after it; repeat on what follows. Hills
    strictly decrease and valleys strictly increase, so hill minus valley strictly
    decreases along a chain."""
    n = len(exec_bytes)
    if n == 0:
        return ()
    hills = exec_bytes.tolist()
    valleys = resident_bytes.tolist()
    if n > _NUMPY_FROM:
        hill_at = _suffix_last_arg(exec_bytes, True).tolist()
        valley_at = _suffix_last_arg(resident_bytes, False).tolist()
    else:
        hill_at, valley_at = [0] * n, [0] * n
        hi, lo = n - 1, n - 1
        for i in range(n - 1, -1, -1):
            if hills[i] > hills[hi]:
                hi = i
            if valleys[i] < valleys[lo]:
                lo = i
            hill_at[i], valley_at[i] = hi, lo
    out: list[Segment] = []
    start = 0
    while start < n:
        h = hill_at[start]
        v = valley_at[h]
        out.append(Segment(start, v, hills[h], valleys[v]))
        start = v + 1
    return tuple(out)


# ---------------------------------------------------------------- composition


def _series(children: list[Chain | int], mids: list[int], node_bytes: np.ndarray) -> Chain:
    """Concatenate; a child without internal vertices is given as its weight (an int)."""
    lengths = [0 if isinstance(c, int) else len(c) for c in children]
    total = sum(lengths) + len(mids)
    order = np.empty(total, dtype=np.int64)
    execs = np.empty(total, dtype=np.int64)
    res = np.empty(total, dtype=np.int64)
    init = [c if isinstance(c, int) else c.init_bytes for c in children]
    final = [c if isinstance(c, int) else c.final_bytes for c in children]
    at = 0
    for i, c in enumerate(children):
        if i:
            m = mids[i - 1]
            order[at] = m
            execs[at] = final[i - 1] + int(node_bytes[m]) + init[i]
            res[at] = init[i]
            at += 1
        k = lengths[i]
        if k:
            assert not isinstance(c, int)
            order[at : at + k] = c.order
            execs[at : at + k] = c.exec_bytes
            res[at : at + k] = c.resident_bytes
            at += k
    return Chain(order, execs, res, init[0], final[-1])


def merge_chains(chains: list[Chain], constant_bytes: int = 0) -> Chain:
    """Interleave independent chains (the branches of a parallel composition, which share
    their two ends) so as to minimize the peak, keeping each chain's own order.

    Each chain is cut at its lowest resident point (its minimum cut); the parts before
    the cuts are merged by Liu's rule applied to the reversed sequences, then the parts
    after the cuts by Liu's rule. ``constant_bytes`` (files of branches without internal
    vertices) is live throughout.
    """
    chains = [c for c in chains if len(c)]
    base = constant_bytes + sum(c.init_bytes for c in chains)
    final = constant_bytes + sum(c.final_bytes for c in chains)
    if not chains:
        return _empty_chain(base)
    if len(chains) == 1 and constant_bytes == 0:
        return chains[0]
    pre: list[tuple[int, int, int, int, int]] = []  # (-(h - v), chain, seq, start, end)
    post: list[tuple[int, int, int, int, int]] = []
    for i, c in enumerate(chains):
        full = np.concatenate([[c.init_bytes], c.resident_bytes])
        cut = int(np.argmin(full))  # tasks [0, cut) before the cut
        if cut:
            rev_exec = c.exec_bytes[:cut][::-1]
            rev_res = full[:cut][::-1]  # resident *before* each task, i.e. after in reverse
            for k, s in enumerate(hill_valley_segments(rev_exec, rev_res)):
                a, b = cut - 1 - s.end, cut - 1 - s.start
                pre.append((-(s.hill_bytes - s.valley_bytes), i, k, a, b))
        if cut < len(c):
            for k, s in enumerate(hill_valley_segments(c.exec_bytes[cut:], c.resident_bytes[cut:])):
                post.append((-(s.hill_bytes - s.valley_bytes), i, k, cut + s.start, cut + s.end))
    pre.sort()
    post.sort()
    pieces = [(i, a, b) for _, i, _, a, b in reversed(pre)]
    pieces += [(i, a, b) for _, i, _, a, b in post]
    cur = [c.init_bytes for c in chains]
    total = base
    orders: list[np.ndarray] = []
    execs: list[np.ndarray] = []
    res: list[np.ndarray] = []
    for i, a, b in pieces:
        c = chains[i]
        off = total - cur[i]
        orders.append(c.order[a : b + 1])
        execs.append(c.exec_bytes[a : b + 1] + off)
        res.append(c.resident_bytes[a : b + 1] + off)
        after = int(c.resident_bytes[b])
        total += after - cur[i]
        cur[i] = after
    return Chain(
        np.concatenate(orders),
        np.concatenate(execs),
        np.concatenate(res),
        base,
        final,
    )


def schedule_tree(tree: SPTree, weights: Weights) -> Chain:
    """The schedule of ``tree``'s internal vertices that minimizes the peak of the subgraph
    under ``weights`` (the paper's algorithm), with its profile. Iterative: deep trees are
    fine."""
    edge_bytes = weights.edge_bytes.tolist()
    done: dict[int, Chain | int] = {}  # an int: a subgraph without internal vertices
    stack: list[tuple[SPTree, bool]] = [(tree, False)]
    while stack:
        t, expanded = stack.pop()
        if t.kind == "edge":
            done[id(t)] = edge_bytes[t.edge]
            continue
        if not expanded:
            stack.append((t, True))
            stack.extend((c, False) for c in t.children)
            continue
        kids = [done.pop(id(c)) for c in t.children]
        if t.kind == "series":
            done[id(t)] = _series(kids, list(t.mids), weights.node_bytes)
        else:
            const = sum(k for k in kids if isinstance(k, int))
            chains = [k for k in kids if not isinstance(k, int)]
            done[id(t)] = merge_chains(chains, const) if chains else const
    out = done[id(tree)]
    return _empty_chain(out) if isinstance(out, int) else out


# ---------------------------------------------------------------- strategies


_IN_HYBRID: contextvars.ContextVar[bool] = contextvars.ContextVar("sp_in_hybrid", default=False)


def _fallback_hybrid(graph: Graph, time_limit_s: float | None) -> ScheduleResult | None:
    """``schedule_hybrid``'s result, or None when that module is missing or fails. Guarded
    so that a hybrid strategy that itself calls ``schedule_sp`` cannot loop."""
    if _IN_HYBRID.get():
        return None
    try:
        from scheduler.hybrid import schedule_hybrid
    except ImportError:
        return None
    token = _IN_HYBRID.set(True)
    try:
        return schedule_hybrid(graph, time_limit_s=60.0 if time_limit_s is None else time_limit_s)
    except DeltasimError:
        return None
    finally:
        _IN_HYBRID.reset(token)


def _core_vertex_orders(graph: Graph, core: Core) -> list[list[int]]:
    """Topological orders of the core's vertices to try: the core's own (Kahn), and the
    graph's given order when that is topological (a captured graph's framework order)."""
    out = [list(core.vertices)]
    index = graph.index
    if not len(index.dep_src) or bool((index.dep_src < index.dep_dst).all()):
        n = core.task.n_nodes
        inner = sorted(v for v in core.vertices if v < n)
        given = [core.task.source, *inner, core.task.sink]
        if given != out[0]:
            out.append(given)
    return out


def schedule_core_serialized(graph: Graph, core: Core, weights: Weights) -> np.ndarray:
    """A heuristic order of a non-SP graph from its irreducible core.

    The core's vertices run in a topological order (the core's own, or the given order
    when it is topological); every composite core edge (an SP subgraph) is ordered
    optimally on its own and placed either right after its source or right before its
    sink (as if ordering edges made the graph SP); the chains placed in the same gap are
    merged by :func:`merge_chains`. Of these candidates the one with the lowest simulated
    peak is returned.
    """
    n = core.task.n_nodes
    chains = [(e, schedule_tree(e.tree, weights)) for e in core.edges]
    best: tuple[int, np.ndarray] | None = None
    for vertices in _core_vertex_orders(graph, core):
        at = {v: k for k, v in enumerate(vertices)}
        for late in (False, True):
            gaps: list[list[Chain]] = [[] for _ in vertices]
            for e, ch in chains:
                if len(ch):
                    gaps[at[e.sink] - 1 if late else at[e.source]].append(ch)
            parts: list[np.ndarray] = []
            for k, v in enumerate(vertices):
                if v < n:
                    parts.append(np.array([v], dtype=np.int64))
                if gaps[k]:
                    parts.append(merge_chains(gaps[k]).order)
            order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            peak = simulate(graph, order).peak_bytes
            if best is None or peak < best[0]:
                best = (peak, order)
    assert best is not None
    return best[1]


def schedule_sp(graph: Graph, *, time_limit_s: float | None = None) -> ScheduleResult:
    """Order ``graph`` with the series-parallel algorithm.

    SP graph, exact mapping: the optimal order (``optimal`` true). SP graph otherwise: the
    lower mapping's order, improved if its peak misses the lower mapping's optimum (a
    proven lower bound) by the upper mapping's order and re-solves with mappings exact for
    the best order so far (skipped past half of ``time_limit_s``; the SP algorithm itself
    is linear-ish and not time-limited); ``optimal`` true only if the peak meets the
    bound. Not SP: the ``hybrid`` strategy when it is available, else
    :func:`schedule_core_serialized`; ``optimal`` false unless a bound proves the order
    optimal; ``series_parallel``, ``witness`` and ``fallback`` in ``details``.
    """
    t0 = time.perf_counter()
    rec = recognize(graph)
    task = rec.task
    low, high, undetermined = _map_buffers(graph, task)
    if rec.tree is None:
        witness = list(rec.witness or ())
        details = {"series_parallel": False, "witness": witness}
        hyb = _fallback_hybrid(graph, time_limit_s)
        if hyb is not None:
            return finish_result(
                graph,
                "sp",
                hyb.order,
                t0,
                lower_bound_bytes=hyb.lower_bound_bytes,
                details={**details, "fallback": "hybrid"},
            )
        order = schedule_core_serialized(graph, rec.core, high)
        return finish_result(
            graph, "sp", order, t0, details={**details, "fallback": "core-serialized"}
        )
    chain_low = schedule_tree(rec.tree, low)
    model_low = chain_low.peak_bytes + low.constant_bytes
    if low.exact:
        return finish_result(
            graph,
            "sp",
            chain_low.order,
            t0,
            optimal=True,
            details={"series_parallel": True, "exact_model": True, "model_peak_bytes": model_low},
        )
    best_order = chain_low.order
    best_peak = simulate(graph, best_order, validate=False).peak_bytes
    details: dict[str, object] = {
        "series_parallel": True,
        "exact_model": False,
        "lower_model_peak_bytes": model_low,
        "improved_by": "lower",
    }
    if best_peak > model_low:  # the bound is not met: try other mappings' orders too
        chain_high = schedule_tree(rec.tree, high)
        details["upper_model_peak_bytes"] = chain_high.peak_bytes + high.constant_bytes
        peak = simulate(graph, chain_high.order, validate=False).peak_bytes
        if peak < best_peak:
            best_order, best_peak, details["improved_by"] = chain_high.order, peak, "upper"
        for _ in range(_REFINE_ROUNDS):
            late = time_limit_s is not None and time.perf_counter() - t0 > time_limit_s / 2
            if best_peak <= model_low or late:
                break
            chain = schedule_tree(rec.tree, _retarget(low, high, undetermined, best_order))
            peak = simulate(graph, chain.order, validate=False).peak_bytes
            if peak >= best_peak:
                break
            best_order, best_peak, details["improved_by"] = chain.order, peak, "retarget"
    order = best_order
    return finish_result(graph, "sp", order, t0, lower_bound_bytes=model_low, details=details)
