"""The SP ordering: optimal (equal to the exhaustive optimum) on SP graphs in the exact
class of docs/scheduler.md, honest bounds outside it, a chain profile that is the real
memory, Liu's merge optimal over all interleavings, and a working fallback on non-SP
graphs."""

from __future__ import annotations

import itertools
import random
import sys
import time
import types
from functools import cache

import networkx as nx
import numpy as np
import pytest

from scheduler.errors import SchedulerError
from scheduler.memory import simulate
from scheduler.result import ScheduleResult, finish_result
from scheduler.sp import SPTree, TaskGraph, recognize, reduce_sp, task_graph
from scheduler.sp_order import (
    Chain,
    Weights,
    hill_valley_segments,
    merge_chains,
    schedule_sp,
    schedule_tree,
    task_weights,
)
from scheduler.synthetic import series_parallel
from tests.scheduler.brute import brute_force_min_peak, random_dag, recount_peak
from tests.scheduler.sp_gen import random_sp_graph
from traces.graph import Buffer, Graph, Node


@pytest.mark.parametrize("seed", range(60))
def test_single_consumer_sp_graphs_reach_the_exhaustive_optimum(seed: int) -> None:
    rng = random.Random(seed)
    graph = random_sp_graph(rng, rng.randint(2, 11), p_parallel=rng.choice([0.2, 0.4, 0.6]))
    result = schedule_sp(graph)
    best = brute_force_min_peak(graph)
    assert result.details["series_parallel"] and result.details["exact_model"]
    assert result.peak_bytes == best == recount_peak(graph, list(result.order))
    assert result.optimal and result.lower_bound_bytes == best
    # The paper-model peak the algorithm computed is our model's peak, not an estimate.
    assert result.details["model_peak_bytes"] == best


def _with_earlier_readers(graph: Graph, rng: random.Random) -> Graph:
    """Add to some buffers extra consumers that precede the existing one, so each buffer
    still has a consumer that always runs last."""
    deps = nx.DiGraph()
    deps.add_nodes_from(graph.node_ids)
    deps.add_edges_from((b.producer, c) for b in graph.buffers if b.producer for c in b.consumers)
    deps.add_edges_from(graph.edges)
    bufs = []
    for b in graph.buffers:
        if b.producer and len(b.consumers) == 1 and not b.pinned and rng.random() < 0.6:
            (c,) = b.consumers
            between = nx.descendants(deps, b.producer) & nx.ancestors(deps, c)
            extra = rng.sample(sorted(between), min(len(between), rng.randint(1, 2)))
            b = Buffer(b.id, b.size_bytes, b.producer, (*extra, c), b.pinned)
        bufs.append(b)
    return Graph.build(graph.name, graph.nodes, bufs, graph.edges)


@pytest.mark.parametrize("seed", range(30))
def test_multi_reader_buffers_with_an_always_last_reader_are_exact(seed: int) -> None:
    rng = random.Random(300 + seed)
    graph = _with_earlier_readers(random_sp_graph(rng, rng.randint(3, 11)), rng)
    if not recognize(graph).is_sp:  # the extra reads may break SP; then nothing to claim
        return
    result = schedule_sp(graph)
    assert result.details["exact_model"]
    assert result.optimal and result.peak_bytes == brute_force_min_peak(graph)


@pytest.mark.parametrize("seed", range(50))
def test_multi_consumer_sp_graphs_have_honest_bounds(seed: int) -> None:
    rng = random.Random(700 + seed)
    graph = random_sp_graph(rng, rng.randint(3, 11), multi_consumer=True)
    result = schedule_sp(graph)
    best = brute_force_min_peak(graph)
    assert result.lower_bound_bytes is not None
    assert result.lower_bound_bytes <= best <= result.peak_bytes
    assert result.optimal == (result.peak_bytes == result.lower_bound_bytes)
    d = result.details
    if not d["exact_model"]:
        assert d["lower_model_peak_bytes"] <= result.lower_bound_bytes
        if "upper_model_peak_bytes" in d:  # solved only when the lower order misses the bound
            # The upper mapping over-counts every order, so its optimum bounds ours above.
            assert result.peak_bytes <= d["upper_model_peak_bytes"]


def test_multi_consumer_optimality_rate_is_reported() -> None:
    """Not a guarantee: how often the bound closes on random multi-reader SP graphs."""
    hits = total = 0
    for seed in range(40):
        rng = random.Random(900 + seed)
        graph = random_sp_graph(rng, rng.randint(3, 10), multi_consumer=True)
        result = schedule_sp(graph)
        best = brute_force_min_peak(graph)
        hits += result.peak_bytes == best
        total += 1
        assert result.peak_bytes >= best
    assert hits >= total // 2


