"""Gates route exactly as defined on hand-built logits; losses match hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hw.moe.errors import MoEConfigError, UnknownGateError
from hw.moe.gates import (
    BudgetGate,
    TopKGate,
    TopPGate,
    budget_losses,
    build_gate,
    cv_squared,
    load_probability,
    shazeer_losses,
    switch_loss,
)


def _identity_router(gate: torch.nn.Module) -> None:
    with torch.no_grad():
        gate.router.weight.copy_(torch.eye(gate.router.weight.shape[0]))


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_topk_routes_to_the_k_largest_logits_with_softmax_weights() -> None:
    gate = TopKGate(4, 4, k=2, noisy=False).eval()
    _identity_router(gate)
    r = gate(torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, -1.0, 5.0, 4.0]]))
    assert r.experts.tolist() == [[1, 2], [2, 3]]
    e = math.e
    assert torch.allclose(r.weights, torch.tensor([[e / (e + 1), 1 / (e + 1)]] * 2))
    assert r.k.tolist() == [2, 2]


def test_topk_eval_override_of_k() -> None:
    gate = TopKGate(4, 4, k=2, noisy=False).eval()
    _identity_router(gate)
    r = gate(torch.tensor([[1.0, 3.0, 2.0, 0.0]]), k=3)
    assert r.experts.tolist() == [[1, 2, 0]]
    assert r.weights.sum().item() == pytest.approx(1.0)


def test_topp_takes_the_smallest_set_reaching_p() -> None:
    gate = TopPGate(4, 4, p=0.5).eval()
    _identity_router(gate)
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    h = probs.log()
    assert gate(h, p=0.5).k.tolist() == [1]  # 0.5 reaches 0.5
    assert gate(h, p=0.6).k.tolist() == [2]
    assert gate(h, p=0.9).k.tolist() == [3]
    assert gate(h, p=1.0).k.tolist() == [4]
    assert gate(h, p=1e-9).k.tolist() == [1]
    r = gate(h, p=0.6)
    assert r.experts[0, :2].tolist() == [0, 1]
    assert torch.allclose(r.weights[0, :2], torch.tensor([0.5, 0.3]))


def test_topp_matches_brute_force_on_random_logits() -> None:
    gen = torch.Generator().manual_seed(0)
    gate = TopPGate(6, 6).eval()
    _identity_router(gate)
    h = torch.randn(200, 6, generator=gen) * 2
    probs = torch.softmax(h, 1).numpy()
    for p in (0.2, 0.5, 0.75, 0.95):
        r = gate(h, p=p)
        for n in range(len(h)):
            s = np.sort(probs[n])[::-1]
            want = next(m for m in range(1, 7) if s[:m].sum() >= p - 1e-6)
            assert int(r.k[n]) == want
            chosen = set(r.experts[n][r.mask[n]].tolist())
            assert chosen == set(np.argsort(-probs[n])[:want].tolist())


def test_budget_gate_uses_the_predictors_k_and_renormalized_weights() -> None:
    gate = BudgetGate(4, 4, max_k=3, penalty=0.0).eval()
    _identity_router(gate)
    with torch.no_grad():
        last = gate.predictor[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))  # always k = 2
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    r = gate(probs.log())
    assert r.k.tolist() == [2]
    assert r.experts.tolist() == [[1, 3, 2]]
    assert torch.allclose(r.weights, torch.tensor([[0.4 / 0.7, 0.3 / 0.7, 0.0]]))
    r3 = gate(probs.log(), k=3)
    assert r3.k.tolist() == [3]
    assert torch.allclose(r3.weights, torch.tensor([[0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9]]))


def test_budget_gate_training_evaluates_all_prefixes() -> None:
    gate = BudgetGate(8, 6, max_k=4).train()
    r = gate(torch.randn(32, 8))
    assert r.compute.all() and r.prefix_weights is not None
    assert torch.allclose(r.prefix_weights.sum(2), torch.ones(32, 4))
    assert ((r.k >= 1) & (r.k <= 4)).all()


@pytest.mark.parametrize("name", ["topk", "topp", "budget"])
def test_k_bounds_hold_in_train_and_eval(name: str) -> None:
    gate = build_gate(name, 8, 5, **({"max_k": 3} if name == "budget" else {}))
    bound = {"topk": 2, "topp": 5, "budget": 3}[name]
    for mode in (True, False):
        gate.train(mode)
        r = gate(torch.randn(64, 8) * 3)
        assert ((r.k >= 1) & (r.k <= bound)).all()
        assert (r.weights[~r.mask] == 0).all()
        for row, m in zip(r.experts, r.mask, strict=True):  # distinct experts per sample
            assert len(set(row[m].tolist())) == int(m.sum())


def test_cv_squared_hand_value() -> None:
    assert cv_squared(torch.tensor([1.0, 2.0, 3.0])).item() == pytest.approx((2 / 3) / 4)


def test_shazeer_importance_loss_hand_value() -> None:
    gates_full = torch.tensor([[0.7, 0.3], [0.0, 1.0]])
    imp, load = shazeer_losses(gates_full, torch.tensor([1.0, 2.0]))
    assert imp.item() == pytest.approx(0.09, rel=1e-5)  # sums 0.7, 1.3: var 0.09, mean 1
    assert load.item() == pytest.approx((0.25) / (1.5**2), rel=1e-5)


def test_load_probability_hand_value() -> None:
    clean = torch.tensor([[1.0, 0.5, 0.0]])
    noisy = torch.tensor([[1.2, 0.1, 0.3]])
    got = load_probability(clean, noisy, torch.ones(1, 3), k=1)[0].tolist()
    # expert 0 is in the top 1: threshold is the 2nd largest (0.3); others compete with 1.2
    want = [_phi(1.0 - 0.3), _phi(0.5 - 1.2), _phi(0.0 - 1.2)]
    assert got == pytest.approx(want, rel=1e-5)


def test_switch_loss_hand_value() -> None:
    probs = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
    experts = torch.tensor([[0], [0]])
    mask = torch.ones(2, 1, dtype=torch.bool)
    assert switch_loss(probs, mask, experts).item() == pytest.approx(2 * 1.0 * 0.55)
    even = torch.tensor([[0], [1]])
    assert switch_loss(torch.full((2, 2), 0.5), mask, even).item() == pytest.approx(1.0)


def test_topk_aux_loss_is_weighted_importance_plus_load_without_noise() -> None:
    gate = TopKGate(2, 2, k=1, noisy=False, balance_weight=0.5).eval()
    _identity_router(gate)
    h = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    r = gate(h)
    importance = torch.tensor([2.0, 1.0])  # top-1 weights are 1
    load = torch.tensor([2.0, 1.0])
    want = 0.5 * (cv_squared(importance) + cv_squared(load))
    assert r.aux_loss.item() == pytest.approx(want.item())


def test_budget_losses_hand_value() -> None:
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])
    net, pred = budget_losses(logits, torch.zeros(1, 2), torch.tensor([0]), penalty=0.1)
    ce1, ce2 = math.log(2), math.log(1 + math.exp(-2))
    assert net.item() == pytest.approx((ce1 + ce2) / 2, rel=1e-6)
    assert pred.item() == pytest.approx(0.5 * (ce1 + 0.1) + 0.5 * (ce2 + 0.2), rel=1e-6)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: TopKGate(4, 4, k=5), "k must be"),
        (lambda: TopKGate(4, 4, k=0), "k must be"),
        (lambda: TopPGate(4, 4, p=0.0), "p must be in"),
        (lambda: TopPGate(4, 4, p=1.5), "p must be in"),
        (lambda: BudgetGate(4, 4, max_k=9), "max_k"),
        (lambda: BudgetGate(4, 4, penalty=-1), "penalty"),
        (lambda: build_gate("nope", 4, 4), "unknown gate 'nope'"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, match: str) -> None:
    with pytest.raises(MoEConfigError, match=match):
        make()


def test_unknown_gate_is_its_own_error() -> None:
    with pytest.raises(UnknownGateError):
        build_gate("xmoe", 4, 4)
