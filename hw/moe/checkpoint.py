"""The trained-model file ``moe-checkpoint/1``: the :class:`MoEConfig` and the state dict.

``hw moe train --checkpoint`` and every MoE run of ``hw moe experiments``
write it; ``hw profile`` and ``hw serve`` load it (``--checkpoint``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from hw.moe.errors import CheckpointError
from hw.moe.models import MoEClassifier, MoEConfig
from traces.atomic import atomic_path
from traces.errors import DeltasimError

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "moe-checkpoint/1"


def save_checkpoint(model: MoEClassifier, path: str | Path) -> None:
    """Write ``{"format", "config", "state_dict"}`` atomically (loadable with weights_only)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": model.cfg.to_dict(),
        "state_dict": model.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> MoEClassifier:
    """Rebuild a trained model from :func:`save_checkpoint`'s file, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} file (no 'format' key)")
    try:
        model = MoEClassifier(MoEConfig(**payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except DeltasimError:
        raise
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: config and weights do not match ({exc})") from None
    return model.eval()
