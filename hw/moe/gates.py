"""Gates of the MoE layer, in a registry: fixed top-k, top-p, and the per-sample budget gate.

Every gate maps hidden states ``h`` of shape ``[N, d]`` to a :class:`Routing`:
per sample a few *slots*, each naming one expert and its weight, sorted by
gate probability (largest first). ``mask`` says which slots the sample uses, so
``k = mask.sum(1)`` is its number of experts, always between 1 and the gate's
bound. ``compute`` says which slots must be evaluated in this forward pass;
it equals ``mask`` except while the budget gate trains, when all of its K
slots are evaluated so that the choice of k receives a gradient.

- ``topk``: noisy top-k gating with the importance and load losses of Shazeer
  et al. 2017, or the Switch Transformer loss (``balance="switch"``); weights
  are a softmax over the kept logits, or (``weighting="probs"``) the kept
  experts' full-softmax probabilities.
- ``topp``: the smallest set of experts whose sorted softmax mass reaches p
  (Huang et al. 2024), with their entropy regularizer; weights are the
  softmax probabilities of the chosen experts, as in the paper.
- ``budget``: delta-MoE proper; a light predictor reads the gate's input and
  its sorted probabilities and their entropy and picks k in 1..K per sample, trained on
  the exact expected per-sample loss plus ``penalty * k`` (see
  :func:`budget_losses`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hw.moe.errors import MoEConfigError, UnknownGateError

__all__ = [
    "GATES",
    "BudgetGate",
    "Gate",
    "GateName",
    "Routing",
    "TopKGate",
    "TopPGate",
    "budget_losses",
    "build_gate",
    "check_k",
    "check_p",
    "cv_squared",
    "load_probability",
    "shazeer_losses",
    "switch_loss",
]


class GateName(str, enum.Enum):
    """Names accepted by ``--gate``."""

    TOPK = "topk"
    TOPP = "topp"
    BUDGET = "budget"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Routing:
    """Which experts each sample uses, with weights; slots sorted by gate probability."""

    experts: Tensor  # [N, S] long
    weights: Tensor  # [N, S] float, 0 on unused slots
    mask: Tensor  # [N, S] bool: slots the sample uses
    compute: Tensor  # [N, S] bool: slots evaluated in this pass (superset of mask)
    probs: Tensor  # [N, M] softmax of the clean gate logits
    aux_loss: Tensor  # scalar: balance loss and regularizer
    prefix_weights: Tensor | None = None  # budget gate training: [N, K, K] weights per k
    k_scores: Tensor | None = None  # budget gate: [N, K] predictor scores of k = 1..K

    @property
    def k(self) -> Tensor:
        """Experts used per sample, ``[N]``."""
        return self.mask.sum(1)


def check_k(k: int, n_experts: int, what: str = "k") -> int:
    """Validate ``1 <= k <= M``."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_experts:
        raise MoEConfigError(f"{what} must be an integer in 1..{n_experts} (M), got {k!r}")
    return k


def check_p(p: float) -> float:
    """Validate ``0 < p <= 1``."""
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 < float(p) <= 1.0:
        raise MoEConfigError(f"p must be in (0, 1], got {p!r}")
    return float(p)


