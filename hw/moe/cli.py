"""`hw moe ...`: train one MoE model, run the experiment set, summarize its tables.

Registered on the root `hw` app as the ``moe`` command group. Each command is
thin: parse, build a config (which validates), call the library, write
atomically, print a short summary (or ``--json``).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from traces.atomic import atomic_write_text
from traces.cli_support import (
    ForceOpt,
    JsonOpt,
    cli_errors,
    err_console,
    out_console,
    parse_int_list,
    print_json,
    refuse_overwrite,
)

__all__ = ["moe_app", "register"]

moe_app = typer.Typer(
    help="delta-MoE: train MoE classifiers with fixed or per-sample k, measure accuracy and load.",
    no_args_is_help=True,
    add_completion=False,
)

ThreadsOpt = Annotated[
    int, typer.Option(help="torch intra-op threads; 1 is fastest for these small layers.")
]


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    app.add_typer(moe_app, name="moe")


@moe_app.command("train")
@cli_errors
def train_cmd(
    gate: Annotated[str, typer.Option(help="Gate: topk, topp or budget.")] = "topk",
    experts: Annotated[int, typer.Option(help="Number of experts M.")] = 8,
    k: Annotated[int, typer.Option(help="k of the topk gate (1..M).")] = 2,
    p: Annotated[float, typer.Option(help="Mass p of the topp gate, in (0, 1].")] = 0.5,
    max_k: Annotated[int, typer.Option(help="Largest k of the budget gate (1..M).")] = 4,
    penalty: Annotated[float, typer.Option(help="Budget gate: nats per extra expert.")] = 0.01,
    dataset: Annotated[str, typer.Option(help="mnist1d or gmm (known difficulty).")] = "mnist1d",
    samples: Annotated[int, typer.Option(help="MNIST-1D samples to generate (80% train).")] = 5000,
    trunk: Annotated[str, typer.Option(help="Shared trunk: conv or mlp.")] = "conv",
    d_model: Annotated[int, typer.Option(help="Width between trunk, experts and head.")] = 64,
    expert_hidden: Annotated[int, typer.Option(help="Hidden units of each expert.")] = 64,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 25,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-2,
    seed: Annotated[int, typer.Option(help="Seed of weights, batches and noise.")] = 0,
    threads: ThreadsOpt = 1,
    trace: Annotated[Path | None, typer.Option(help="Write the routing trace here.")] = None,
    results: Annotated[Path | None, typer.Option(help="Write moe-results/1 rows here.")] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Write the trained model here (moe-checkpoint/1, for hw profile/serve)."),
    ] = None,
    cache_dir: Annotated[Path, typer.Option(help="Where generated MNIST-1D is cached.")] = Path(
        ".cache/mnist1d"
    ),
    force: ForceOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Train one MoE classifier, evaluate it, and write its routing trace."""
    from hw.moe.data import gaussian_mixture, mnist1d
    from hw.moe.errors import MoEConfigError
    from hw.moe.experiments import RunSpec, run_one
    from hw.moe.models import MoEConfig
    from hw.moe.train import TrainConfig, set_threads
    from traces.moe_results import read_result_rows, write_results
    from traces.routing import read_routing, write_routing

    refuse_overwrite(trace, force)
    refuse_overwrite(results, force)
    refuse_overwrite(checkpoint, force)
    if dataset not in ("mnist1d", "gmm"):
        raise MoEConfigError(f"dataset must be mnist1d or gmm, got {dataset!r}")
    if dataset == "mnist1d":
        data = mnist1d(num_samples=samples, cache_dir=cache_dir)
    else:
        data = gaussian_mixture(seed=seed)
    cfg = MoEConfig(
        n_features=data.n_features,
        n_classes=data.n_classes,
        trunk=trunk,
        d_model=d_model,
        n_experts=experts,
        expert_hidden=expert_hidden,
        gate=gate,
        k=k,
        p=p,
        max_k=max_k,
        penalty=penalty,
    )
    tcfg = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    set_threads(threads)
    spec = RunSpec("train", data.name, "moe", seed, cfg.to_dict(), asdict(tcfg))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hw-moe-") as tmp:
        with _epoch_bar(epochs) as tick:
            run_dir = run_one(spec, data, Path(tmp), window=100, on_epoch=tick)
        row = read_result_rows(run_dir / "moe_results.parquet")[0]
        trace_file = run_dir / "routing" / str(row.routing_trace)
        routed = read_routing(trace_file)
        if trace is not None:
            write_routing(trace, routed)
        if results is not None:
            write_results(results, [replace(row, routing_trace=trace and trace.name)])
        if checkpoint is not None:
            from hw.moe.experiments import CHECKPOINT_FILE
            from traces.atomic import atomic_write_bytes

            atomic_write_bytes(checkpoint, (run_dir / CHECKPOINT_FILE).read_bytes())
    counts = routed.expert_counts().tolist()
    doc = {
        "run": row.run,
        "accuracy": row.accuracy,
        "mean_k": row.mean_k,
        "expert_evals": row.expert_evals,
        "flops_per_sample": row.flops_per_sample,
        "train_time_s": row.train_time_s,
        "expert_counts": counts,
    }
    if json_:
        print_json(doc)
        return
    table = Table(title=f"{row.run}")
    for col in ("accuracy", "mean k", "expert evals", "train s", "samples per expert"):
        table.add_column(col)
    table.add_row(
        f"{row.accuracy:.3f}",
        f"{row.mean_k:.2f}",
        str(row.expert_evals),
        f"{row.train_time_s:.1f}",
        " ".join(map(str, counts)),
    )
    out_console.print(table)


