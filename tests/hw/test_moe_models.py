"""MoE classifier: shapes, FLOPs against closed forms, training improves accuracy, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hw.moe.data import gaussian_mixture
from hw.moe.errors import MoEConfigError, UnknownGateError
from hw.moe.models import MoEConfig, build_mlp_classifier, build_moe_classifier, module_flops
from hw.moe.train import TrainConfig, calibrate_budget, evaluate, train

TINY = dict(d_model=16, expert_hidden=8, trunk="mlp")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: the test box is shared, and oversubscribed threads only spin."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def gmm():
    return gaussian_mixture(n_train=600, n_test=300, n_classes=4, n_features=8, seed=1)


@pytest.mark.parametrize(
    ("gate", "extra"), [("topk", {"k": 2}), ("topp", {"p": 0.7}), ("budget", {"max_k": 3})]
)
def test_forward_shapes_and_counts(gate: str, extra: dict) -> None:
    model = build_moe_classifier(12, 5, gate=gate, n_experts=4, seed=0, **TINY, **extra)
    model.eval()
    out = model.forward_detailed(torch.randn(30, 12))
    assert out.logits.shape == (30, 5)
    assert model(torch.randn(30, 12)).shape == (30, 5)
    assert int(out.counts.sum()) == int(out.routing.k.sum())


def test_flops_match_closed_form_for_mlp_trunk() -> None:
    model = build_moe_classifier(10, 3, gate="topk", n_experts=4, k=2, noisy=True, seed=0, **TINY)
    trunk, router, head = 2 * 10 * 16, 2 * 16 * 4, 2 * 16 * 3
    expert = 2 * 16 * 8 + 2 * 8 * 16
    assert model.flops_per_sample(2.0) == trunk + router + head + 2 * expert
    assert model.flops_per_sample(1.5) == trunk + router + head + 1.5 * expert


def test_conv_flops_counted_per_output_position() -> None:
    conv = torch.nn.Conv1d(1, 4, 3, padding=1)
    seq = torch.nn.Sequential(torch.nn.Unflatten(1, (1, 10)), conv)
    assert module_flops(seq, torch.zeros(1, 10)) == 2 * 3 * 4 * 10


@pytest.mark.parametrize(
    ("gate", "extra"), [("topk", {"k": 2}), ("topp", {"p": 0.6}), ("budget", {"max_k": 3})]
)
def test_training_on_a_tiny_set_improves_accuracy(gmm, gate: str, extra: dict) -> None:
    model = build_moe_classifier(8, 4, gate=gate, n_experts=4, seed=0, **TINY, **extra)
    before = evaluate(model, gmm.x_test, gmm.y_test).accuracy
    train(model, gmm, TrainConfig(epochs=4, batch_size=50, lr=1e-2, seed=0))
    after = evaluate(model, gmm.x_test, gmm.y_test)
    assert after.accuracy > before + 0.2
    assert after.accuracy > 0.6
    assert 1.0 <= after.mean_k <= {"topk": 2, "topp": 4, "budget": 3}[gate]


def test_same_seed_same_numbers(gmm) -> None:
    runs = []
    for _ in range(2):
        model = build_moe_classifier(8, 4, gate="topk", n_experts=4, k=2, seed=3, **TINY)
        train(model, gmm, TrainConfig(epochs=1, batch_size=50, seed=3))
        ev = evaluate(model, gmm.x_test, gmm.y_test)
        runs.append((ev.accuracy, ev.experts.copy(), ev.weights.copy()))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1]) and np.array_equal(runs[0][2], runs[1][2])


def test_evaluate_k_override_changes_experts_used(gmm) -> None:
    model = build_moe_classifier(8, 4, gate="topk", n_experts=4, k=2, seed=0, **TINY)
    for k in (1, 3, 4):
        ev = evaluate(model, gmm.x_test, gmm.y_test, k=k)
        assert (ev.k == k).all() and ev.counts.sum() == k * len(gmm.y_test)


def test_mlp_baseline_learns(gmm) -> None:
    torch.manual_seed(0)
    mlp = build_mlp_classifier(8, 4, hidden=32)
    train(mlp, gmm, TrainConfig(epochs=4, batch_size=50, lr=1e-2))
    assert evaluate(mlp, gmm.x_test, gmm.y_test).accuracy > 0.6
    with pytest.raises(MoEConfigError):
        evaluate(mlp, gmm.x_test, gmm.y_test, k=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 9}, "k must be"),
        ({"p": 0.0}, "p must be in"),
        ({"p": 1.01}, "p must be in"),
        ({"gate": "budget", "max_k": 9}, "max_k"),
        ({"trunk": "rnn"}, "trunk"),
        ({"n_experts": 0}, "n_experts"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs: dict, match: str) -> None:
    with pytest.raises(MoEConfigError, match=match):
        MoEConfig(**kwargs)


def test_unknown_gate_in_config() -> None:
    with pytest.raises(UnknownGateError, match="known gates: budget, topk, topp"):
        build_moe_classifier(gate="switch")


def test_budget_penalty_is_a_dial(gmm) -> None:
    """A prohibitive penalty makes the calibrated predictor pick k = 1 for every sample."""
    model = build_moe_classifier(8, 4, gate="budget", n_experts=4, max_k=3, seed=0, **TINY)
    train(model, gmm, TrainConfig(epochs=2, batch_size=50, seed=0, calibration_steps=0))
    x, y = torch.as_tensor(gmm.x_train[:200]), torch.as_tensor(gmm.y_train[:200])
    ks = []
    for penalty in (0.0, 10.0):
        model.gate.penalty = penalty
        with torch.no_grad():
            _, _, per_k = model.per_k_losses(x, y)
        before = float((per_k.mean(0) + penalty * torch.arange(1, 4)).min())
        final = calibrate_budget(model, x, y, steps=200)
        assert final <= before + 0.05  # no worse than the best constant k, up to softness
        ks.append(evaluate(model, gmm.x_test, gmm.y_test).mean_k)
    assert ks[1] == 1.0 and ks[0] >= ks[1]