def cv_squared(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Squared coefficient of variation, population variance over mean squared."""
    x = x.float()
    if x.numel() <= 1:
        return x.new_zeros(())
    return x.var(correction=0) / (x.mean() ** 2 + eps)


def load_probability(clean: Tensor, noisy: Tensor, noise_std: Tensor, k: int) -> Tensor:
    """Shazeer's P(x, i): probability that expert i stays in the top k under fresh noise.

    The threshold is the k-th largest noisy logit of the *other* experts: the
    (k+1)-th largest overall if i is currently in the top k, else the k-th.
    """
    top = noisy.topk(k + 1, dim=1).values
    thr_in = top[:, k : k + 1]
    thr_out = top[:, k - 1 : k]
    is_in = noisy > thr_in
    normal = torch.distributions.Normal(0.0, 1.0)
    p_in = normal.cdf((clean - thr_in) / noise_std)
    p_out = normal.cdf((clean - thr_out) / noise_std)
    return torch.where(is_in, p_in, p_out)


def shazeer_losses(gates_full: Tensor, load: Tensor) -> tuple[Tensor, Tensor]:
    """(importance loss, load loss) before weighting: CV^2 of per-expert sums."""
    return cv_squared(gates_full.sum(0)), cv_squared(load)


def switch_loss(probs: Tensor, mask: Tensor, experts: Tensor) -> Tensor:
    """Switch/GShard balance loss ``M * sum_i f_i P_i``.

    ``f_i`` is the share of all (sample, slot) assignments that go to expert i
    and ``P_i`` the mean gate probability of expert i; 1.0 when perfectly even.
    """
    n_experts = probs.shape[1]
    chosen = experts[mask]
    counts = torch.bincount(chosen, minlength=n_experts).to(probs.dtype)
    frac = counts / counts.sum().clamp_min(1.0)
    return n_experts * (frac * probs.mean(0)).sum()


class Gate(nn.Module):
    """Base of every gate: a linear router over ``M`` experts."""

    name: GateName

    def __init__(self, d_model: int, n_experts: int, balance_weight: float) -> None:
        super().__init__()
        if n_experts < 1:
            raise MoEConfigError(f"need at least one expert, got {n_experts}")
        if balance_weight < 0:
            raise MoEConfigError(f"balance weight must be >= 0, got {balance_weight}")
        self.n_experts = n_experts
        self.balance_weight = balance_weight
        self.router = nn.Linear(d_model, n_experts, bias=False)

    @property
    def max_slots(self) -> int:
        """Most experts one sample can use."""
        raise NotImplementedError

    def forward(self, h: Tensor, k: int | None = None, p: float | None = None) -> Routing:
        raise NotImplementedError


class TopKGate(Gate):
    """Noisy top-k (Shazeer et al. 2017); ``k`` may be overridden at evaluation.

    ``weighting="probs"`` weights the kept experts by their full-softmax
    probabilities instead (Switch Transformer, and what ``topp`` does), so that
    fixed and dynamic k can be compared with the same weighting.
    """

    name = GateName.TOPK

    def __init__(
        self,
        d_model: int,
        n_experts: int,
        k: int = 2,
        noisy: bool = True,
        balance: str = "shazeer",
        balance_weight: float = 0.01,
        weighting: str = "softmax",
    ) -> None:
        super().__init__(d_model, n_experts, balance_weight)
        self.k = check_k(k, n_experts)
        if balance not in ("shazeer", "switch"):
            raise MoEConfigError(f"balance must be 'shazeer' or 'switch', got {balance!r}")
        if weighting not in ("softmax", "probs"):
            raise MoEConfigError(f"weighting must be 'softmax' or 'probs', got {weighting!r}")
        self.balance = balance
        self.weighting = weighting
        self.noise = nn.Linear(d_model, n_experts, bias=False) if noisy else None

    @property
    def max_slots(self) -> int:
        return self.k

    def forward(self, h: Tensor, k: int | None = None, p: float | None = None) -> Routing:
        k = self.k if k is None else check_k(k, self.n_experts)
        clean = self.router(h)
        noisy, noise_std = clean, None
        if self.training and self.noise is not None:
            noise_std = F.softplus(self.noise(h)) + 1e-2
            noisy = clean + torch.randn_like(clean) * noise_std
        top_vals, top_idx = noisy.topk(k, dim=1)
        if self.weighting == "softmax":  # Shazeer: softmax over the kept logits
            weights = torch.softmax(top_vals, dim=1)
        else:  # Switch / top-p style: the kept experts' full-softmax probabilities
            weights = torch.softmax(noisy, dim=1).gather(1, top_idx)
        probs = torch.softmax(clean, dim=1)
        mask = torch.ones_like(top_idx, dtype=torch.bool)
        if self.balance == "switch":
            aux = switch_loss(probs, mask, top_idx)
        else:
            gates_full = torch.zeros_like(clean).scatter(1, top_idx, weights)
            if noise_std is not None and k < self.n_experts:
                load = load_probability(clean, noisy, noise_std, k).sum(0)
            else:
                load = (gates_full > 0).sum(0).to(clean.dtype)
            imp, ld = shazeer_losses(gates_full, load)
            aux = imp + ld
        return Routing(top_idx, weights, mask, mask, probs, self.balance_weight * aux)


class TopPGate(Gate):
    """Top-p routing (Huang et al. 2024): fewest experts whose sorted mass reaches ``p``."""

    name = GateName.TOPP

    def __init__(
        self,
        d_model: int,
        n_experts: int,
        p: float = 0.5,
        entropy_weight: float = 1e-2,
        balance_weight: float = 0.01,
    ) -> None:
        super().__init__(d_model, n_experts, balance_weight)
        self.p = check_p(p)
        if entropy_weight < 0:
            raise MoEConfigError(f"entropy weight must be >= 0, got {entropy_weight}")
        self.entropy_weight = entropy_weight

    @property
    def max_slots(self) -> int:
        return self.n_experts

    def forward(self, h: Tensor, k: int | None = None, p: float | None = None) -> Routing:
        p = self.p if p is None else check_p(p)
        probs = torch.softmax(self.router(h), dim=1)
        sorted_p, sorted_idx = probs.sort(dim=1, descending=True)
        mass_before = sorted_p.cumsum(1) - sorted_p
        mask = mass_before < p
        mask[:, 0] = True
        if k is not None:  # optional cap on top of the p rule
            mask[:, check_k(k, self.n_experts) :] = False
        used = int(mask.sum(1).max())
        experts, mask = sorted_idx[:, :used], mask[:, :used]
        weights = sorted_p[:, :used] * mask
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1).mean()
        aux = self.entropy_weight * entropy + self.balance_weight * switch_loss(
            probs, mask, experts
        )
        return Routing(experts, weights, mask, mask, probs, aux)


class BudgetGate(Gate):
    """delta-MoE: a small predictor picks k in 1..K per sample from the gate's own features
    (its input and its sorted probabilities).

    Weights are the gate probabilities of the top-k experts renormalized over
    the chosen k, so outputs keep their scale whatever k is chosen. While
    training, all K prefixes are evaluated (``prefix_weights``) and
    :func:`budget_losses` trains the network at every k and the predictor
    towards ``argmin_k loss_k + penalty * k`` per sample: ``penalty`` (nats of
    cross-entropy one more expert must save) is the dial that sets the average k.
    At evaluation the predictor's most likely k is used.
    """

    name = GateName.BUDGET

    def __init__(
        self,
        d_model: int,
        n_experts: int,
        max_k: int = 4,
        penalty: float = 0.01,
        balance_weight: float = 0.01,
        hidden: int = 32,
    ) -> None:
        super().__init__(d_model, n_experts, balance_weight)
        self.max_k = check_k(max_k, n_experts, "max_k (K)")
        if penalty < 0:
            raise MoEConfigError(f"compute penalty must be >= 0, got {penalty}")
        self.penalty = penalty
        self.predictor = nn.Sequential(
            nn.Linear(d_model + n_experts + 1, hidden), nn.ReLU(), nn.Linear(hidden, self.max_k)
        )

    @property
    def max_slots(self) -> int:
        return self.max_k

    @staticmethod
    def prefix_weights(top_p: Tensor) -> Tensor:
        """``[N, K, K]``: entry ``[n, c, j]`` is slot j's weight when sample n uses c+1 experts."""
        big_k = top_p.shape[1]
        prefix = torch.tril(torch.ones(big_k, big_k, dtype=torch.bool, device=top_p.device))
        return (top_p[:, None, :] / top_p.cumsum(1)[:, :, None]) * prefix

    def k_logits(self, h: Tensor, probs: Tensor) -> Tensor:
        """Scores of k = 1..K from the gate's input, its sorted probabilities and their entropy.

        Inputs are detached: the predictor reads the gate, it does not reshape it.
        """
        sorted_p = probs.sort(dim=1, descending=True).values
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1, keepdim=True)
        return self.predictor(torch.cat([h, sorted_p, entropy], dim=1).detach())

    def forward(self, h: Tensor, k: int | None = None, p: float | None = None) -> Routing:
        big_k = self.max_k
        probs = torch.softmax(self.router(h), dim=1)
        top_p, top_idx = probs.topk(big_k, dim=1)
        prefix_w = self.prefix_weights(top_p)
        scores = self.k_logits(h, probs)
        if k is not None:
            chosen = torch.full_like(top_idx[:, 0], check_k(k, big_k, "k") - 1)
        else:
            chosen = scores.argmax(1)
        weights = prefix_w[torch.arange(len(chosen), device=h.device), chosen]
        slots = torch.arange(big_k, device=h.device)
        mask = slots[None, :] <= chosen[:, None]
        train_all = self.training and k is None
        compute = torch.ones_like(mask) if train_all else mask
        aux = self.balance_weight * switch_loss(probs, mask, top_idx)
        return Routing(
            top_idx,
            weights,
            mask,
            compute,
            probs,
            aux,
            prefix_weights=prefix_w if train_all else None,
            k_scores=scores,
        )