class _epoch_bar:
    """A rich progress bar over epochs on stderr; yields the on_epoch callback."""

    def __init__(self, epochs: int) -> None:
        from hw.moe.experiments import _progress

        self.bar = _progress()
        self.epochs = epochs

    def __enter__(self) -> Any:
        self.bar.__enter__()
        task = self.bar.add_task("epochs", total=self.epochs)
        return lambda epoch, loss: self.bar.update(task, completed=epoch + 1)

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a list like 0.3,0.5", param_hint=name) from None


@moe_app.command("experiments")
@cli_errors
def experiments_cmd(
    out: Annotated[Path, typer.Option(help="Folder of the published tables and traces.")] = Path(
        "traces/data/moe"
    ),
    work: Annotated[Path, typer.Option(help="Checkpoint folder (resumable).")] = Path("runs/moe"),
    quick: Annotated[bool, typer.Option(help="Tiny settings (seconds), for smoke tests.")] = False,
    seeds: Annotated[str | None, typer.Option(help="Seeds, e.g. 0,1,2 or 0..4:1.")] = None,
    samples: Annotated[
        int | None, typer.Option(help="MNIST-1D samples to generate, e.g. 40000.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Override MoE training epochs.")] = None,
    ps: Annotated[str | None, typer.Option(help="topp masses, e.g. 0.3,0.5,0.9.")] = None,
    penalties: Annotated[str | None, typer.Option(help="Budget penalties, e.g. 0,0.01.")] = None,
    threads: ThreadsOpt = 1,
    progress: Annotated[bool, typer.Option(help="Show progress bars on stderr.")] = True,
    force: ForceOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Run (or resume) the whole experiment set and publish its tables, traces and summary."""
    from hw.moe.experiments import (
        RESULTS_FILE,
        ExperimentConfig,
        collect,
        run_experiments,
    )
    from hw.moe.summary import summarize_dir, to_markdown
    from hw.moe.train import set_threads

    refuse_overwrite(out / RESULTS_FILE, force)
    changes: dict[str, Any] = {}
    if seeds is not None:
        changes["seeds"] = tuple(parse_int_list(seeds, "--seeds", minimum=0))
    if samples is not None:
        changes["num_samples"] = samples
    if epochs is not None:
        changes["epochs"] = epochs
    if ps is not None:
        changes["ps"] = _floats(ps, "--ps")
    if penalties is not None:
        changes["penalties"] = _floats(penalties, "--penalties")
    cfg = ExperimentConfig.quick(**changes) if quick else ExperimentConfig(**changes)
    set_threads(threads)
    t0, cpu0 = time.perf_counter(), time.process_time()
    dirs, run_s = run_experiments(cfg, work, progress=progress)
    collect(dirs, out)
    summary = summarize_dir(out)
    summary["wall_time_s"] = time.perf_counter() - t0
    summary["run_time_s"] = run_s
    summary["cpu_time_s"] = time.process_time() - cpu0
    summary["threads"] = threads
    summary["config"] = asdict(cfg)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    if json_:
        print_json(json.loads(json.dumps(summary, default=str)))
        return
    sys.stdout.write(to_markdown(summary))  # plain text: rich would re-wrap the tables
    err_console.print(
        f"{len(dirs)} runs in {summary['wall_time_s']:.0f} s; tables in {out}", highlight=False
    )


@moe_app.command("summary")
@cli_errors
def summary_cmd(
    results_dir: Annotated[
        Path, typer.Argument(help="Folder with moe_results.parquet, moe_load.parquet, routing/.")
    ] = Path("traces/data/moe"),
    json_: JsonOpt = False,
) -> None:
    """Print the answers (k vs accuracy, load, Pareto front, difficulty) from published tables."""
    from hw.moe.summary import summarize_dir, to_markdown

    summary = summarize_dir(results_dir)
    if json_:
        print_json(json.loads(json.dumps(summary, default=str)))
    else:
        sys.stdout.write(to_markdown(summary))  # plain text: rich would re-wrap the tables
