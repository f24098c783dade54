"""Models to capture: built-ins and user factories, and how a spec string names them.

A spec is ``NAME`` or ``NAME:key=value,...`` for a built-in (``mlp``,
``transformer``, ``cnn``, ``densenet``), or ``path/to/file.py:factory`` for a
user factory returning ``(model, example_inputs)``. Factories may accept any of
the keywords ``batch``, ``ac`` and ``dtype``; the built-ins accept all three.
The spec string, batch, checkpointing mode, dtype and seed are everything needed
to rebuild the same model and inputs later (``hw verify`` does exactly that).
"""

from __future__ import annotations

import enum
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

from hw.memory.errors import ModelSpecError

__all__ = [
    "BUILTINS",
    "AcMode",
    "ModelSpec",
    "build_model",
    "checkpointed",
    "split_model_list",
]


class AcMode(str, enum.Enum):
    """Activation checkpointing: none, full recompute, or selective (save matmul outputs)."""

    NONE = "none"
    FULL = "full"
    SELECTIVE = "selective"

    def __str__(self) -> str:
        return self.value


DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}

_SAVE_OPS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.convolution.default,
}


def _sac_policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _SAVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def checkpointed(fn: Callable[..., Any], ac: AcMode, *args: Any) -> Any:
    """Run ``fn(*args)`` under the checkpointing mode ``ac`` (non-reentrant)."""
    if ac is AcMode.NONE:
        return fn(*args)
    if ac is AcMode.FULL:
        return checkpoint(fn, *args, use_reentrant=False)
    return checkpoint(
        fn,
        *args,
        use_reentrant=False,
        context_fn=partial(create_selective_checkpoint_contexts, _sac_policy),
    )


class _Blocks(nn.Module):
    """A stack of blocks, each one checkpointed as a unit."""

    def __init__(self, blocks: Sequence[nn.Module], ac: AcMode) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.ac = ac

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = checkpointed(block, self.ac, x)
        return x


def _dropout(p: float) -> nn.Module:
    """Dropout when ``p > 0``; else nothing at all, so that graphs captured without the
    option keep their fingerprints."""
    if not 0.0 <= p < 1.0:
        raise ModelSpecError(f"dropout must be in [0, 1), got {p}")
    return nn.Dropout(p) if p > 0 else nn.Identity()


class _MlpBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.drop = _dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.fc2(torch.relu(self.fc1(x))))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class _GptBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.drop1, self.drop2 = _dropout(dropout), _dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop1(self.attn(self.ln1(x)))
        return x + self.drop2(self.fc2(nn.functional.gelu(self.fc1(self.ln2(x)))))


class _Gpt(nn.Module):
    def __init__(
        self,
        vocab: int,
        dim: int,
        heads: int,
        blocks: int,
        seq: int,
        ac: AcMode,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(seq, dim)
        self.body = _Blocks([_GptBlock(dim, heads, dropout) for _ in range(blocks)], ac)
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.head(self.ln(self.body(self.tok(idx) + self.pos(pos))))


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(ch, ch, 3, padding=1), nn.Conv2d(ch, ch, 3, padding=1)
        self.n1, self.n2 = nn.GroupNorm(4, ch), nn.GroupNorm(4, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.n2(self.c2(torch.relu(self.n1(self.c1(x))))))


class _ResNet(nn.Module):
    def __init__(self, ch: int, blocks: int, classes: int, ac: AcMode) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, ch, 3, padding=1)
        self.body = _Blocks([_ResBlock(ch) for _ in range(blocks)], ac)
        self.head = nn.Linear(ch, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(torch.relu(self.stem(x))).mean(dim=(2, 3)))


