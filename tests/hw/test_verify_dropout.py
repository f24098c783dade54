"""Random ops under activation checkpointing: what is saved, that it is in graph/1, and that
every order measures its prediction and draws the same random numbers.

torch.compile's Inductor path turns dropout's ``rand`` into one ``inductor_seeds`` draw per
graph (int64 seeds, 8 B per random op) that checkpointing saves for the backward's
recompute; with ``fallback_random`` checkpointing instead saves the whole CPU generator
state (``run_and_save_rng_state``, 5056 B per dropout), which FX traces without a value.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from hw.memory.capture import fx_graph_of
from hw.memory.fx_capture import CapturedStep, capture_step
from hw.memory.fx_graph import consumes_generator
from hw.memory.inductor_level import InductorRunner
from hw.memory.methods import random_topological_order
from hw.memory.models import AcMode, ModelSpec
from hw.memory.verify import FxRunner, verify_order
from hw.memory.wrapper_fold import fold_compiled
from scheduler.memory import simulate
from traces.graph import Graph

DROPOUTS = 2
SPEC = ModelSpec("mlp:blocks=2,dim=8,hidden=16,dropout=0.5", 2, AcMode.FULL, "float32", 0)


@pytest.fixture(scope="module")
def step() -> CapturedStep:
    return capture_step(SPEC)


def _draws(graph: torch.fx.GraphModule) -> list[str]:
    return [n.name for n in graph.graph.nodes if consumes_generator(n)]


def test_default_has_no_random_op_and_dropout_zero_is_the_default() -> None:
    plain = capture_step(ModelSpec("mlp:blocks=2,dim=8,hidden=16", 2, AcMode.FULL, "float32", 0))
    zero = capture_step(
        ModelSpec("mlp:blocks=2,dim=8,hidden=16,dropout=0", 2, AcMode.FULL, "float32", 0)
    )
    assert not _draws(plain.forward) and not _draws(plain.backward)
    assert plain.forward.code == zero.forward.code
    assert plain.backward.code == zero.backward.code


def test_checkpointing_saves_one_seed_per_dropout(step: CapturedStep) -> None:
    fw = fx_graph_of(step, "forward")
    bw = fx_graph_of(step, "backward")
    seeds = [n for n in step.forward.graph.nodes if "inductor_seeds" in str(n.target)]
    assert len(seeds) == 1  # one draw for the whole graph
    saved = fw.buffer(seeds[0].name) if hasattr(fw, "buffer") else None
    saved = next(b for b in fw.buffers if b.id == seeds[0].name)
    assert saved.pinned and saved.size_bytes == 8 * DROPOUTS  # handed to the backward
    inputs = {b.size_bytes for b in bw.buffers if b.producer is None and not b.pinned}
    assert 8 * DROPOUTS in inputs  # ... and read there by the recomputed dropouts
    # the draws keep their given order in every order of graph/1
    draws = _draws(step.forward)
    assert len(draws) == 1 + DROPOUTS
    assert all((a, b) in set(fw.edges) for a, b in itertools.pairwise(draws))


@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_orders_measure_their_prediction_with_the_same_random_numbers(
    step: CapturedStep, kind: str
) -> None:
    graph = fx_graph_of(step, kind)
    runner = FxRunner(step, kind)
    for seed in range(3):
        order = list(random_topological_order(graph, seed).order)
        result = verify_order(graph, order, runner=runner)
        assert result.measured_peak_bytes == result.predicted_peak_bytes
        assert result.order_applied and result.matches_default_result


def test_fallback_random_saves_the_generator_state_and_it_is_in_graph1() -> None:
    from torch._inductor import config

    with config.patch(fallback_random=True):
        step = capture_step(SPEC)
    fw_nodes = [n for n in step.forward.graph.nodes if "run_and_save_rng_state" in n.name]
    assert len(fw_nodes) == DROPOUTS and all(n.meta.get("val") is None for n in fw_nodes)
    state_bytes = torch.get_rng_state().numel()
    for kind in ("forward", "backward"):
        graph = fx_graph_of(step, kind)
        states = [b for b in graph.buffers if b.size_bytes == state_bytes and b.id.count("rng")]
        assert len(states) == DROPOUTS, [b.id for b in graph.buffers]
        runner = FxRunner(step, kind)
        order = list(random_topological_order(graph, 1).order)
        result = verify_order(graph, order, runner=runner)
        assert result.measured_peak_bytes == result.predicted_peak_bytes
        assert result.matches_default_result


@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_inductor_with_dropout_is_exact(step: CapturedStep, kind: str) -> None:
    """Compiled, the seeds are drawn once by an extern ``aten.randint.low_out`` call (its
    workspace is matched to the profiler's ``aten::randint``) and every kernel derives its
    random numbers from its seed: orders need no RNG edges to draw the same numbers."""
    runner = InductorRunner(step, kind)
    assert runner.described.get("extern_workspace") is not None  # every extern call matched
    graph: Graph = runner.default_graph()
    folded = fold_compiled(graph, runner.default_plan)
    assert simulate(folded, graph.node_ids).peak_bytes == runner.default_peak_bytes
    order = list(random_topological_order(graph, 2).order)
    result = verify_order(graph, order, runner=runner)
    assert result.predicted_with_reuse_bytes == result.measured_peak_bytes
    assert result.matches_default_result
