"""``hybrid`` against the exhaustive optimum and against every heuristic."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from scheduler.heuristics import schedule_bfs, schedule_dfs, schedule_lpmf
from scheduler.hybrid import schedule_hybrid
from scheduler.memory import check_order
from scheduler.sp import recognize
from scheduler.strategies import schedule, schedule_given
from scheduler.synthetic import make
from tests.scheduler.brute import brute_force_min_peak, random_dag, recount_peak
from tests.scheduler.test_ilp import _rich_dag
from traces.errors import OrderError
from traces.graph import Graph


def _heuristic_peaks(graph: Graph) -> dict[str, int]:
    out = {f.__name__: f(graph).peak_bytes for f in (schedule_lpmf, schedule_bfs, schedule_dfs)}
    idx = graph.index
    if bool((idx.dep_src < idx.dep_dst).all()):  # the given order is topological
        out["given"] = schedule_given(graph).peak_bytes
    return out


def _check(graph: Graph, result_order: tuple[str, ...]) -> None:
    pos = graph.index.position_of
    check_order(graph.index, np.array([pos[v] for v in result_order], dtype=np.int64))


@pytest.mark.parametrize("seed", range(60))
def test_hybrid_on_random_dags_is_valid_bounded_and_optimal_when_it_says_so(seed: int) -> None:
    graph = _rich_dag(7000 + seed)
    result = schedule_hybrid(graph, time_limit_s=20)
    _check(graph, result.order)
    opt = brute_force_min_peak(graph)
    assert result.peak_bytes == recount_peak(graph, list(result.order))
    assert result.lower_bound_bytes is not None
    assert result.lower_bound_bytes <= opt <= result.peak_bytes
    if result.optimal:
        assert result.peak_bytes == opt
    for name, peak in _heuristic_peaks(graph).items():
        assert result.peak_bytes <= peak, name


def test_hybrid_proves_most_small_graphs_optimal() -> None:
    proven = 0
    for seed in range(30):
        graph = random_dag(random.Random(seed), 9, max_consumers=3)
        result = schedule_hybrid(graph, time_limit_s=20)
        proven += result.optimal
        assert result.peak_bytes == brute_force_min_peak(graph)
    assert proven == 30


def test_hybrid_on_graphs_that_are_not_series_parallel() -> None:
    found = 0
    for seed in range(60):
        graph = random_dag(random.Random(seed), 9, max_consumers=3, p_extra_edge=0.1)
        if recognize(graph).is_sp:
            continue
        found += 1
        result = schedule_hybrid(graph, time_limit_s=20)
        _check(graph, result.order)
        assert result.optimal and result.peak_bytes == brute_force_min_peak(graph)
    assert found >= 20


@pytest.mark.parametrize("family", ["transformer", "layered", "in-tree", "sp"])
def test_hybrid_on_larger_families_beats_or_ties_every_heuristic(family: str) -> None:
    graph = make(family, 70, seed=2).to_graph()
    t0 = time.perf_counter()
    result = schedule_hybrid(graph, time_limit_s=4)
    assert time.perf_counter() - t0 < 12  # the budget, plus one last search step and replay
    _check(graph, result.order)
    assert result.peak_bytes == recount_peak(graph, list(result.order))
    for name, peak in _heuristic_peaks(graph).items():
        assert result.peak_bytes <= peak, name
    assert result.lower_bound_bytes is not None
    assert result.lower_bound_bytes <= result.peak_bytes
    details = result.details
    assert "phase_s" in details and "candidate_peaks_bytes" in details


def test_transformer_is_not_sp_and_hybrid_solves_it_exactly() -> None:
    graph = make("transformer", 70, seed=0).to_graph()
    assert not recognize(graph).is_sp
    result = schedule_hybrid(graph, time_limit_s=30)
    assert result.optimal
    assert result.details["cores"] >= 1 and max(result.details["core_sizes"]) > 9
    assert result.peak_bytes < min(_heuristic_peaks(graph).values())


def test_registered_as_hybrid_and_empty_graph() -> None:
    graph = _rich_dag(17, n=6)
    assert schedule(graph, "hybrid").strategy == "hybrid"
    empty = Graph.build("empty", [], [])
    result = schedule_hybrid(empty)
    assert result.order == () and result.optimal


def test_hybrid_is_never_worse_than_its_warm_start() -> None:
    for seed in range(10):
        graph = _rich_dag(8000 + seed, n=9)
        best = brute_force_order(graph)
        result = schedule_hybrid(graph, time_limit_s=10, warm_start=best)
        assert result.peak_bytes <= recount_peak(graph, best)
    graph = _rich_dag(8100, n=6)
    with pytest.raises(OrderError):
        schedule_hybrid(graph, warm_start=list(graph.node_ids)[:-1])


def brute_force_order(graph: Graph) -> list[str]:
    """An optimal order, by the exact search (itself tested against brute force)."""
    from scheduler.downset import search_min_peak

    res = search_min_peak(graph.index)
    assert res.order is not None
    return [graph.index.node_ids[v] for v in res.order]


@pytest.mark.parametrize("seed", range(8))
def test_hybrid_when_the_given_order_is_not_topological(seed: int) -> None:
    base = _rich_dag(9200 + seed, n=8)
    graph = Graph.build(base.name, reversed(base.nodes), base.buffers, base.edges)
    result = schedule_hybrid(graph, time_limit_s=10)
    _check(graph, result.order)
    assert result.peak_bytes == brute_force_min_peak(graph)
    assert result.optimal


def test_hybrid_proves_the_out_tree_by_the_decision_search() -> None:
    """The 100-node out-tree that neither ilp nor hybrid proved before the decision search;
    its optimum, 934,912 bytes, was also proven by the forward search without jumps
    (2.4 million states, 46 s), which is too slow for this test."""
    graph = make("out-tree", 100, seed=0).to_graph()
    result = schedule_hybrid(graph, time_limit_s=60)
    assert result.optimal and result.peak_bytes == 934_912
    assert result.details["core_results"][0]["how"] == "decision search: optimal"
