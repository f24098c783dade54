"""Fixed-capacity (GShard/Switch-style) dispatch: the compile-friendly form of the MoE layer.

:func:`hw.moe.dispatch.dispatch` groups samples per expert with data-dependent
shapes, which torch.compile cannot trace into one graph. Here every expert
gets exactly ``capacity`` rows (assignments past an expert's capacity are
dropped, as in GShard), so all shapes are static and the layer captures as one
forward/backward graph for the peak-memory study (``hw capture moe``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hw.moe.dispatch import combine
from hw.moe.models import MoEClassifier

__all__ = ["CapacityMoE", "capacity_dispatch", "expert_capacity"]


def expert_capacity(n_samples: int, k: int, n_experts: int, capacity_factor: float) -> int:
    """Rows per expert: ``ceil(capacity_factor * N * k / M)``, at least 1."""
    return max(1, math.ceil(capacity_factor * n_samples * k / n_experts))


def capacity_dispatch(
    h: Tensor, experts: Sequence[nn.Module], idx: Tensor, active: Tensor, capacity: int
) -> Tensor:
    """``slot_out[n, s] = experts[idx[n, s]](h[n])`` for active slots within capacity, else 0.

    Assignments claim an expert's rows in sample order; the ones past
    ``capacity`` are dropped (output 0), exactly as GShard's capacity rule.
    """
    n, slots = idx.shape
    m = len(experts)
    onehot = F.one_hot(idx.reshape(-1), m) * active.reshape(-1, 1).to(torch.long)  # [T, M]
    pos = torch.cumsum(onehot, 0) - 1  # row each assignment would take in its expert
    keep = onehot.bool() & (pos < capacity)
    disp = F.one_hot(pos.clamp(0, capacity - 1), capacity) * keep.unsqueeze(-1)  # [T, M, C]
    disp = disp.to(h.dtype)
    per_slot = h.repeat_interleave(slots, 0)  # [T, d]
    x_e = torch.einsum("tmc,td->mcd", disp, per_slot)
    y_e = torch.stack([experts[e](x_e[e]) for e in range(m)])  # [M, C, d_out]
    return torch.einsum("tmc,mcd->td", disp, y_e).view(n, slots, -1)


class CapacityMoE(nn.Module):
    """An :class:`MoEClassifier` run with fixed-capacity dispatch (same weights, same gate).

    ``wrap`` (e.g. activation checkpointing) is applied to the expert layer.
    """

    def __init__(
        self,
        model: MoEClassifier,
        capacity_factor: float = 2.0,
        wrap: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.capacity_factor = capacity_factor
        self.wrap = wrap

    def _experts(self, h: Tensor, idx: Tensor, active: Tensor, weights: Tensor) -> Tensor:
        cfg = self.model.cfg
        k = idx.shape[1]
        cap = expert_capacity(h.shape[0], k, cfg.n_experts, self.capacity_factor)
        return combine(capacity_dispatch(h, self.model.experts, idx, active, cap), weights)

    def forward(self, x: Tensor) -> Tensor:
        h = self.model.trunk(x)
        routing = self.model.gate(h)
        args = (h, routing.experts, routing.compute, routing.weights)
        z = self.wrap(self._experts, *args) if self.wrap else self._experts(*args)
        return self.model.head(z)
