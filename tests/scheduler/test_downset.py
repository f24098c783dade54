"""The exact set search and the sub-problem cutting that hybrid is built on."""

from __future__ import annotations

import random

import numpy as np
import pytest

from scheduler.downset import search_min_peak
from scheduler.memory import check_order, simulate, trivial_lower_bound
from scheduler.subproblem import (
    cut_segments,
    structural_lower_bound,
    subproblem,
    topological_order,
)
from scheduler.synthetic import make
from tests.scheduler.brute import brute_force_min_peak, random_dag, random_topological_order
from tests.scheduler.test_ilp import _rich_dag
from traces.graph import Buffer, Graph, Node


@pytest.mark.parametrize("seed", range(80))
def test_search_equals_brute_force_optimum(seed: int) -> None:
    graph = _rich_dag(3000 + seed, n=random.Random(seed).randint(1, 10))
    opt = brute_force_min_peak(graph)
    for lower in (0, trivial_lower_bound(graph)):
        res = search_min_peak(graph.index, lower_bound=lower)
        assert res.complete and res.order is not None
        order = np.array(res.order)
        check_order(graph.index, order)
        assert simulate(graph, order).peak_bytes == opt
    # asked for strictly better than the optimum, it proves there is none
    res = search_min_peak(graph.index, upper_bound=opt)
    assert res.complete and res.order is None and res.bound_bytes == opt


def test_truncated_search_still_proves_a_lower_bound() -> None:
    for seed in range(20):
        graph = random_dag(random.Random(seed), 11, max_consumers=3)
        opt = brute_force_min_peak(graph)
        res = search_min_peak(graph.index, max_states=5)
        assert res.bound_bytes <= opt
        if res.complete:
            assert res.peak_bytes == opt


@pytest.mark.parametrize("seed", range(60))
def test_window_memory_plus_offset_is_the_full_timeline(seed: int) -> None:
    graph = _rich_dag(4000 + seed)
    index = graph.index
    rng = random.Random(seed)
    order = np.array([index.position_of[v] for v in random_topological_order(graph, rng)])
    prof = simulate(index, order)
    n = len(order)
    for _ in range(4):
        i = rng.randint(0, max(0, n - 1))
        j = rng.randint(i + 1, n) if n else 0
        if n == 0:
            break
        sub = subproblem(index, order, i, j)
        local = simulate(sub.index, np.arange(j - i)).timeline_bytes
        assert (local + sub.offset_bytes).tolist() == prof.timeline_bytes[i:j].tolist()


def test_reordering_a_window_optimally_never_raises_the_peak() -> None:
    for seed in range(30):
        graph = _rich_dag(5000 + seed, n=10)
        index = graph.index
        order = np.array(topological_order(index))
        before = simulate(index, order).timeline_bytes
        i, j = 2, 8
        sub = subproblem(index, order, i, j)
        res = search_min_peak(sub.index)
        new = order.copy()
        new[i:j] = sub.nodes[np.array(res.order, dtype=np.int64)]
        after = simulate(index, new).timeline_bytes
        assert after[:i].tolist() == before[:i].tolist()
        assert after[j:].tolist() == before[j:].tolist()
        assert after[i:j].max() <= before[i:j].max()


def test_segments_are_contiguous_in_every_topological_order() -> None:
    for fam, n in (("chain", 12), ("transformer", 40), ("sp", 30), ("layered", 20)):
        graph = make(fam, n, seed=1).to_graph()
        segments = cut_segments(graph.index)
        assert sorted(v for s in segments for v in s) == list(range(len(graph)))
        rng = random.Random(n)
        for _ in range(5):
            pos = graph.index.position_of
            order = [pos[v] for v in random_topological_order(graph, rng)]
            expect = [v for s in segments for v in sorted(s, key=order.index)]
            assert sorted(order[: len(segments[0])]) == sorted(segments[0])
            assert [order.index(v) for v in expect] == list(range(len(order)))
    assert len(cut_segments(make("chain", 12, seed=0).to_graph().index)) == 12


@pytest.mark.parametrize("seed", range(40))
def test_structural_bound_is_valid_and_at_least_trivial(seed: int) -> None:
    graph = _rich_dag(6000 + seed)
    bound = structural_lower_bound(graph.index)
    assert trivial_lower_bound(graph) <= bound <= brute_force_min_peak(graph)


def test_structural_bound_sees_what_ancestors_left_live() -> None:
    """b runs after a, whose output x waits for c: x is live at b's step in every order."""
    graph = Graph.build(
        "anc",
        [Node("a"), Node("b"), Node("c")],
        [Buffer("x", 100, "a", ("c",)), Buffer("y", 1, "a", ("b",)), Buffer("z", 1, "b", ("c",))],
    )
    assert trivial_lower_bound(graph) == 101
    assert structural_lower_bound(graph.index) == brute_force_min_peak(graph) == 102
