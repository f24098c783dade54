"""Regenerate the generated sample graphs in ``traces/data/graphs/`` (deterministic).

``diamond.json`` and ``wheatstone.json`` are hand-made and not touched. Run from the
repository root::

    .venv/bin/python benchmarks/make_sample_graphs.py [--check]

``--check`` writes nothing and exits 1 when a bundled file differs from what the
generators produce now.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from scheduler.synthetic import series_parallel, transformer_fwbw
from traces.graph import Graph, graph_to_dict, write_graph

__all__ = ["SAMPLES", "main"]

OUT_DIR = Path(__file__).resolve().parent.parent / "traces" / "data" / "graphs"

SAMPLES: dict[str, Callable[[], Graph]] = {
    # 4 layers, layers 0 and 2 checkpointed (recomputed in backward), 1 and 3 not:
    # 121 nodes, small shapes so the numbers stay readable (KiB..MiB).
    "transformer-fwbw-small.json": lambda: transformer_fwbw(
        4, seed=0, batch=2, seq=64, hidden=128, vocab=512, heads=4, checkpoint_every=2
    ).to_graph(),
    "sp-small.json": lambda: series_parallel(24, seed=3).to_graph(),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Compare, write nothing.")
    args = parser.parse_args(argv)
    stale = []
    for name, build in SAMPLES.items():
        graph = build()
        path = OUT_DIR / name
        if args.check:
            on_disk = json.loads(path.read_text()) if path.exists() else None
            if on_disk != graph_to_dict(graph):
                stale.append(name)
            continue
        write_graph(graph, path)
        print(f"wrote {path} ({len(graph)} nodes, {len(graph.buffers)} buffers)")
    if stale:
        print(f"stale: {', '.join(stale)}; rerun without --check", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
