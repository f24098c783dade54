"""The MoE classifier (trunk -> gate + M expert MLPs -> head), its MLP baseline, and FLOPs.

:func:`build_moe_classifier` is the plain factory other areas use (graph
capture takes it as a built-in model); :class:`MoEConfig` holds every setting
and validates it, so a bad k or p fails before any tensor is made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hw.moe.dispatch import combine, dispatch
from hw.moe.errors import MoEConfigError, UnknownGateError
from hw.moe.gates import (
    GATES,
    BudgetGate,
    Gate,
    GateName,
    Routing,
    budget_losses,
    build_gate,
    check_k,
    check_p,
)

__all__ = [
    "TRUNKS",
    "MoEClassifier",
    "MoEConfig",
    "MoEOutput",
    "build_mlp_classifier",
    "build_moe_classifier",
    "module_flops",
]

TRUNKS = ("mlp", "conv")


@dataclass(frozen=True)
class MoEConfig:
    """Sizes and gate settings of an MoE classifier; only the chosen gate's knobs are used.

    ``k`` is the top-k gate's k, ``p`` the top-p gate's mass, ``max_k`` the
    budget gate's K and ``penalty`` its compute penalty per expert.
    """

    n_features: int = 40
    n_classes: int = 10
    trunk: str = "mlp"
    d_model: int = 64
    n_experts: int = 8
    expert_hidden: int = 64
    conv_channels: int = 16
    gate: str = "topk"
    k: int = 2
    noisy: bool = True
    balance: str = "shazeer"
    weighting: str = "softmax"
    balance_weight: float = 0.01
    p: float = 0.5
    entropy_weight: float = 0.01
    max_k: int = 4
    penalty: float = 0.01

    def __post_init__(self) -> None:
        if str(self.gate) not in GATES:
            raise UnknownGateError(str(self.gate), sorted(GATES))
        object.__setattr__(self, "gate", str(self.gate))
        if self.trunk not in TRUNKS:
            raise MoEConfigError(f"trunk must be one of {', '.join(TRUNKS)}, got {self.trunk!r}")
        for name in ("n_features", "n_classes", "d_model", "n_experts", "expert_hidden"):
            if getattr(self, name) < 1:
                raise MoEConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_classes < 2:
            raise MoEConfigError(f"n_classes must be >= 2, got {self.n_classes}")
        # every knob is checked, the chosen gate's or not: a bad value is a bad argument
        check_k(self.k, self.n_experts)
        check_p(self.p)
        check_k(self.max_k, self.n_experts, "max_k (K)")
        if self.penalty < 0:
            raise MoEConfigError(f"compute penalty must be >= 0, got {self.penalty}")

    def gate_params(self) -> dict[str, Any]:
        """Keyword arguments of the chosen gate's constructor."""
        if self.gate == GateName.TOPK:
            return dict(
                k=self.k,
                noisy=self.noisy,
                balance=self.balance,
                balance_weight=self.balance_weight,
                weighting=self.weighting,
            )
        if self.gate == GateName.TOPP:
            return dict(
                p=self.p, entropy_weight=self.entropy_weight, balance_weight=self.balance_weight
            )
        return dict(max_k=self.max_k, penalty=self.penalty, balance_weight=self.balance_weight)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MoEOutput:
    """Logits, the routing that produced them, and per-expert sample counts of this batch."""

    logits: Tensor
    routing: Routing
    counts: Tensor  # [M] samples that *use* each expert (chosen slots)
    evaluated_counts: Tensor  # [M] samples each expert actually ran on
    logits_per_k: Tensor | None = None  # budget gate training: [N, K, C] logits at k = 1..K

    @property
    def aux_loss(self) -> Tensor:
        return self.routing.aux_loss