@pytest.mark.parametrize("seed", range(10))
def test_whole_graph_chain_profile_is_the_simulated_timeline(seed: int) -> None:
    rng = random.Random(seed)
    graph = random_sp_graph(rng, rng.randint(5, 60))
    rec = recognize(graph)
    low, high = task_weights(graph, rec.task)
    assert low.exact and high.exact
    chain = schedule_tree(rec.tree, low)
    profile = simulate(graph, chain.order)
    np.testing.assert_array_equal(chain.exec_bytes + low.constant_bytes, profile.timeline_bytes)


def _recount_subgraph(
    task: TaskGraph, tree: SPTree, weights: Weights, order: list[int]
) -> tuple[list[int], list[int]]:
    """Memory of a subgraph's own edges and vertices along ``order``, counted naively."""
    edges = [
        (int(task.edge_src[e]), int(task.edge_dst[e]), int(weights.edge_bytes[e]))
        for e in tree.edges()
    ]
    done = {tree.source}
    execs, res = [], []
    for v in order:
        live = sum(w for a, b, w in edges if a in done and b not in done)
        out = sum(w for a, _, w in edges if a == v)
        execs.append(live + out + int(weights.node_bytes[v]))
        done.add(v)
        res.append(sum(w for a, b, w in edges if a in done and b not in done))
    return execs, res


@pytest.mark.parametrize("seed", range(12))
def test_core_edge_chains_are_topological_with_a_true_profile(seed: int) -> None:
    rng = random.Random(40 + seed)
    graph = random_dag(rng, rng.randint(6, 25))
    task = task_graph(graph)
    core = reduce_sp(task)
    _, high = task_weights(graph, task)
    dag = nx.DiGraph(list(zip(task.edge_src.tolist(), task.edge_dst.tolist(), strict=True)))
    for ce in core.edges:
        chain = schedule_tree(ce.tree, high)
        order = chain.order.tolist()
        assert sorted(order) == sorted(ce.tree.internal_vertices())
        seq = [ce.source, *order, ce.sink]
        at = {v: i for i, v in enumerate(seq)}
        assert all(at[a] < at[b] for a, b in dag.subgraph(seq).edges)
        execs, res = _recount_subgraph(task, ce.tree, high, order)
        assert chain.exec_bytes.tolist() == execs and chain.resident_bytes.tolist() == res
        assert chain.init_bytes == sum(
            int(high.edge_bytes[e]) for e in ce.tree.edges() if task.edge_src[e] == ce.source
        )


def _random_chain(rng: random.Random, length: int, first: int) -> Chain:
    res = [rng.randint(0, 30) for _ in range(length + 1)]
    execs = [max(res[k], res[k + 1]) + rng.randint(0, 30) for k in range(length)]
    order = np.arange(first, first + length, dtype=np.int64)
    return Chain(
        order, np.array(execs, dtype=np.int64), np.array(res[1:], dtype=np.int64), res[0], res[-1]
    )


def _best_interleaving(chains: list[Chain], const: int) -> int:
    lens = tuple(len(c) for c in chains)

    def cur(i: int, p: int) -> int:
        return chains[i].init_bytes if p == 0 else int(chains[i].resident_bytes[p - 1])

    @cache
    def best(pos: tuple[int, ...]) -> int:
        if pos == lens:
            return 0
        total = const + sum(cur(i, p) for i, p in enumerate(pos))
        out = None
        for i, p in enumerate(pos):
            if p < lens[i]:
                here = int(chains[i].exec_bytes[p]) + total - cur(i, p)
                val = max(here, best((*pos[:i], p + 1, *pos[i + 1 :])))
                out = val if out is None else min(out, val)
        assert out is not None
        return out

    return best(tuple(0 for _ in chains))


@pytest.mark.parametrize("seed", range(150))
def test_merge_chains_is_optimal_over_all_interleavings(seed: int) -> None:
    rng = random.Random(seed)
    k = rng.randint(2, 3)
    chains, first = [], 0
    for _ in range(k):
        length = rng.randint(1, 5 if k == 2 else 4)
        chains.append(_random_chain(rng, length, first))
        first += length
    const = rng.randint(0, 10)
    merged = merge_chains(chains, const)
    assert merged.peak_bytes == _best_interleaving(chains, const)
    # Each chain keeps its order, and the merged profile is the recomputed one.
    pos = {v: i for i, v in enumerate(merged.order.tolist())}
    for c in chains:
        assert [pos[v] for v in c.order.tolist()] == sorted(pos[v] for v in c.order.tolist())
    owner = {v: i for i, c in enumerate(chains) for v in c.order.tolist()}
    step = [0] * k
    cur = [c.init_bytes for c in chains]
    for t, v in enumerate(merged.order.tolist()):
        i = owner[v]
        rest = const + sum(cur) - cur[i]
        assert merged.exec_bytes[t] == chains[i].exec_bytes[step[i]] + rest
        cur[i] = int(chains[i].resident_bytes[step[i]])
        step[i] += 1
        assert merged.resident_bytes[t] == const + sum(cur)


