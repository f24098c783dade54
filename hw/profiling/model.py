"""The delta-MoE model split into the steps a server runs: gate, one expert, combine.

A model comes from a checkpoint (``moe-checkpoint/1``: the :class:`MoEConfig`
and the state dict, written by :func:`save_checkpoint`) or from configured
shapes with seeded random weights (:func:`random_model`). :class:`ServedModel`
places it: the gate (trunk + router) on the first device, expert ``e`` on
device ``placement[e]``, a copy of the head on every device (the combine step
runs where the last answer arrives, ``docs/system-model.md`` §5). Every step
runs under ``torch.inference_mode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from hw.moe.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from hw.moe.dispatch import combine as moe_combine
from hw.moe.models import MoEClassifier, MoEConfig
from hw.profiling.errors import ProfilingError, UnknownExpertError

__all__ = [
    "CHECKPOINT_FORMAT",
    "DTYPES",
    "ServedModel",
    "device_label",
    "load_checkpoint",
    "model_from_spec",
    "random_model",
    "resolve_device",
    "save_checkpoint",
]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def random_model(
    n_experts: int = 8,
    d_model: int = 64,
    expert_hidden: int = 64,
    *,
    n_features: int = 40,
    n_classes: int = 10,
    k: int = 2,
    seed: int = 0,
) -> MoEClassifier:
    """An MLP-trunk top-k model with these shapes and seeded random weights, in eval mode."""
    cfg = MoEConfig(
        n_features=n_features,
        n_classes=n_classes,
        trunk="mlp",
        d_model=d_model,
        n_experts=n_experts,
        expert_hidden=expert_hidden,
        gate="topk",
        k=min(k, n_experts),
        max_k=min(4, n_experts),
        noisy=False,
    )
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = MoEClassifier(cfg)
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()


def model_from_spec(spec: dict[str, Any]) -> MoEClassifier:
    """``{"checkpoint": path}`` or ``{"n_experts", "d_model", "expert_hidden", "seed", ...}``."""
    if spec.get("checkpoint"):
        return load_checkpoint(spec["checkpoint"])
    keys = ("n_experts", "d_model", "expert_hidden", "n_features", "n_classes", "k", "seed")
    return random_model(**{k: spec[k] for k in keys if k in spec})


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a CUDA device on a machine without one is an error."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ProfilingError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ProfilingError(f"device {name!r} asked for, but CUDA is not available here")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ProfilingError(f"device {name!r}: only {torch.cuda.device_count()} GPUs")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise ProfilingError(f"unsupported device {name!r}; use cpu or cuda[:N]")
    return device


def device_label(device: torch.device) -> str:
    """``cpu:<processor>`` or ``cuda:<GPU name>``, the profile's ``device`` column."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu:{cpu}"


class ServedModel:
    """One model placed on devices, exposing the three steps a request goes through."""

    def __init__(
        self,
        model: MoEClassifier,
        devices: Sequence[torch.device] = (torch.device("cpu"),),
        placement: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.cfg = model.cfg
        self.n_experts = model.cfg.n_experts
        self.devices = list(devices)
        self.placement = list(placement or [e % len(self.devices) for e in range(self.n_experts)])
        if len(self.placement) != self.n_experts or not all(
            0 <= p < len(self.devices) for p in self.placement
        ):
            raise ProfilingError(
                f"placement {self.placement} does not map {self.n_experts} experts onto "
                f"{len(self.devices)} devices"
            )
        self.dtype = dtype
        model = model.eval()
        d0 = self.devices[0]
        self.trunk = model.trunk.to(d0, dtype)
        self.router = model.gate.to(d0, dtype)
        self.experts: list[nn.Module] = [
            m.to(self.devices[self.placement[e]], dtype) for e, m in enumerate(model.experts)
        ]
        self.heads: list[nn.Module] = [_copy_to(model.head, d, dtype) for d in self.devices]

    @property
    def d_model(self) -> int:
        return self.cfg.d_model

    @property
    def n_features(self) -> int:
        return self.cfg.n_features

    def check_expert(self, expert: int) -> int:
        if not 0 <= expert < self.n_experts:
            raise UnknownExpertError(expert, self.n_experts)
        return expert

    def inputs(self, n: int, seed: int = 0) -> Tensor:
        """``n`` seeded random request inputs ``[n, n_features]`` on the gate's device."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(n, self.n_features, generator=gen)
        return x.to(self.devices[0], self.dtype)

    @torch.inference_mode()
    def gate(self, x: Tensor, k: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Trunk + router on ``x [b, F]``: hidden ``[b, d]``, experts ``[b, S]``, weights.

        Slots a sample does not use (top-p, budget gates) hold expert -1 and weight 0.
        """
        h = self.trunk(x)
        routing = self.router(h, k=k)
        experts = routing.experts.masked_fill(~routing.mask, -1)
        return h, experts, routing.weights.masked_fill(~routing.mask, 0.0)

    @torch.inference_mode()
    def expert(self, expert: int, h: Tensor) -> Tensor:
        """Expert ``expert`` on a batch ``h [b, d]`` (already on its device)."""
        return self.experts[expert](h)

    def gather(self, h: Tensor, rows: list[int], device: torch.device) -> Tensor:
        """A batch's inputs: rows ``rows`` of the gate outputs ``h``, moved to ``device``.
        The server's dispatch step, also what ``hw profile`` times as ``dispatch``."""
        idx = torch.tensor(rows, device=h.device)
        return h.index_select(0, idx).to(device)

    def collect(
        self, answers: Sequence[Tensor], weights: Sequence[float], device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """One request's k answers stacked and its gate weights as a tensor, on ``device``:
        what the server does before the combine, and what ``hw profile`` times as ``collect``."""
        outs = torch.stack([o.to(device) for o in answers])
        return outs, torch.tensor(weights, device=device, dtype=self.dtype)

    @torch.inference_mode()
    def combine(self, outs: Tensor, weights: Tensor, device: int = 0) -> Tensor:
        """Gate-weighted sum of ``outs [b, k, d]`` then the head, on device ``device``."""
        return self.heads[device](moe_combine(outs, weights))

    def describe(self) -> dict[str, Any]:
        return {"config": asdict(self.cfg), "dtype": str(self.dtype).removeprefix("torch.")}


def _copy_to(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    import copy

    return copy.deepcopy(module).to(device, dtype)