def _trunk(cfg: MoEConfig) -> nn.Module:
    if cfg.trunk == "mlp":
        return nn.Sequential(nn.Linear(cfg.n_features, cfg.d_model), nn.ReLU())
    c = cfg.conv_channels
    length = cfg.n_features
    for _ in range(3):
        length = (length + 1) // 2
    return nn.Sequential(
        nn.Unflatten(1, (1, cfg.n_features)),
        nn.Conv1d(1, c, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv1d(c, c, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(c, c, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c * length, cfg.d_model),
        nn.ReLU(),
    )


def _expert(cfg: MoEConfig) -> nn.Module:
    return nn.Sequential(
        nn.Linear(cfg.d_model, cfg.expert_hidden),
        nn.ReLU(),
        nn.Linear(cfg.expert_hidden, cfg.d_model),
    )


class MoEClassifier(nn.Module):
    """``head(sum_j w_j * expert_j(trunk(x)))`` over the experts the gate picks."""

    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = _trunk(cfg)
        self.gate: Gate = build_gate(cfg.gate, cfg.d_model, cfg.n_experts, **cfg.gate_params())
        self.experts = nn.ModuleList(_expert(cfg) for _ in range(cfg.n_experts))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(cfg.d_model, cfg.n_classes))

    def forward_detailed(
        self, x: Tensor, k: int | None = None, p: float | None = None
    ) -> MoEOutput:
        """Forward pass with its routing; ``k``/``p`` override the gate's own at evaluation."""
        h = self.trunk(x)
        routing = self.gate(h, k=k, p=p)
        slot_out, evaluated = dispatch(h, self.experts, routing.experts, routing.compute)
        z = combine(slot_out, routing.weights)
        counts = torch.bincount(routing.experts[routing.mask], minlength=self.cfg.n_experts)
        per_k = None
        if routing.prefix_weights is not None:
            per_k = self.head(torch.einsum("nsd,nks->nkd", slot_out, routing.prefix_weights))
        return MoEOutput(self.head(z), routing, counts, evaluated, per_k)

    def training_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy plus the gate's auxiliary losses (and the budget gate's own losses)."""
        out = self.forward_detailed(x)
        if out.logits_per_k is not None and out.routing.k_scores is not None:
            net, pred = budget_losses(out.logits_per_k, out.routing.k_scores, y, self.cfg.penalty)
            return net + pred + out.aux_loss
        return F.cross_entropy(out.logits, y) + out.aux_loss

    def per_k_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Budget gate: ``(gate input, gate probabilities, per-sample loss at k = 1..K)``."""
        gate = self.gate
        if not isinstance(gate, BudgetGate):
            raise MoEConfigError("per-k losses need the budget gate")
        h = self.trunk(x)
        probs = torch.softmax(gate.router(h), dim=1)
        big_k = gate.max_k
        top_p, top_idx = probs.topk(big_k, dim=1)
        prefix_w = gate.prefix_weights(top_p)
        slot_out, _ = dispatch(h, self.experts, top_idx, torch.ones_like(top_idx, dtype=torch.bool))
        logits = self.head(torch.einsum("nsd,nks->nkd", slot_out, prefix_w))
        n, _, c = logits.shape
        per_k = F.cross_entropy(
            logits.reshape(n * big_k, c), y.repeat_interleave(big_k), reduction="none"
        ).view(n, big_k)
        return h, probs, per_k

    def forward(self, x: Tensor) -> Tensor:
        """Logits only (the plain module interface, e.g. for graph capture)."""
        return self.forward_detailed(x).logits

    def flops_per_sample(self, mean_k: float) -> float:
        """Forward FLOPs of one sample using ``mean_k`` experts on average (2 per multiply-add)."""
        x = torch.zeros(1, self.cfg.n_features)
        h = self.trunk(x)
        fixed = module_flops(self.trunk, x) + module_flops(self.gate, h)
        fixed += module_flops(self.head, h)
        return fixed + mean_k * module_flops(self.experts[0], h)


def module_flops(module: nn.Module, x: Tensor) -> float:
    """FLOPs of the Linear and Conv1d layers of ``module`` (all of them, called or not) on ``x``.

    Layers are sized by a forward hook where ``module`` can run on ``x``; a
    gate is not run (its layers are sized from their shapes: one row in).
    """
    if isinstance(module, Gate):  # the noise layer only runs while training
        return sum(
            2.0 * sub.in_features * sub.out_features
            for name, sub in module.named_modules()
            if isinstance(sub, nn.Linear) and not name.startswith("noise")
        )
    sizes: list[float] = []

    def hook(mod: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        if isinstance(mod, nn.Linear):
            sizes.append(2.0 * mod.in_features * mod.out_features * out.shape[0])
        elif isinstance(mod, nn.Conv1d):
            k = mod.kernel_size[0] * mod.in_channels // mod.groups
            sizes.append(2.0 * k * out.shape[1] * out.shape[2] * out.shape[0])

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d))
    ]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return sum(sizes) / x.shape[0]


def build_moe_classifier(
    n_features: int = 40,
    n_classes: int = 10,
    *,
    gate: str = "topk",
    n_experts: int = 8,
    seed: int | None = None,
    **settings: Any,
) -> MoEClassifier:
    """Build the delta-MoE issue's MoE classifier (defaults fit MNIST-1D: 40 features, 10 classes).

    ``gate`` is ``"topk"`` (settings ``k``, ``noisy``, ``balance``),
    ``"topp"`` (``p``, ``entropy_weight``) or ``"budget"`` (``max_k``,
    ``penalty``); sizes are ``trunk`` ("mlp" or "conv"), ``d_model``,
    ``expert_hidden``; see :class:`MoEConfig`. ``seed`` makes the initial
    weights reproducible. ``model(x)`` maps a float tensor ``[N, n_features]``
    to logits ``[N, n_classes]``; ``model.forward_detailed(x)`` also returns the
    routing and per-expert counts. Example::

        model = build_moe_classifier(gate="topk", n_experts=8, k=2, seed=0)
        logits = model(torch.randn(32, 40))
    """
    cfg = MoEConfig(
        n_features=n_features, n_classes=n_classes, gate=gate, n_experts=n_experts, **settings
    )
    if seed is not None:
        torch.manual_seed(seed)
    return MoEClassifier(cfg)


def build_mlp_classifier(
    n_features: int = 40, n_classes: int = 10, hidden: int = 100, depth: int = 2
) -> nn.Module:
    """The MNIST-1D paper's MLP baseline: ``depth`` hidden ReLU layers of ``hidden`` units."""
    if hidden < 1 or depth < 1:
        raise MoEConfigError(f"MLP needs hidden >= 1 and depth >= 1, got {hidden}, {depth}")
    layers: list[nn.Module] = []
    width = n_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)
