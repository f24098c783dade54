"""`hw capture`, `hw verify`, `hw memstudy`: registered on the root `hw` app."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from traces.cli_support import cli_errors, err_console, out_console, print_json

__all__ = ["register"]

_MODELS = "mlp,transformer,cnn,densenet"
_METHODS = "given,lpmf,bfs,dfs,sp,hybrid,best"


def _fmt(n: int) -> str:
    return f"{n / 2**20:.3f} MiB"


def _quiet_torch() -> None:
    import logging

    warnings.filterwarnings("ignore", module="torch")
    logging.getLogger("torch").setLevel(logging.ERROR)


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""

    @app.command("capture")
    @cli_errors
    def capture_cmd(
        model: Annotated[
            str,
            typer.Argument(help="Built-in (mlp, transformer, cnn, densenet) or file.py:factory."),
        ],
        out: Annotated[Path, typer.Option("--out", help="Output folder.")],
        batch: Annotated[int, typer.Option(min=1, help="Batch size.")] = 2,
        ac: Annotated[
            str, typer.Option(help="Activation checkpointing: none|full|selective.")
        ] = "full",
        dtype: Annotated[str, typer.Option(help="float32|bfloat16|float16|float64.")] = "float32",
        level: Annotated[str, typer.Option(help="fx|inductor|both.")] = "fx",
        seed: Annotated[int, typer.Option(help="Seed for weights and inputs.")] = 0,
        device: Annotated[str, typer.Option(help="cpu|cuda.")] = "cpu",
        force: Annotated[bool, typer.Option(help="Overwrite existing graph files.")] = False,
        json_: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    ) -> None:
        """Capture MODEL's forward/backward graphs to OUT/{forward,backward}.{fx,inductor}.json."""
        from hw.memory.capture import Level, capture_graphs, write_captured
        from hw.memory.models import AcMode, ModelSpec

        try:
            ac_mode, lvl = AcMode(ac), Level(level)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        _quiet_torch()
        spec = ModelSpec(model, batch, ac_mode, dtype, seed, device)
        graphs = capture_graphs(spec, lvl)
        paths = write_captured(graphs, out, force)
        rows = [
            {
                "path": str(p),
                "nodes": len(g),
                "buffers": len(g.buffers),
                "given_peak_bytes": _given_peak(g),
            }
            for p, g in zip(paths, graphs.values(), strict=True)
        ]
        if json_:
            print_json({"graphs": rows})
            return
        table = Table(title=f"captured {model} (batch {batch}, ac {ac}, {dtype})")
        for col in ("file", "nodes", "buffers", "predicted peak (given order)"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                r["path"], str(r["nodes"]), str(r["buffers"]), _fmt(r["given_peak_bytes"])
            )
        out_console.print(table)

    @app.command("verify")
    @cli_errors
    def verify_cmd(
        graph: Annotated[Path, typer.Argument(help="graph/1 file written by hw capture.")],
        order: Annotated[Path, typer.Option("--order", help="Order JSON (list or object).")],
        timeline: Annotated[
            Path | None,
            typer.Option(
                "--timeline",
                help="Also measure the memory at every step; write predicted and measured "
                "per-step bytes here (memory-timeline/1 parquet, FX level).",
            ),
        ] = None,
        force: Annotated[bool, typer.Option(help="Overwrite an existing --timeline.")] = False,
        json_: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    ) -> None:
        """Run exactly ORDER on GRAPH's rebuilt model; print predicted vs measured peak."""
        from hw.memory.verify import verify_order
        from traces.cli_support import refuse_overwrite
        from traces.graph import read_graph
        from traces.orders import read_order

        refuse_overwrite(timeline, force)
        g = read_graph(graph)
        doc = read_order(order)
        _quiet_torch()
        method = str(doc.get("method", "order"))
        result = verify_order(g, doc["order"], method=method, timeline=timeline is not None)
        if timeline is not None and result.timeline is not None:
            from traces.memory_timeline import timeline_frame, write_memory_timeline

            steps = result.timeline
            frame = timeline_frame(
                g.name, result.level, method, steps.order, steps.predicted_bytes,
                steps.measured_bytes,
            )  # fmt: skip
            write_memory_timeline(timeline, frame)
        if json_:
            print_json(result.to_json())
            return
        table = Table(title=f"{g.name}: {len(g)} nodes, {result.level} level")
        for col in (
            "method",
            "predicted",
            "measured",
            "error",
            "default measured",
            "applied",
            "same result",
        ):
            table.add_column(col)
        table.add_row(
            result.method,
            _fmt(result.predicted_peak_bytes),
            _fmt(result.measured_peak_bytes),
            f"{result.error_bytes:+d} B ({100 * result.rel_error:+.2f}%)",
            _fmt(result.default_measured_peak_bytes),
            "yes" if result.order_applied else "NO",
            "yes" if result.matches_default_result else "NO",
        )
        out_console.print(table)
        if timeline is not None and result.timeline is not None:
            steps = result.timeline
            pairs = zip(steps.predicted_bytes, steps.measured_bytes, strict=True)
            off = sum(p != m for p, m in pairs)
            out_console.print(
                f"timeline of {len(steps.order)} steps written to {timeline}: "
                f"{off} step(s) measured differently from the prediction; largest measured "
                f"step {max(steps.measured_bytes, default=0):,} B"
            )
        if result.predicted_with_reuse_bytes is not None:
            out_console.print(
                f"predicted with the compiled wrapper's reuse, aliases and kernel groups "
                f"folded in: {_fmt(result.predicted_with_reuse_bytes)} (measured minus this: "
                f"{result.measured_peak_bytes - result.predicted_with_reuse_bytes:+d} B)"
            )

    @app.command("memstudy")
    @cli_errors
    def memstudy_cmd(
        out: Annotated[
            Path, typer.Option("--out", help="Results table (parquet); resumed if present.")
        ],
        models: Annotated[
            str, typer.Option(help="Comma-separated model specs.")
        ] = "mlp,transformer,cnn,densenet",
        batches: Annotated[str, typer.Option(help="Batch sizes, e.g. 2,8 or 1..16.")] = "2,8",
        methods: Annotated[
            str, typer.Option(help="sched methods for the per-graph part.")
        ] = "given,lpmf,bfs,dfs,sp,hybrid,best",
        levels: Annotated[
            str, typer.Option(help="Levels for the per-graph part: fx,inductor.")
        ] = "fx",
        parts: Annotated[str, typer.Option(help="Parts to run: step,order.")] = "step,order",
        time_limit: Annotated[
            float, typer.Option("--time-limit", min=0.01, help="Seconds per exact solver.")
        ] = 20.0,
        json_: Annotated[bool, typer.Option("--json", help="Print JSON rows only.")] = False,
    ) -> None:
        """Peak memory of eager vs compile (AC on/off, reorder_for_peak_memory on/off), then
        every method's predicted vs measured peak per captured graph. Resumable."""
        from hw.memory.memstudy import run_memstudy
        from hw.memory.models import split_model_list
        from traces.cli_support import parse_int_list

        _quiet_torch()
        table = run_memstudy(
            out,
            split_model_list(models),
            parse_int_list(batches, "--batches"),
            [m.strip() for m in methods.split(",") if m.strip()],
            [lv.strip() for lv in levels.split(",") if lv.strip()],
            parts=[p.strip() for p in parts.split(",") if p.strip()],
            time_limit_s=time_limit,
            progress=lambda msg: err_console.print(f"[dim]{msg}[/dim]"),
        )
        if json_:
            for row in table.iter_rows(named=True):
                print_json(row)
            return
        out_console.print(f"{table.height} rows in {out}")


def _given_peak(graph: object) -> int:
    from scheduler.memory import simulate

    return simulate(graph, graph.node_ids).peak_bytes  # type: ignore[attr-defined]