@pytest.mark.parametrize("seed", range(30))
def test_hill_valley_segments_follow_liu(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 30)
    execs = np.array([rng.randint(0, 9) for _ in range(n)])
    res = np.array([rng.randint(0, 9) for _ in range(n)])
    segs = hill_valley_segments(execs, res)
    assert segs[0].start == 0 and segs[-1].end == n - 1
    for a, b in itertools.pairwise(segs):
        assert b.start == a.end + 1
        assert a.hill_bytes > b.hill_bytes and a.valley_bytes < b.valley_bytes
    for s in segs:
        rest_e, rest_r = execs[s.start :], res[s.start :]
        assert s.hill_bytes == rest_e.max()
        h = s.start + n - s.start - 1 - int(np.argmax(rest_e[::-1]))  # last max
        assert s.valley_bytes == res[h:].min() and res[s.end] == s.valley_bytes
        assert (res[s.end + 1 :] > s.valley_bytes).all() and (execs[h + 1 :] < s.hill_bytes).all()
        assert len(rest_r) >= 1


def _wheatstone() -> Graph:
    return Graph.build(
        "wheatstone",
        [Node(v) for v in "abcd"],
        [
            Buffer("ab", 3, "a", ("b",)),
            Buffer("ac", 30, "a", ("c",)),
            Buffer("bc", 5, "b", ("c",)),
            Buffer("bd", 50, "b", ("d",)),
            Buffer("cd", 7, "c", ("d",)),
        ],
    )


@pytest.mark.parametrize("seed", range(25))
def test_non_sp_graphs_fall_back_without_failing(seed: int) -> None:
    rng = random.Random(2000 + seed)
    graph = _wheatstone() if seed == 0 else random_dag(rng, rng.randint(4, 11))
    if recognize(graph).is_sp:
        return
    result = schedule_sp(graph)
    best = brute_force_min_peak(graph)
    assert result.strategy == "sp"
    assert result.details["series_parallel"] is False
    assert result.details["witness"] and result.details["fallback"]
    assert result.peak_bytes == recount_peak(graph, list(result.order)) >= best
    assert result.lower_bound_bytes is None or result.lower_bound_bytes <= best
    assert not result.optimal or result.peak_bytes == best


def test_deep_sp_graph_is_exact_and_consistent() -> None:
    graph = series_parallel(3000, seed=5, single_consumer=True).to_graph()
    result = schedule_sp(graph)
    assert result.optimal and result.details["exact_model"]
    assert result.details["model_peak_bytes"] == result.peak_bytes


@pytest.mark.benchmark
def test_ten_thousand_node_sp_graph_under_five_seconds() -> None:
    graph = series_parallel(10_000, seed=1).to_graph()
    t0 = time.perf_counter()
    result = schedule_sp(graph)
    seconds = time.perf_counter() - t0
    assert result.details["series_parallel"]
    assert seconds < 5.0, f"{seconds:.2f} s"


def _fake_hybrid(monkeypatch: pytest.MonkeyPatch, behaviour: str) -> list[str]:
    """Install a stand-in ``scheduler.hybrid`` whose strategy re-enters ``schedule_sp``
    (must not loop) or fails (must fall back to the core serialization)."""
    calls: list[str] = []
    module = types.ModuleType("scheduler.hybrid")

    def schedule_hybrid(graph: Graph, *, time_limit_s: float) -> ScheduleResult:
        calls.append(behaviour)
        if behaviour == "fail":
            raise SchedulerError("hybrid gave up")
        inner = schedule_sp(graph, time_limit_s=time_limit_s)
        assert inner.details["fallback"] == "core-serialized"
        return finish_result(graph, "hybrid", list(inner.order), time.perf_counter())

    module.schedule_hybrid = schedule_hybrid  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scheduler.hybrid", module)
    return calls


@pytest.mark.parametrize("behaviour", ["reenter", "fail"])
def test_hybrid_fallback_is_used_when_present_and_cannot_loop(
    monkeypatch: pytest.MonkeyPatch, behaviour: str
) -> None:
    calls = _fake_hybrid(monkeypatch, behaviour)
    result = schedule_sp(_wheatstone())
    assert calls == [behaviour]
    expected = "hybrid" if behaviour == "reenter" else "core-serialized"
    assert result.details["fallback"] == expected
    assert result.peak_bytes == recount_peak(_wheatstone(), list(result.order))


@pytest.mark.parametrize("seed", range(15))
def test_unread_graph_input_leaves_the_exact_class_but_stays_honest(seed: int) -> None:
    rng = random.Random(4000 + seed)
    base = random_sp_graph(rng, rng.randint(2, 10))
    graph = Graph.build(
        base.name,
        base.nodes,
        [*base.buffers, Buffer("unread", rng.randint(1, 200), None, ())],
        base.edges,
    )
    result = schedule_sp(graph)
    best = brute_force_min_peak(graph)
    assert not result.details["exact_model"]
    assert result.lower_bound_bytes is not None
    assert result.lower_bound_bytes <= best <= result.peak_bytes
    assert not result.optimal or result.peak_bytes == best
