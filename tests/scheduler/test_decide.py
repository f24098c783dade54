"""The decision search (both directions), the descent built on it, and the ilp presolve."""

from __future__ import annotations

import random

import numpy as np
import pytest

from scheduler.decide import _Jumps, descend_min_peak, feasible_order, gcd_step
from scheduler.downset import _Model, search_min_peak
from scheduler.ilp import schedule_ilp
from scheduler.memory import check_order, simulate, trivial_lower_bound
from scheduler.presolve import presolve
from scheduler.subproblem import cut_segments, structural_lower_bound, topological_order
from scheduler.synthetic import make
from tests.scheduler.brute import (
    brute_force_min_peak,
    random_dag,
    random_topological_order,
    recount_peak,
)
from tests.scheduler.test_ilp import _rich_dag
from traces.graph import Buffer, Graph, Node

DIRECTIONS = ("forward", "backward", "both")


def _indices(graph: Graph, order: list[str]) -> np.ndarray:
    return np.array([graph.index.position_of[v] for v in order], dtype=np.int64)


@pytest.mark.parametrize("seed", range(60))
def test_decision_at_the_optimum_and_just_below_it(seed: int) -> None:
    """Yes at the brute-force optimum (with an order that keeps within it), a proven no
    one byte below, in each direction."""
    graph = _rich_dag(7000 + seed, n=random.Random(seed).randint(1, 10))
    opt = brute_force_min_peak(graph)
    for direction in DIRECTIONS:
        yes = feasible_order(graph.index, opt, directions=direction)
        assert yes.complete and yes.order is not None
        order = np.array(yes.order, dtype=np.int64)
        check_order(graph.index, order)
        assert simulate(graph, order).peak_bytes == opt
        no = feasible_order(graph.index, opt - 1, directions=direction)
        assert no.complete and no.order is None


@pytest.mark.parametrize("seed", range(30))
def test_backward_steps_replay_the_simulated_timeline(seed: int) -> None:
    """Walking an order backwards from the full set with ``unstep`` gives the simulator's
    memory at every step, and ends at the resident memory of the empty set."""
    graph = _rich_dag(7500 + seed)
    index = graph.index
    m = _Model(index)
    order = _indices(graph, random_topological_order(graph, random.Random(seed)))
    timeline = simulate(index, order).timeline_bytes.tolist()
    done, resident = (1 << index.n_nodes) - 1, m.r_full
    back = []
    for v in reversed(order.tolist()):
        cost, resident = m.unstep(done, resident, v)
        done &= ~(1 << v)
        back.append(cost)
    assert back[::-1] == timeline
    assert resident == (m.r0 if index.n_nodes else resident)


@pytest.mark.parametrize("seed", range(40))
def test_descent_from_a_poor_order_reaches_the_optimum_and_proves_it(seed: int) -> None:
    graph = _rich_dag(8000 + seed)
    rng = random.Random(seed)
    worst = max(
        (random_topological_order(graph, rng) for _ in range(10)),
        key=lambda o: simulate(graph, o).peak_bytes,
        default=[],
    )
    res = descend_min_peak(graph.index, _indices(graph, worst), step_bytes=1)
    opt = brute_force_min_peak(graph)
    assert res.complete and res.peak_bytes == res.bound_bytes == opt
    assert recount_peak(graph, [graph.index.node_ids[v] for v in res.order]) == opt


def test_descent_uses_the_size_gcd_as_its_step() -> None:
    kib = 1024
    for seed in range(10):
        base = _rich_dag(8500 + seed, n=8)
        graph = Graph.build(
            base.name,
            [Node(n.id, n.op, n.workspace_bytes * kib) for n in base.nodes],
            [
                Buffer(b.id, b.size_bytes * kib, b.producer, b.consumers, b.pinned)
                for b in base.buffers
            ],
            base.edges,
        )
        assert gcd_step(graph.index) % kib == 0
        start = np.arange(len(graph), dtype=np.int64)
        res = descend_min_peak(graph.index, start, step_bytes=gcd_step(graph.index))
        assert res.complete and res.peak_bytes == brute_force_min_peak(graph)


