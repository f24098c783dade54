"""Training and evaluation of MoE classifiers and the MLP baseline, seeded and batched.

Training minimizes cross-entropy plus the gate's auxiliary loss (balance,
regularizer, compute penalty). Evaluation runs the model in eval mode (no gate
noise, hard k) and keeps everything a routing trace needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hw.moe.data import Dataset
from hw.moe.errors import MoEConfigError
from hw.moe.gates import BudgetGate, GateName
from hw.moe.models import MoEClassifier, module_flops

__all__ = [
    "Evaluation",
    "TrainConfig",
    "TrainStats",
    "calibrate_budget",
    "evaluate",
    "set_threads",
    "train",
]


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer settings; ``seed`` fixes batch order, gate noise and Gumbel draws."""

    epochs: int = 30
    batch_size: int = 100
    lr: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0
    calibration_fraction: float = 0.1
    calibration_steps: int = 300

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise MoEConfigError("epochs and batch size must be >= 1")
        if not 0.0 <= self.calibration_fraction < 1.0 or self.calibration_steps < 0:
            raise MoEConfigError("calibration fraction must be in [0, 1) and steps >= 0")
        if self.lr <= 0 or self.weight_decay < 0:
            raise MoEConfigError("learning rate must be > 0 and weight decay >= 0")


@dataclass(frozen=True)
class TrainStats:
    steps: int
    train_time_s: float
    final_loss: float


@dataclass(frozen=True)
class Evaluation:
    """Per-sample outcome of one model under one routing setting, with its totals.

    ``experts`` and ``weights`` are ``[N, S]``, sorted by gate probability;
    slots a sample does not use hold expert ``-1`` and weight 0.
    """

    accuracy: float
    predicted: np.ndarray
    correct: np.ndarray
    k: np.ndarray
    experts: np.ndarray
    weights: np.ndarray
    counts: np.ndarray
    mean_k: float
    flops_per_sample: float

    @property
    def expert_evals(self) -> int:
        """Total (sample, expert) evaluations."""
        return int(self.k.sum())


def set_threads(threads: int) -> None:
    """Cap torch's intra-op threads (the box is shared)."""
    if threads < 1:
        raise MoEConfigError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainStats:
    """Adam with cosine decay over ``cfg.epochs``; calls ``on_epoch(epoch, mean_loss)``.

    MoE models supply their own loss (cross-entropy plus the gate's terms).
    A budget-gate model keeps ``calibration_fraction`` of the training set
    aside and, after training, fits its k predictor on the per-k losses of
    those held-out samples (:func:`calibrate_budget`): on samples the network
    has fitted, every k looks equally good, so k would not vary per sample.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.as_tensor(data.x_train)
    y = torch.as_tensor(data.y_train)
    cal = None
    is_budget = isinstance(model, MoEClassifier) and model.cfg.gate == GateName.BUDGET
    n_cal = int(len(x) * cfg.calibration_fraction) if is_budget else 0
    if n_cal > 0:
        split = torch.randperm(len(x), generator=gen)
        cal = (x[split[:n_cal]], y[split[:n_cal]])
        x, y = x[split[n_cal:]], y[split[n_cal:]]
    n = len(x)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    t0 = time.perf_counter()
    mean_loss = float("nan")
    for epoch in range(cfg.epochs):
        model.train()  # on_epoch may have evaluated
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(steps_per_epoch):
            batch = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            if isinstance(model, MoEClassifier):
                loss = model.training_loss(x[batch], y[batch])
            else:
                loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        mean_loss = total / steps_per_epoch
        if on_epoch is not None:
            on_epoch(epoch, mean_loss)
    model.eval()
    if cal is not None and isinstance(model, MoEClassifier):
        calibrate_budget(model, cal[0], cal[1], cfg.calibration_steps, cfg.lr)
    return TrainStats(cfg.epochs * steps_per_epoch, time.perf_counter() - t0, mean_loss)


def calibrate_budget(
    model: MoEClassifier, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 1e-2
) -> float:
    """Fit the budget gate's k predictor on held-out samples with the network frozen.

    Minimizes ``mean_n sum_k q_k(x_n) (loss_k(x_n) + penalty * k)``, exact over
    k (the per-k losses are computed once); returns the final objective.
    """
    gate = model.gate
    if not isinstance(gate, BudgetGate):
        raise MoEConfigError("calibration applies to the budget gate only")
    model.eval()
    with torch.no_grad():
        h, probs, per_k = model.per_k_losses(x, y)
    ks = torch.arange(1, gate.max_k + 1, dtype=per_k.dtype)
    cost = per_k + gate.penalty * ks
    opt = torch.optim.Adam(gate.predictor.parameters(), lr=lr)
    value = float("nan")
    for _ in range(steps):
        q = torch.softmax(gate.k_logits(h, probs), dim=1)
        loss = (q * cost).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
    return value


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    k: int | None = None,
    p: float | None = None,
    batch_size: int = 2000,
) -> Evaluation:
    """Evaluate in eval mode; ``k``/``p`` override an MoE gate's own setting."""
    model.eval()
    xt, n = torch.as_tensor(x), len(x)
    preds, ks, experts, weights = [], [], [], []
    if not isinstance(model, MoEClassifier):
        if k is not None or p is not None:
            raise MoEConfigError("k and p apply to MoE models only")
        for i in range(0, n, batch_size):
            preds.append(model(xt[i : i + batch_size]).argmax(1))
        pred = torch.cat(preds).numpy()
        correct = pred == y
        flops = module_flops(model, xt[:1])
        empty = np.zeros((n, 0))
        return Evaluation(
            float(correct.mean()), pred, correct, np.zeros(n, np.int64), empty.astype(np.int64),
            empty, np.zeros(0, np.int64), 0.0, flops,
        )  # fmt: skip
    counts = torch.zeros(model.cfg.n_experts, dtype=torch.long)
    for i in range(0, n, batch_size):
        out = model.forward_detailed(xt[i : i + batch_size], k=k, p=p)
        r = out.routing
        preds.append(out.logits.argmax(1))
        ks.append(r.k)
        experts.append(torch.where(r.mask, r.experts, -1))
        weights.append(torch.where(r.mask, r.weights, 0.0))
        counts += out.counts
    width = max(e.shape[1] for e in experts)
    experts = [F.pad(e, (0, width - e.shape[1]), value=-1) for e in experts]
    weights = [F.pad(w, (0, width - w.shape[1]), value=0.0) for w in weights]
    pred = torch.cat(preds).numpy()
    k_arr = torch.cat(ks).numpy()
    correct = pred == y
    mean_k = float(k_arr.mean())
    return Evaluation(
        accuracy=float(correct.mean()),
        predicted=pred,
        correct=correct,
        k=k_arr,
        experts=torch.cat(experts).numpy(),
        weights=torch.cat(weights).float().numpy(),
        counts=counts.numpy(),
        mean_k=mean_k,
        flops_per_sample=model.flops_per_sample(mean_k),
    )
