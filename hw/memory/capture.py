"""``hw capture``: write graph/1 files for a model's forward and backward graphs.

FX level: the AOTAutograd graphs (:mod:`hw.memory.fx_capture`), converted by
:mod:`hw.memory.fx_graph`, with per-operation workspace measured on the
captured inputs. Inductor level: the fused scheduler nodes of compiling those
same graphs (:mod:`hw.memory.inductor_level`). Every file's ``meta`` says how to
rebuild the model and inputs (model spec, batch, checkpointing, dtype, seed,
device) and carries a fingerprint of the graph that a rebuild must reproduce.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import fx

from hw.memory.errors import ReplayError
from hw.memory.fx_capture import CapturedStep, capture_step, graph_fingerprint
from hw.memory.fx_graph import fx_to_graph
from hw.memory.fx_replay import measure_workspace
from hw.memory.models import ModelSpec
from traces.errors import DeltasimError
from traces.graph import Graph, write_graph

__all__ = [
    "KINDS",
    "Level",
    "capture_graphs",
    "graph_path",
    "input_pinned_rule",
    "spec_from_graph",
    "step_graph",
    "write_captured",
]

KINDS = ("forward", "backward")
_KIND_TAG = {"forward": "fw", "backward": "bw"}


class Level(str, enum.Enum):
    """Which compiler level to capture."""

    FX = "fx"
    INDUCTOR = "inductor"
    BOTH = "both"

    def __str__(self) -> str:
        return self.value

    def levels(self) -> tuple[str, ...]:
        return ("fx", "inductor") if self is Level.BOTH else (self.value,)


def graph_path(out_dir: Path, kind: str, level: str) -> Path:
    return out_dir / f"{kind}.{level}.json"


def input_pinned_rule(kind: str) -> Callable[[fx.Node], bool]:
    """Which graph inputs stay alive for the whole graph.

    Forward: all (the module holds parameters, the caller holds the batch).
    Backward: the forward's own inputs (``primals_*``: parameters and the batch,
    which the caller still holds) are pinned; saved activations and tangents are
    released after their last reader, as the AOT runtime's boxed call does.
    """
    if kind == "forward":
        return lambda node: True
    return lambda node: node.name.startswith("primals")


def step_graph(step: CapturedStep, kind: str) -> tuple[fx.GraphModule, list[Any]]:
    if kind == "forward":
        return step.forward, step.forward_args
    if kind == "backward":
        return step.backward, step.backward_args
    raise ReplayError(f"graph kind must be forward or backward, got {kind!r}")


def _base_meta(spec: ModelSpec, kind: str, level: str, fingerprint: str) -> dict[str, Any]:
    return {
        "source": level,
        "level": level,
        "graph": kind,
        "torch": torch.__version__,
        **spec.to_meta(),
        "fx_fingerprint": fingerprint,
    }


def fx_graph_of(step: CapturedStep, kind: str) -> Graph:
    """The FX-level graph/1 of one of the step's graphs (workspace measured on CPU)."""
    gm, args = step_graph(step, kind)
    ws = measure_workspace(gm, args) if step.spec.device == "cpu" else {}
    fp = graph_fingerprint(gm)
    meta = _base_meta(step.spec, kind, "fx", fp)
    meta["workspace"] = "measured" if step.spec.device == "cpu" else "none"
    name = f"{_short(step.spec.spec)}-{step.spec.ac.value}-{_KIND_TAG[kind]}-fx"
    return fx_to_graph(
        gm, name, input_pinned=input_pinned_rule(kind), meta=meta, workspace_bytes=ws
    )


def _short(spec: str) -> str:
    return Path(spec.split(":")[0]).stem if ".py" in spec else spec.split(":")[0]


def capture_graphs(spec: ModelSpec, level: Level) -> dict[tuple[str, str], Graph]:
    """Capture every requested graph; nothing is written here (see :func:`write_captured`)."""
    step = capture_step(spec)
    graphs: dict[tuple[str, str], Graph] = {}
    for kind in KINDS:
        if "fx" in level.levels():
            graphs[(kind, "fx")] = fx_graph_of(step, kind)
        if "inductor" in level.levels():
            from hw.memory.inductor_level import inductor_graph_of

            graphs[(kind, "inductor")] = inductor_graph_of(step, kind)
    return graphs


def write_captured(graphs: dict[tuple[str, str], Graph], out_dir: Path, force: bool) -> list[Path]:
    """Write all graphs atomically, refusing to overwrite any existing one without ``force``."""
    paths = {key: graph_path(out_dir, *key) for key in graphs}
    clash = [p for p in paths.values() if p.exists()]
    if clash and not force:
        raise DeltasimError(f"{clash[0]} exists; pass --force to overwrite it")
    for key, path in paths.items():
        write_graph(graphs[key], path)
    return list(paths.values())


def spec_from_graph(graph: Graph) -> tuple[ModelSpec, str, str]:
    """The model spec, graph kind and level recorded in a captured graph's meta."""
    meta = dict(graph.meta)
    kind, level = meta.get("graph"), meta.get("level")
    if kind not in KINDS or level not in ("fx", "inductor"):
        raise ReplayError(
            f"graph {graph.name!r} was not written by hw capture (meta.graph/meta.level missing)"
        )
    return ModelSpec.from_meta(meta), str(kind), str(level)