def test_truncated_descent_keeps_its_given_bound_and_a_valid_order() -> None:
    graph = make("layered", 60, seed=2).to_graph()
    index = graph.index
    lower = structural_lower_bound(index)
    start = np.arange(index.n_nodes, dtype=np.int64)
    res = descend_min_peak(index, start, lower_bound=lower, max_states=50)
    check_order(index, np.array(res.order, dtype=np.int64))
    assert res.peak_bytes <= simulate(index, start).peak_bytes
    assert res.bound_bytes == lower < res.peak_bytes and not res.complete
    cut = feasible_order(index, lower, max_states=10)
    assert not cut.complete and cut.order is None


@pytest.mark.parametrize("family", ["layered", "transformer", "in-tree", "out-tree", "sp"])
def test_descent_agrees_with_the_best_first_search(family: str) -> None:
    """Two independent exact methods on 30-node graphs give the same optimum."""
    graph = make(family, 30, seed=1).to_graph()
    index = graph.index
    best_first = search_min_peak(index, max_states=10**7)
    assert best_first.complete
    res = descend_min_peak(index, np.arange(index.n_nodes), step_bytes=gcd_step(index))
    assert res.complete and res.peak_bytes == best_first.peak_bytes


def _chain_of_blobs(seed: int) -> Graph:
    """Random blobs joined by cut nodes: several independent segments."""
    rng = random.Random(seed)
    nodes: list[Node] = []
    buffers: list[Buffer] = []
    prev = None
    for k in range(rng.randint(2, 3)):
        blob = random_dag(rng, rng.randint(2, 4), max_consumers=2)
        ren = {n.id: f"k{k}_{n.id}" for n in blob.nodes}
        nodes += [Node(ren[n.id], n.op, n.workspace_bytes) for n in blob.nodes]
        for b in blob.buffers:
            producer = ren[b.producer] if b.producer else prev
            buffers.append(
                Buffer(
                    f"k{k}_{b.id}",
                    b.size_bytes,
                    producer,
                    tuple(ren[c] for c in b.consumers),
                    b.pinned,
                )
            )
        if prev is not None:  # every node of the blob follows the previous cut node
            buffers.append(Buffer(f"k{k}_start", rng.randint(0, 20), prev, tuple(ren.values())))
        cut = f"cut{k}"
        nodes.append(Node(cut))
        buffers.append(
            Buffer(f"cut{k}_in", rng.randint(1, 50), None if prev is None else prev, (cut,))
        )
        for n in blob.nodes:  # the cut node follows every node of its blob
            buffers.append(Buffer(f"k{k}_{n.id}_done", rng.randint(0, 20), ren[n.id], (cut,)))
        prev = cut
    return Graph.build(f"blobs{seed}", nodes, buffers)


@pytest.mark.parametrize("seed", range(25))
def test_presolve_on_segmented_graphs_equals_brute_force(seed: int) -> None:
    graph = _chain_of_blobs(seed)
    index = graph.index
    assert len(cut_segments(index)) >= 2
    start = np.array(_indices(graph, random_topological_order(graph, random.Random(seed))))
    pre = presolve(index, start, deadline_s=float("inf"))
    order = pre.order
    check_order(index, order)
    opt = brute_force_min_peak(graph)
    assert simulate(index, order).peak_bytes == pre.peak_bytes == opt
    assert trivial_lower_bound(index) <= pre.bound_bytes == opt


@pytest.mark.parametrize("seed", range(40))
def test_ilp_says_truthfully_what_proved_it(seed: int) -> None:
    """``details.proof`` names the ILP only when the ILP ran, and the search only when it
    did; either way the claim is the brute-force optimum."""
    graph = _rich_dag(8800 + seed, n=random.Random(seed).randint(4, 10))
    rng = random.Random(seed)
    worst = max(
        (random_topological_order(graph, rng) for _ in range(10)),
        key=lambda o: simulate(graph, o).peak_bytes,
    )
    result = schedule_ilp(graph, warm_start=worst)
    proof = result.details["proof"]
    assert result.optimal and result.peak_bytes == brute_force_min_peak(graph)
    assert ("ILP" in proof) == (result.details["variables"] > 0)
    searched = [s for s in result.details["segment_results"] if s["search_states"] > 0]
    if "decision search" in proof:
        assert searched


