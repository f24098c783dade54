"""Fixed-capacity dispatch equals the batched dispatch when nothing is dropped, and drops
exactly the assignments past an expert's capacity."""

from __future__ import annotations

import pytest
import torch

from hw.moe.capacity import CapacityMoE, capacity_dispatch, expert_capacity
from hw.moe.dispatch import dispatch
from hw.moe.models import build_moe_classifier


def _model():
    return build_moe_classifier(
        gate="topk", n_experts=4, k=2, noisy=False, trunk="mlp", d_model=8, expert_hidden=8, seed=0
    ).eval()


def test_equals_batched_dispatch_when_capacity_holds_everything() -> None:
    model = _model()
    x = torch.randn(10, 40)
    with torch.no_grad():
        ref = model(x)
        out = CapacityMoE(model, capacity_factor=4.0)(x)  # capacity = N * k / M * 4 >= N
    torch.testing.assert_close(out, ref)


def test_assignments_past_capacity_are_dropped_in_sample_order() -> None:
    experts = torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()])
    h = torch.arange(1.0, 5.0).unsqueeze(1)  # 4 samples, all routed to expert 0
    idx = torch.zeros(4, 1, dtype=torch.long)
    active = torch.ones(4, 1, dtype=torch.bool)
    out = capacity_dispatch(h, experts, idx, active, capacity=2)
    assert out.squeeze().tolist() == [1.0, 2.0, 0.0, 0.0]
    ref, _ = dispatch(h, experts, idx, active)
    assert ref.squeeze().tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    ("n", "k", "m", "cf", "cap"), [(8, 2, 4, 1.0, 4), (8, 2, 4, 1.25, 5), (1, 1, 8, 1.0, 1)]
)
def test_expert_capacity(n: int, k: int, m: int, cf: float, cap: int) -> None:
    assert expert_capacity(n, k, m, cf) == cap
