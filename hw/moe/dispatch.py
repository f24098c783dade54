"""Batched expert dispatch: every expert runs once per batch on the samples routed to it.

Assignments ``(sample, slot)`` are grouped by expert with one stable sort, each
expert is called once on its rows, and the results are put back in place with
one ``index_copy``; the only Python loop is over the M experts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["combine", "dispatch"]


def dispatch(
    h: Tensor, experts: Sequence[nn.Module], idx: Tensor, active: Tensor
) -> tuple[Tensor, Tensor]:
    """Run ``experts[idx[n, s]](h[n])`` for every active slot, batched per expert.

    Returns ``(slot_out, counts)``: ``slot_out[n, s]`` is the expert's output
    (zeros on inactive slots) and ``counts[e]`` the number of samples expert
    ``e`` ran on in this batch.
    """
    n, slots = idx.shape
    flat_active = active.reshape(-1).nonzero().squeeze(1)
    flat_expert = idx.reshape(-1)[flat_active]
    order = torch.argsort(flat_expert, stable=True)
    flat_active, flat_expert = flat_active[order], flat_expert[order]
    counts = torch.bincount(flat_expert, minlength=len(experts))
    rows = torch.div(flat_active, slots, rounding_mode="floor")
    pieces: list[Tensor] = []
    start = 0
    for e, c in enumerate(counts.tolist()):
        if c:
            pieces.append(experts[e](h[rows[start : start + c]]))
            start += c
    if not pieces:
        d_out = experts[0](h[:0]).shape[1]
        return h.new_zeros(n, slots, d_out), counts
    ys = torch.cat(pieces)
    out = ys.new_zeros(n * slots, ys.shape[1]).index_copy(0, flat_active, ys)
    return out.view(n, slots, -1), counts


def combine(slot_out: Tensor, weights: Tensor) -> Tensor:
    """Weighted sum over slots: ``sum_s weights[n, s] * slot_out[n, s]``."""
    return torch.einsum("nsd,ns->nd", slot_out, weights.to(slot_out.dtype))