def budget_losses(
    logits_per_k: Tensor, k_scores: Tensor, target: Tensor, penalty: float
) -> tuple[Tensor, Tensor]:
    """(network loss, predictor loss) of the budget gate for one batch.

    ``logits_per_k`` is ``[N, K, C]``: the model's logits when each sample uses
    its top 1..K experts. The network is trained at every k (mean cross-entropy
    over k), the predictor on the exact expectation over its choice,
    ``sum_k q_k (loss_k + penalty * k)`` with the losses held fixed, so it
    learns to pick the cheapest k that is worth its experts. No sampling.
    """
    n, big_k, c = logits_per_k.shape
    per_k = F.cross_entropy(
        logits_per_k.reshape(n * big_k, c), target.repeat_interleave(big_k), reduction="none"
    ).view(n, big_k)
    ks = torch.arange(1, big_k + 1, device=per_k.device, dtype=per_k.dtype)
    q = torch.softmax(k_scores, dim=1)
    predictor = (q * (per_k.detach() + penalty * ks)).sum(1).mean()
    return per_k.mean(), predictor


GATES: dict[str, type[Gate]] = {
    GateName.TOPK.value: TopKGate,
    GateName.TOPP.value: TopPGate,
    GateName.BUDGET.value: BudgetGate,
}


def build_gate(name: str, d_model: int, n_experts: int, **params: float | int | str) -> Gate:
    """Look ``name`` up in :data:`GATES` and build it; unknown names raise UnknownGateError."""
    key = str(name)
    if key not in GATES:
        raise UnknownGateError(key, sorted(GATES))
    return GATES[key](d_model, n_experts, **params)
