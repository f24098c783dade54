"""Fixtures shared by the hw tests: one small captured transformer, captured once per run."""

from __future__ import annotations

from pathlib import Path

import pytest

from hw.memory.capture import Level, capture_graphs, write_captured
from hw.memory.models import AcMode, ModelSpec
from traces.graph import Graph, read_graph


@pytest.fixture(scope="session")
def captured_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FX-level graph/1 files of a 1-block transformer with full checkpointing."""
    out = tmp_path_factory.mktemp("cap")
    spec = ModelSpec(
        "transformer:blocks=1,dim=16,heads=2,seq=8,vocab=32", 2, AcMode.FULL, "float32", 0
    )
    write_captured(capture_graphs(spec, Level.FX), out, force=False)
    return out


@pytest.fixture(scope="session")
def backward(captured_dir: Path) -> Graph:
    return read_graph(captured_dir / "backward.fx.json")