class _DenseLayer(nn.Module):
    def __init__(self, ch_in: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch_in, growth, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class _DenseNet(nn.Module):
    """Every layer reads the concatenation of all earlier outputs: many skip connections."""

    def __init__(self, ch: int, growth: int, layers: int, classes: int, ac: AcMode) -> None:
        super().__init__()
        self.ac = ac
        self.stem = nn.Conv2d(3, ch, 3, padding=1)
        self.layers = nn.ModuleList(_DenseLayer(ch + i * growth, growth) for i in range(layers))
        self.head = nn.Linear(ch + layers * growth, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [torch.relu(self.stem(x))]
        for layer in self.layers:
            feats.append(checkpointed(layer, self.ac, torch.cat(feats, dim=1)))
        return self.head(torch.cat(feats, dim=1).mean(dim=(2, 3)))


def _mlp(
    batch: int,
    ac: AcMode,
    dim: int = 64,
    hidden: int = 256,
    blocks: int = 3,
    dropout: float = 0.0,
) -> Any:
    model = _Blocks([_MlpBlock(dim, hidden, dropout) for _ in range(blocks)], ac)
    return model, (torch.randn(batch, dim),)


def _transformer(
    batch: int,
    ac: AcMode,
    blocks: int = 2,
    dim: int = 64,
    heads: int = 4,
    seq: int = 32,
    vocab: int = 128,
    dropout: float = 0.0,
) -> Any:
    model = _Gpt(vocab, dim, heads, blocks, seq, ac, dropout)
    return model, (torch.randint(0, vocab, (batch, seq)),)


def _cnn(batch: int, ac: AcMode, ch: int = 16, blocks: int = 2, hw: int = 16) -> Any:
    return _ResNet(ch, blocks, 10, ac), (torch.randn(batch, 3, hw, hw),)


def _densenet(batch: int, ac: AcMode, ch: int = 8, growth: int = 8, layers: int = 4) -> Any:
    return _DenseNet(ch, growth, layers, 10, ac), (torch.randn(batch, 3, 16, 16),)


def _moe(
    batch: int,
    ac: AcMode,
    experts: int = 4,
    k: int = 2,
    dim: int = 32,
    hidden: int = 64,
    capacity_factor: float = 2.0,
) -> Any:
    """The delta-MoE classifier (MNIST-1D shapes) with fixed-capacity dispatch, so that it
    compiles to one graph; a deterministic top-k gate (no noise) keeps every order's
    result bit-identical. The expert layer is checkpointed as a unit."""
    from hw.moe.capacity import CapacityMoE
    from hw.moe.models import build_moe_classifier

    moe = build_moe_classifier(
        gate="topk", n_experts=experts, k=k, max_k=k, noisy=False, trunk="mlp", d_model=dim,
        expert_hidden=hidden,
    )  # fmt: skip
    model = CapacityMoE(moe, capacity_factor, wrap=lambda fn, *a: checkpointed(fn, ac, *a))
    return model, (torch.randn(batch, moe.cfg.n_features),)


BUILTINS: dict[str, Callable[..., Any]] = {
    "mlp": _mlp,
    "transformer": _transformer,
    "cnn": _cnn,
    "densenet": _densenet,
    "moe": _moe,
}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything that determines a captured model and its inputs."""

    spec: str
    batch: int
    ac: AcMode
    dtype: str
    seed: int
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ModelSpecError(f"device must be cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ModelSpecError("device cuda requested but CUDA is not available")
        if self.batch < 1:
            raise ModelSpecError(f"batch must be >= 1, got {self.batch}")
        if self.dtype not in DTYPES:
            raise ModelSpecError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def to_meta(self) -> dict[str, Any]:
        return {
            "model": self.spec,
            "batch": self.batch,
            "ac": self.ac.value,
            "dtype": self.dtype,
            "seed": self.seed,
            "device": self.device,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ModelSpec:
        try:
            return cls(
                str(meta["model"]),
                int(meta["batch"]),
                AcMode(meta["ac"]),
                str(meta["dtype"]),
                int(meta["seed"]),
                str(meta.get("device", "cpu")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelSpecError(f"graph meta cannot name a model: {exc}") from None


def split_model_list(text: str) -> list[str]:
    """Split ``"mlp,transformer:blocks=4,dim=64,cnn"`` into specs: a ``key=value`` piece
    continues the previous spec's options."""
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if specs and "=" in piece and ":" not in piece and ":" in specs[-1]:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs


def _parse_value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _resolve(spec: str) -> tuple[Callable[..., Any], dict[str, Any], bool]:
    """Return (factory, keyword options, is_builtin)."""
    name, _, opts = spec.partition(":")
    if name in BUILTINS:
        kwargs: dict[str, Any] = {}
        for part in filter(None, opts.split(",")):
            key, eq, value = part.partition("=")
            if not eq:
                raise ModelSpecError(f"model option {part!r} in {spec!r} is not key=value")
            kwargs[key.strip()] = _parse_value(value.strip())
        return BUILTINS[name], kwargs, True
    if not opts or not name.endswith(".py"):
        raise ModelSpecError(
            f"unknown model {spec!r}: use one of {', '.join(BUILTINS)} or path/to/file.py:factory"
        )
    path = Path(name)
    if not path.is_file():
        raise ModelSpecError(f"model file {path} does not exist")
    mod_name = f"_deltasim_user_model_{abs(hash(str(path.resolve())))}"
    try:
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        module_spec.loader.exec_module(module)
    except Exception as exc:  # user code: report, never a traceback
        raise ModelSpecError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, opts, None)
    if not callable(factory):
        raise ModelSpecError(f"{path} has no callable {opts!r}")
    return factory, {}, False


class _WholeCheckpoint(nn.Module):
    """Checkpoint a user model as one unit when its factory takes no ``ac`` keyword."""

    def __init__(self, model: nn.Module, ac: AcMode) -> None:
        super().__init__()
        self.model, self.ac = model, ac

    def forward(self, *inputs: Any) -> Any:
        return checkpointed(self.model, self.ac, *inputs)


def build_model(spec: ModelSpec) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Seed, call the factory, cast to the dtype; returns ``(model, inputs)`` in train mode."""
    factory, kwargs, builtin = _resolve(spec.spec)
    dtype = DTYPES[spec.dtype]
    torch.manual_seed(spec.seed)
    offered = {"batch": spec.batch, "ac": spec.ac, "dtype": dtype}
    try:
        params = inspect.signature(factory).parameters
        accepts_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        call = {k: v for k, v in offered.items() if accepts_all or k in params}
        result = factory(**call, **kwargs)
    except ModelSpecError:
        raise
    except Exception as exc:  # user code: report, never a traceback
        raise ModelSpecError(
            f"model factory {spec.spec!r} raised {type(exc).__name__}: {exc}"
        ) from None
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)):
        raise ModelSpecError(f"model factory {spec.spec!r} must return (model, example_inputs)")
    model, inputs = result
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    if not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ModelSpecError(f"model factory {spec.spec!r}: example_inputs must be tensors")
    if not builtin and "ac" not in call and spec.ac is not AcMode.NONE:
        model = _WholeCheckpoint(model, spec.ac)
    model = model.to(device=spec.device, dtype=dtype).train()
    inputs = tuple(
        t.to(device=spec.device, dtype=dtype if t.is_floating_point() else t.dtype) for t in inputs
    )
    return model, inputs