def test_ilp_on_the_layered_benchmark_graph_is_proven_by_the_search() -> None:
    """The 100-node layered graph that the plain ILP does not prove in 60 s."""
    graph = make("layered", 100, seed=0).to_graph()
    result = schedule_ilp(graph, time_limit_s=60)
    assert result.optimal and result.peak_bytes == 1_104_896
    assert result.details["proof"].startswith("decision search")
    assert result.details["variables"] == 0


def _tree_like(seed: int) -> Graph:
    """Out-trees, in-trees and sparse DAGs of 8-13 nodes: many closed sub-DAGs to jump."""
    rng = random.Random(seed)
    family = ["out-tree", "in-tree", "layered", "sp"][seed % 4]
    if family in ("layered", "sp"):
        return random_dag(rng, rng.randint(8, 12), max_consumers=2, p_pinned=0.1)
    return make(family, rng.randint(8, 13), seed=seed).to_graph()


@pytest.mark.parametrize("seed", range(48))
def test_jumps_keep_the_decision_exact(seed: int) -> None:
    """Running a closed sub-DAG as one move changes no answer: yes at the optimum, no
    below it, and the descent's proven optimum is the brute-force one."""
    graph = _tree_like(seed)
    index = graph.index
    m = _Model(index)
    jumps = _Jumps(index, m)
    opt = brute_force_min_peak(graph)
    yes = feasible_order(index, opt, directions="forward", jumps=jumps)
    assert yes.complete and yes.order is not None
    assert simulate(index, np.array(yes.order, dtype=np.int64)).peak_bytes <= opt
    no = feasible_order(index, opt - 1, directions="forward", jumps=jumps)
    assert no.complete and no.order is None
    res = descend_min_peak(index, np.array(topological_order(index)), step_bytes=1)
    assert res.complete and res.peak_bytes == opt


def test_jumps_exist_on_trees_and_respect_pinned_outputs() -> None:
    tree = make("out-tree", 40, seed=0).to_graph().index
    jumps = _Jumps(tree, _Model(tree))
    assert jumps.mask  # subtrees are closed
    for c, order in jumps.order.items():
        sub = set(order)
        for v in order:  # every buffer made inside is read only inside and not pinned
            for b in tree.produced_by[v]:
                assert not tree.buf_pinned[b]
                assert set(tree.consumer_lists[b]) <= sub
        assert order[0] == c


@pytest.mark.parametrize("seed", range(15))
def test_ilp_finishes_segments_the_search_leaves_open(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the decision search made to give up at once, the ILP proves every open
    segment, and ``proof`` says so."""
    import scheduler.presolve as presolve_module
    from scheduler.decide import DescentOutcome

    def give_up(index, incumbent, *, lower_bound=0, **_kw):  # type: ignore[no-untyped-def]
        order = tuple(int(v) for v in incumbent)
        peak = simulate(index, np.asarray(order, dtype=np.int64)).peak_bytes
        return DescentOutcome(order, peak, min(lower_bound, peak), lower_bound >= peak, 0, 0)

    monkeypatch.setattr(presolve_module, "descend_min_peak", give_up)
    graph = _chain_of_blobs(100 + seed)
    rng = random.Random(seed)
    worst = max(
        (random_topological_order(graph, rng) for _ in range(10)),
        key=lambda o: simulate(graph, o).peak_bytes,
    )
    result = schedule_ilp(graph, warm_start=worst)
    assert result.optimal and result.peak_bytes == brute_force_min_peak(graph)
    assert "decision search" not in result.details["proof"]
    if any(s["how"].startswith("ILP") for s in result.details["segment_results"]):
        assert result.details["variables"] > 0
