"""Synthetic graph families: valid graph/1, acyclic, sized as asked, seeded, shaped as named."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from scheduler import synthetic
from scheduler.errors import SchedulerError
from scheduler.memory import check_order, simulate
from tests.scheduler.brute import recount_peak
from traces.graph import Graph, graph_from_dict, graph_to_dict

EXACT_SIZE = ["layered", "sp", "sp-single", "chain", "in-tree", "out-tree"]
HAS_SP = importlib.util.find_spec("scheduler.sp") is not None


def _deps(graph: Graph) -> set[tuple[int, int]]:
    idx = graph.index
    return set(zip(idx.dep_src.tolist(), idx.dep_dst.tolist(), strict=True))


@pytest.mark.parametrize("family", list(synthetic.FAMILIES))
@pytest.mark.parametrize("n", [2, 17, 300])
def test_family_is_valid_graph1_and_round_trips(family: str, n: int) -> None:
    graph = synthetic.make(family, n, seed=n).to_graph()
    doc = graph_to_dict(graph)
    again = graph_from_dict(doc)
    assert graph_to_dict(again) == doc
    # The given order is topological (check_order raises otherwise) and covers every node.
    pos = check_order(graph, np.arange(len(graph)))
    assert sorted(pos.tolist()) == list(range(len(graph)))


@pytest.mark.parametrize("family", EXACT_SIZE)
@pytest.mark.parametrize("n", [2, 5, 64, 1000])
def test_family_has_requested_node_count(family: str, n: int) -> None:
    assert synthetic.make(family, n, seed=1).n_nodes == n


@pytest.mark.parametrize("layers", [1, 2, 7])
@pytest.mark.parametrize("checkpoint", [True, False])
def test_transformer_node_count_matches_layer_formula(layers: int, checkpoint: bool) -> None:
    g = synthetic.transformer_fwbw(layers, checkpoint=checkpoint)
    per = 10 + 14 + (8 if checkpoint else 0)
    assert g.n_nodes == 9 + per * layers
    target = g.n_nodes
    assert synthetic.transformer_layers_for_nodes(target, checkpoint=checkpoint) == layers


@pytest.mark.parametrize("family", list(synthetic.FAMILIES))
def test_same_seed_same_graph_other_seed_other_graph(family: str) -> None:
    a = graph_to_dict(synthetic.make(family, 200, seed=7).to_graph())
    b = graph_to_dict(synthetic.make(family, 200, seed=7).to_graph())
    c = graph_to_dict(synthetic.make(family, 200, seed=8).to_graph())
    assert a == b
    assert a != c


@pytest.mark.parametrize("family", list(synthetic.FAMILIES))
def test_array_index_equals_record_index(family: str) -> None:
    ga = synthetic.make(family, 400, seed=3)
    direct = ga.to_index()
    via_records = ga.to_graph().index
    assert direct.node_ids == via_records.node_ids
    for name in ("workspace", "buf_size", "buf_producer", "buf_pinned", "cons_ptr", "cons_idx"):
        assert np.array_equal(getattr(direct, name), getattr(via_records, name)), name
    assert np.array_equal(direct.dep_src, via_records.dep_src)
    assert np.array_equal(direct.dep_dst, via_records.dep_dst)


@pytest.mark.parametrize("family", list(synthetic.FAMILIES))
def test_given_order_peak_matches_naive_recount(family: str) -> None:
    graph = synthetic.make(family, 12, seed=5).to_graph()
    assert simulate(graph, graph.node_ids).peak_bytes == recount_peak(graph, graph.node_ids)


def test_huge_layered_graph_builds_as_arrays_only() -> None:
    index = synthetic.layered_dag(200_000, seed=0).to_index()
    assert index.n_nodes == 200_000
    order = np.arange(index.n_nodes)
    prof = simulate(index, order)
    assert prof.peak_bytes > 0
    # Every dependency goes forward in the given order: the generator's DAG guarantee.
    assert (index.dep_src < index.dep_dst).all()


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("seed", range(8))
def test_series_parallel_has_one_source_one_sink(single: bool, seed: int) -> None:
    graph = synthetic.series_parallel(60, seed=seed, single_consumer=single).to_graph()
    idx = graph.index
    n = len(graph)
    indeg = np.bincount(idx.dep_dst, minlength=n)
    outdeg = np.bincount(idx.dep_src, minlength=n)
    assert np.flatnonzero(indeg == 0).tolist() == [0]
    assert np.flatnonzero(outdeg == 0).tolist() == [n - 1]
    if single:
        assert all(len(b.consumers) <= 1 for b in graph.buffers)
    else:
        assert any(len(b.consumers) > 1 for b in graph.buffers)


def _sp_reduces_to_one_edge(graph: Graph) -> bool:
    """Independent SP check: series and parallel reductions shrink a TTSP DAG to one edge."""
    edges: dict[tuple[int, int], int] = {e: 1 for e in _deps(graph)}
    succ: dict[int, set[int]] = {}
    pred: dict[int, set[int]] = {}
    for u, v in edges:
        succ.setdefault(u, set()).add(v)
        pred.setdefault(v, set()).add(u)
    source, sink = 0, len(graph) - 1
    changed = True
    while changed:
        changed = False
        for x in list(succ):
            if x in (source, sink) or x not in succ:
                continue
            if len(pred.get(x, ())) == 1 and len(succ[x]) == 1:
                (u,) = pred[x]
                (w,) = succ[x]
                succ[u].discard(x)
                pred[w].discard(x)
                del succ[x], pred[x]
                succ[u].add(w)  # parallel duplicates merge in the set
                pred[w].add(u)
                changed = True
    return succ.get(source) == {sink} and len(succ) == 1


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("seed", range(10))
def test_series_parallel_reduces_to_single_edge(single: bool, seed: int) -> None:
    graph = synthetic.series_parallel(40, seed=seed, single_consumer=single).to_graph()
    assert _sp_reduces_to_one_edge(graph)


def test_layered_dag_is_usually_not_series_parallel() -> None:
    graphs = [synthetic.layered_dag(40, seed=s).to_graph() for s in range(5)]
    # A layered DAG has many sources; the reduction check must be able to say no.
    assert not any(_sp_reduces_to_one_edge(g) for g in graphs)


@pytest.mark.skipif(not HAS_SP, reason="scheduler/sp.py (another engineer's module) not present")
@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("n", [2, 3, 30, 400])
def test_series_parallel_recognized_by_scheduler_sp(single: bool, n: int) -> None:
    from scheduler.sp import recognize

    for seed in range(3):
        graph = synthetic.series_parallel(n, seed=seed, single_consumer=single).to_graph()
        assert recognize(graph).is_sp


def test_transformer_params_pinned_inputs_grads_pinned_outputs() -> None:
    graph = synthetic.transformer_fwbw(3, seed=0).to_graph()
    params = {b.id for b in graph.buffers if b.id.startswith("param.")}
    grads = {b.id for b in graph.buffers if b.id.startswith("grad.") or ".bw.w" in b.id}
    for b in graph.buffers:
        if b.id in params:
            assert b.producer is None and b.pinned and b.consumers
        if b.id in grads:
            assert b.pinned and b.producer is not None and not b.consumers
    # Every matrix/gain parameter has exactly one gradient (the loss head and embedding too).
    n_weight_grads = sum(1 for b in graph.buffers if b.pinned and b.producer is not None) - 1
    assert n_weight_grads == len(params)


def test_transformer_activation_sizes_follow_shapes() -> None:
    g = synthetic.transformer_fwbw(2, batch=2, seq=16, hidden=32, vocab=64, heads=4).to_graph()
    size = {b.id: b.size_bytes for b in g.buffers}
    act = 2 * 16 * 32 * 4
    assert size["L0.fw.ln1"] == act
    assert size["L0.fw.qkv"] == 3 * act
    assert size["head"] == 2 * 16 * 64 * 4
    ws = {n.id: n.workspace_bytes for n in g.nodes}
    assert ws["L1.fw.attn"] == 2 * 4 * 16 * 16 * 4


def test_checkpointing_recomputes_inside_backward_and_cuts_memory() -> None:
    ac = synthetic.transformer_fwbw(6, seed=0, checkpoint=True).to_graph()
    full = synthetic.transformer_fwbw(6, seed=0, checkpoint=False).to_graph()
    ids = ac.node_ids
    rc = [i for i, v in enumerate(ids) if ".rc." in v]
    assert len(rc) == 6 * 8 and not any(".rc." in v for v in full.node_ids)
    first_bw = ids.index("bw.loss")
    assert min(rc) > first_bw  # recomputation lives inside the backward
    # Without checkpointing, forward activations are handed to backward nodes.
    fw_to_bw = [
        b
        for b in full.buffers
        if b.producer and ".fw." in b.producer and any(".bw." in c for c in b.consumers)
    ]
    assert fw_to_bw
    assert simulate(ac, ac.node_ids).peak_bytes < simulate(full, full.node_ids).peak_bytes


def test_trees_have_tree_shape() -> None:
    g_in = synthetic.in_tree(200, seed=2).to_graph()
    outdeg = np.bincount(g_in.index.dep_src, minlength=200)
    assert (outdeg[:-1] == 1).all() and outdeg[-1] == 0
    g_out = synthetic.out_tree(200, seed=2, branching=3).to_graph()
    indeg = np.bincount(g_out.index.dep_dst, minlength=200)
    assert indeg[0] == 0 and (indeg[1:] == 1).all()
    assert max(len(b.consumers) for b in g_out.buffers) == 3


def test_bad_parameters_raise_semantic_errors() -> None:
    with pytest.raises(SchedulerError):
        synthetic.make("nope", 10)
    with pytest.raises(SchedulerError):
        synthetic.chain(0)
    with pytest.raises(SchedulerError):
        synthetic.transformer_fwbw(0)


@pytest.mark.parametrize("checkpoint", [True, False])
def test_forward_part_pins_saved_activations_backward_receives_them(checkpoint: bool) -> None:
    kw = {"seed": 1, "checkpoint": checkpoint}
    joint = synthetic.transformer_fwbw(3, **kw).to_graph()
    fw = synthetic.transformer_fwbw(3, part="forward", **kw).to_graph()
    bw = synthetic.transformer_fwbw(3, part="backward", **kw).to_graph()
    assert len(fw) + len(bw) == len(joint)
    assert fw.node_ids + bw.node_ids == joint.node_ids
    fw_nodes, bw_nodes = set(fw.node_ids), set(bw.node_ids)
    joint_buf = {b.id: b for b in joint.buffers}
    # Saved activations: produced in forward, read in backward.
    saved = {
        b.id
        for b in joint.buffers
        if b.producer in fw_nodes and any(c in bw_nodes for c in b.consumers)
    }
    assert saved
    fw_buf = {b.id: b for b in fw.buffers}
    bw_buf = {b.id: b for b in bw.buffers}
    for bid in saved:
        assert fw_buf[bid].pinned  # handed to backward
        assert bw_buf[bid].producer is None and not bw_buf[bid].pinned
        assert set(bw_buf[bid].consumers) == set(joint_buf[bid].consumers) & bw_nodes
    for b in fw.buffers:
        assert set(b.consumers) <= fw_nodes
        assert b.producer is None or b.producer in fw_nodes
    # Parameters stay pinned inputs on both sides.
    assert all(bw_buf[p].pinned for p in bw_buf if p.startswith("param."))
    # Checkpointing saves only each layer's input: fewer saved buffers than without.
    n_saved = len(saved)
    other = synthetic.transformer_fwbw(3, seed=1, checkpoint=not checkpoint).to_graph()
    other_fw = {v for v in other.node_ids[: other.node_ids.index("bw.loss")]}
    other_saved = sum(
        1
        for b in other.buffers
        if b.producer in other_fw and any(c not in other_fw for c in b.consumers)
    )
    assert (n_saved < other_saved) == checkpoint


def test_split_rejects_unknown_part() -> None:
    with pytest.raises(SchedulerError):
        synthetic.transformer_fwbw(1, part="middle")
