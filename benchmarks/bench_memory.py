"""Memory benchmarks of issue 3: predicted vs measured peaks, best order vs Inductor, timing.

    .venv/bin/python benchmarks/bench_memory.py [--stages order-fx,order-inductor,timing,step]

Measurements go to ``benchmarks/memory/memstudy.parquet`` (the memstudy/1 table;
resumable: finished rows are kept) and ``benchmarks/memory/timing.json``; the
tables are then rebuilt from those files into ``benchmarks/memory/README.md``
and into the "## Memory: predicted vs measured" section of
``benchmarks/README.md`` (only that section is replaced).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hw.memory.models import AcMode  # noqa: E402
from traces.atomic import atomic_write_text  # noqa: E402
from traces.memstudy import read_memstudy  # noqa: E402

OUT = ROOT / "benchmarks" / "memory"
TABLE = OUT / "memstudy.parquet"
TIMING = OUT / "timing.json"
HEADING = "## Memory: predicted vs measured"
MODELS = {
    "mlp": "mlp",
    "transformer": "transformer:blocks=4",
    "cnn": "cnn",
    "densenet": "densenet",
}
BATCH = 8
FX_METHODS = ["given", "lpmf", "bfs", "dfs", "sp", "hybrid", "best"]
INDUCTOR_METHODS = ["given", "best"]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stage_order(levels: list[str], methods: list[str], kinds: list[str]) -> None:
    from hw.memory.memstudy import run_memstudy

    run_memstudy(
        TABLE, list(MODELS.values()), [BATCH], methods, levels,
        kinds=kinds, parts=["order"], time_limit_s=20, progress=_log,
    )  # fmt: skip


def stage_step() -> None:
    from hw.memory.memstudy import run_memstudy

    run_memstudy(
        TABLE, list(MODELS.values()), [BATCH], [], ["fx"],
        acs=[AcMode.NONE, AcMode.FULL], parts=["step"], progress=_log,
    )  # fmt: skip


def stage_timing() -> None:
    """Capture + best + verify of a 4-block transformer, as a user would run it (warm cache)."""
    import tempfile

    from hw.memory.capture import Level, capture_graphs, write_captured
    from hw.memory.methods import run_method
    from hw.memory.models import ModelSpec
    from hw.memory.verify import verify_order
    from traces.graph import read_graph

    spec = ModelSpec("transformer:blocks=4", BATCH, AcMode.FULL, "float32", 0)
    capture_graphs(spec, Level.FX)  # warm-up: imports, Dynamo, kernel caches
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_captured(capture_graphs(spec, Level.FX), Path(tmp), force=False)
        t1 = time.perf_counter()
        graph = read_graph(Path(tmp) / "backward.fx.json")
        best = run_method(graph, "best", time_limit_s=20)
        t2 = time.perf_counter()
        result = verify_order(graph, list(best.order), method="best")
        t3 = time.perf_counter()
    doc = {
        "model": spec.spec,
        "batch": BATCH,
        "capture_s": round(t1 - t0, 2),
        "best_s": round(t2 - t1, 2),
        "verify_s": round(t3 - t2, 2),
        "total_s": round(t3 - t0, 2),
        "nodes": len(graph),
        "predicted_peak_bytes": result.predicted_peak_bytes,
        "measured_peak_bytes": result.measured_peak_bytes,
        "default_measured_peak_bytes": result.default_measured_peak_bytes,
    }
    atomic_write_text(TIMING, json.dumps(doc, indent=1) + "\n")
    _log(f"timing: {doc}")


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.3f}"


def render() -> str:
    """The section's markdown, built only from the files in benchmarks/memory/."""
    lines = [HEADING, ""]
    lines.append(
        "Built by `benchmarks/bench_memory.py` from `benchmarks/memory/memstudy.parquet` "
        "(memstudy/1) and `benchmarks/memory/timing.json`; CPU, torch "
        "2.13.0, float32, batch 8, full activation checkpointing for the graphs. "
        "See `docs/memory-capture.md` for what is measured and where prediction and "
        "measurement differ."
    )
    if not TABLE.exists():
        return "\n".join([*lines, "", "(no measurements yet)", ""])
    df = read_memstudy(TABLE)
    orders = df.filter(pl.col("study") == "order")
    for level, target in (("fx", 0.01), ("inductor", 0.05)):
        part = orders.filter(pl.col("mode") == level)
        if part.height == 0:
            continue
        pred = "predicted_with_reuse_bytes" if level == "inductor" else "predicted_peak_bytes"
        part = part.with_columns(
            ((pl.col("measured_peak_bytes") - pl.col("predicted_peak_bytes"))
             / pl.col("measured_peak_bytes")).alias("err_plain"),
            ((pl.col("measured_peak_bytes") - pl.col(pred))
             / pl.col("measured_peak_bytes")).alias("err"),
        )  # fmt: skip
        worst = part["err"].abs().max()
        lines += [
            "",
            f"### {level.upper()} level: predicted vs measured peak (target within "
            f"{target:.0%}; worst here {100 * worst:.3f}%)",
            "",
        ]
        if level == "inductor":
            lines += [
                "`predicted` is graph/1 as captured; `with reuse` folds in the buffer reuse "
                "that the compiled wrapper decided for that order (`# reuse` lines), and is "
                "the prediction the target applies to.",
                "",
                "| model | graph | method | predicted MiB | with reuse MiB | measured MiB "
                "| error (plain) | error (with reuse) | applied | same |",
                "|---|---|---|---:|---:|---:|---:|---:|:-:|:-:|",
            ]
        else:
            lines += [
                "| model | graph | method | predicted MiB | measured MiB | error | applied "
                "| same |",
                "|---|---|---|---:|---:|---:|:-:|:-:|",
            ]
        for r in part.sort(["model", "graph", "method"]).iter_rows(named=True):
            ok = f"{'yes' if r['order_applied'] else 'NO'} | "
            ok += f"{'yes' if r['matches_default_result'] else 'NO'} |"
            if level == "inductor":
                lines.append(
                    f"| {r['model']} | {r['graph']} | {r['method']} | "
                    f"{_mib(r['predicted_peak_bytes'])} | "
                    f"{_mib(r['predicted_with_reuse_bytes'])} | "
                    f"{_mib(r['measured_peak_bytes'])} | {100 * r['err_plain']:+.3f}% | "
                    f"{100 * r['err']:+.3f}% | " + ok
                )
            else:
                lines.append(
                    f"| {r['model']} | {r['graph']} | {r['method']} | "
                    f"{_mib(r['predicted_peak_bytes'])} | {_mib(r['measured_peak_bytes'])} | "
                    f"{100 * r['err']:+.3f}% | " + ok
                )
    ind = orders.filter((pl.col("mode") == "inductor") & (pl.col("graph") == "backward"))
    if ind.height:
        lines += [
            "",
            "### Best `sched` order vs Inductor's own order (backward, checkpointing on)",
            "",
            "The order applied is `best`'s when its predicted peak (with the compiled "
            "wrapper's reuse folded in, known after compiling, before running) is below "
            "that of Inductor's order, else Inductor's own; the measured peaks are compared.",
            "",
            "| model | Inductor order, measured MiB | applied | measured MiB | reduction |",
            "|---|---:|---|---:|---:|",
        ]
        for model in sorted(set(ind["model"])):
            rows = {
                r["method"]: r for r in ind.filter(pl.col("model") == model).iter_rows(named=True)
            }
            default = rows.get("inductor-default")
            best = rows.get("best")
            if default is None or best is None:
                continue

            def pred(r: dict) -> int:
                w = r["predicted_with_reuse_bytes"]
                return r["predicted_peak_bytes"] if w is None else w

            use_best = pred(best) < pred(default)
            chosen = best if use_best else default
            red = 1 - chosen["measured_peak_bytes"] / default["measured_peak_bytes"]
            lines.append(
                f"| {model} | {_mib(default['measured_peak_bytes'])} | "
                f"{'best' if use_best else 'Inductor (best predicted no gain)'} | "
                f"{_mib(chosen['measured_peak_bytes'])} | {100 * red:.1f}% |"
            )
    steps = df.filter(pl.col("study") == "step")
    if steps.height:
        lines += [
            "",
            "### Training-step peak: eager vs torch.compile (MiB above parameters and inputs)",
            "",
            "| model | ac | eager | compile (reorder_for_peak_memory on) | compile (off) |",
            "|---|---|---:|---:|---:|",
        ]
        for (model, ac), grp in sorted(steps.group_by(["model", "ac"]), key=lambda g: g[0]):
            cell = {(r["mode"], r["reorder_for_peak_memory"]): r["measured_peak_bytes"]
                    for r in grp.iter_rows(named=True)}  # fmt: skip
            lines.append(
                f"| {model} | {ac} | {_mib(cell.get(('eager', None)))} | "
                f"{_mib(cell.get(('compile', True)))} | {_mib(cell.get(('compile', False)))} |"
            )
    if TIMING.exists():
        t = json.loads(TIMING.read_text())
        lines += [
            "",
            "### Capture + best + verify, 4-block transformer (target under 2 min, warm cache)",
            "",
            f"capture {t['capture_s']} s, best {t['best_s']} s, verify {t['verify_s']} s: "
            f"**total {t['total_s']} s** ({t['nodes']} backward nodes; best order "
            f"predicted {_mib(t['predicted_peak_bytes'])} MiB, measured "
            f"{_mib(t['measured_peak_bytes'])} MiB, default order measured "
            f"{_mib(t['default_measured_peak_bytes'])} MiB).",
        ]
    return "\n".join(lines) + "\n"


def write_reports() -> None:
    section = render()
    atomic_write_text(OUT / "README.md", section)
    readme = ROOT / "benchmarks" / "README.md"
    text = readme.read_text() if readme.exists() else ""
    if HEADING in text:
        head, _, rest = text.partition(HEADING)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    atomic_write_text(readme, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="order-fx,order-inductor,timing,step")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    stages = [] if args.render_only else args.stages.split(",")
    for stage in stages:
        _log(f"stage {stage}")
        if stage == "order-fx":
            stage_order(["fx"], FX_METHODS, ["forward", "backward"])
        elif stage == "order-inductor":
            stage_order(["inductor"], INDUCTOR_METHODS, ["backward"])
        elif stage == "timing":
            stage_timing()
        elif stage == "step":
            stage_step()
        else:
            raise SystemExit(f"unknown stage {stage!r}")
        write_reports()
    write_reports()


if __name__ == "__main__":
    main()
