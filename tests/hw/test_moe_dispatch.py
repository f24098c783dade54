"""Batched dispatch equals a naive per-sample loop, runs every expert once, counts right."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hw.moe.dispatch import combine, dispatch


class Counting(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(self.lin(x))


def _random_routing(n: int, m: int, s: int, gen: torch.Generator) -> tuple:
    idx = torch.stack([torch.randperm(m, generator=gen)[:s] for _ in range(n)])
    k = torch.randint(1, s + 1, (n,), generator=gen)
    active = torch.arange(s)[None, :] < k[:, None]
    weights = torch.rand(n, s, generator=gen) * active
    return idx, active, weights


@pytest.mark.parametrize(("n", "m", "s"), [(1, 1, 1), (17, 5, 3), (64, 8, 8), (40, 6, 2)])
def test_dispatch_equals_naive_loop(n: int, m: int, s: int) -> None:
    gen = torch.Generator().manual_seed(n * 100 + m)
    torch.manual_seed(n)
    experts = nn.ModuleList(Counting(6, 4) for _ in range(m))
    h = torch.randn(n, 6, generator=gen, requires_grad=True)
    idx, active, weights = _random_routing(n, m, s, gen)
    slot_out, counts = dispatch(h, experts, idx, active)
    y = combine(slot_out, weights)
    assert all(e.calls <= 1 for e in experts)  # once per batch, never per sample
    naive = torch.zeros(n, 4)
    naive_counts = torch.zeros(m, dtype=torch.long)
    for i in range(n):
        for j in range(s):
            if active[i, j]:
                e = int(idx[i, j])
                naive[i] = naive[i] + weights[i, j] * experts[e](h[i : i + 1])[0]
                naive_counts[e] += 1
    assert torch.allclose(y, naive, atol=1e-6)
    assert counts.tolist() == naive_counts.tolist()
    assert (slot_out[~active] == 0).all()
    # gradients agree too
    g1 = torch.autograd.grad(y.sum(), [h, *experts.parameters()], allow_unused=True)
    g2 = torch.autograd.grad(naive.sum(), [h, *experts.parameters()], allow_unused=True)
    for a, b in zip(g1, g2, strict=True):
        if a is None or b is None:
            assert a is None or torch.all(a == 0)
            continue
        assert torch.allclose(a, b, atol=1e-5)


def test_dispatch_with_nothing_active() -> None:
    experts = nn.ModuleList(nn.Linear(3, 2) for _ in range(2))
    out, counts = dispatch(torch.randn(4, 3), experts, torch.zeros(4, 1, dtype=torch.long),
                           torch.zeros(4, 1, dtype=torch.bool))  # fmt: skip
    assert out.shape == (4, 1, 2) and (out == 0).all() and counts.tolist() == [0, 0]
