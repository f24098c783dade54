"""Capture the AOTAutograd forward and backward FX graphs of one training step.

A custom torch.compile backend runs ``aot_module_simplified`` with Inductor's
decomposition table and Inductor's own partitioner
(``min_cut_rematerialization_partition``), so the forward/backward split and
the recomputation under activation checkpointing are the ones torch.compile
really uses. The recording compilers keep each GraphModule and the real
arguments it is first called with; the graphs then run as plain FX code.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from hw.memory.errors import CaptureError
from hw.memory.fx_graph import fill_missing_values
from hw.memory.models import ModelSpec, build_model

__all__ = [
    "CapturedStep",
    "StepLoss",
    "capture_step",
    "ensure_inductor_cache",
    "graph_fingerprint",
]

_REPO = Path(__file__).resolve().parents[2]


def ensure_inductor_cache() -> Path:
    """Point Inductor's cache into the repo's git-ignored ``.cache/inductor`` unless set."""
    path = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(_REPO / ".cache/inductor")))
    path.mkdir(parents=True, exist_ok=True)
    return path


class StepLoss(nn.Module):
    """The compiled region of a step: the model and a scalar loss (sum of its float outputs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(*inputs)
        leaves = out if isinstance(out, (tuple, list)) else (out,)
        floats = [t.float().sum() for t in leaves if torch.is_tensor(t) and t.is_floating_point()]
        if not floats:
            raise CaptureError("the model returns no floating-point tensor to differentiate")
        return torch.stack(floats).sum() if len(floats) > 1 else floats[0]


@dataclass
class CapturedStep:
    """One step's AOT graphs and the real arguments each was called with.

    ``forward_args`` are the forward graph's inputs (parameters, buffers, then the
    model inputs, as AOTAutograd flattens them); ``backward_args`` the saved
    tensors then the tangents. Mutable on purpose: it owns live tensors.
    """

    spec: ModelSpec
    forward: fx.GraphModule
    backward: fx.GraphModule
    forward_args: list[Any]
    backward_args: list[Any]
    joint: fx.GraphModule | None
    loss: torch.Tensor


def graph_fingerprint(gm: fx.GraphModule) -> str:
    """A short hash of a graph's code: a rebuilt capture must reproduce it exactly."""
    return hashlib.sha256(gm.code.encode()).hexdigest()[:16]


def _boxed(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn._boxed_call = True  # type: ignore[attr-defined]
    return fn


def _recording_backend(rec: dict[str, Any]) -> Callable[..., Any]:
    from torch._functorch.aot_autograd import aot_module_simplified
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from torch._guards import detect_fake_mode
    from torch._inductor.decomposition import select_decomp_table
    from torch._inductor.fx_passes.replace_random import replace_random_passes
    from torch._inductor.virtualized import V

    def partition(joint: fx.GraphModule, joint_inputs: Any, **kwargs: Any) -> Any:
        # Inductor's joint pass for random ops: rand/randn/bernoulli become seeds drawn
        # once per graph (``inductor_seeds``) and per-op lookups, which is what Inductor
        # compiles (it refuses a raw ``aten.rand``). Graphs without random ops are untouched.
        with V.set_fake_mode(detect_fake_mode(joint_inputs)):
            replace_random_passes(joint)
        rec["joint"] = joint
        return min_cut_rematerialization_partition(joint, joint_inputs, **kwargs)

    def recorder(kind: str) -> Callable[..., Any]:
        def compiler(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
            rec.setdefault(kind, []).append(gm)

            def run(args: list[Any]) -> Any:
                rec.setdefault(f"{kind}_args", list(args))
                return gm(*args)

            return _boxed(run)

        return compiler

    def backend(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
        return aot_module_simplified(
            gm,
            example_inputs,
            fw_compiler=recorder("forward"),
            bw_compiler=recorder("backward"),
            partition_fn=partition,
            decompositions=select_decomp_table(),
        )

    return backend


def capture_step(spec: ModelSpec) -> CapturedStep:
    """Build the model, run one compiled forward+backward, return its AOT graphs."""
    ensure_inductor_cache()
    model, inputs = build_model(spec)
    rec: dict[str, Any] = {}
    torch._dynamo.reset()
    step = torch.compile(StepLoss(model), backend=_recording_backend(rec), fullgraph=True)
    try:
        torch.manual_seed(spec.seed)
        loss = step(*inputs)
        loss.backward()
    except CaptureError:
        raise
    except Exception as exc:  # torch.compile failures on user models: one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CaptureError(
            f"torch.compile could not capture {spec.spec!r}: {type(exc).__name__}: {first}"
        ) from None
    finally:
        torch._dynamo.reset()
    if len(rec.get("forward", [])) != 1 or len(rec.get("backward", [])) != 1:
        raise CaptureError(
            f"{spec.spec!r} compiled into {len(rec.get('forward', []))} forward graphs; "
            "capture needs exactly one forward/backward pair"
        )
    fill_missing_values(rec["forward"][0], rec["forward_args"])
    fill_missing_values(rec["backward"][0], rec["backward_args"])
    return CapturedStep(
        spec=spec,
        forward=rec["forward"][0],
        backward=rec["backward"][0],
        forward_args=rec["forward_args"],
        backward_args=rec["backward_args"],
        joint=rec.get("joint"),
        loss=loss.detach(),
    )
