"""The end-to-end demo: every tool of the mission, run through its console script, then the report.

Each step is a subprocess of ``hw``, ``sim``, ``sched`` (which also proves the
CLIs work, and keeps ``reports`` free of torch and of the computing packages).
Child output goes to ``OUT/logs/<step>.log``; a rich progress bar shows the
steps. A failed step prints its command and the tail of its log and stops the
demo with a :class:`DemoError` (exit 2 through the CLI). ``sim check`` exiting
1 (the model is past tolerance somewhere) is a result, not a failure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from traces.atomic import atomic_write_text
from traces.cli_support import err_console
from traces.errors import DeltasimError
from traces.sidecar import meta_path

__all__ = ["DemoError", "Step", "demo_steps", "run_demo"]

RATE_RPS = 200.0
MEASURED_B = "1,4,16"
SIM_SEEDS = (0, 1, 2)
TOLERANCE = {"throughput": 5.0, "p50": 5.0, "p99": 10.0}


class DemoError(DeltasimError):
    """A demo step failed; the message names the step, its command and its log."""


@dataclass(frozen=True)
class Step:
    """One command; ``stdout_to`` saves its stdout (JSON lines) as a result file."""

    name: str
    argv: list[str]
    stdout_to: Path | None = None
    ok_codes: tuple[int, ...] = (0,)
    after: Callable[[], None] | None = None


def _bin(name: str) -> str:
    """The console script beside this interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def demo_steps(out: Path) -> list[Step]:
    """The mission, short settings, in data-flow order."""
    hw, sim, sched = _bin("hw"), _bin("sim"), _bin("sched")
    profile = out / "profile" / "cpu.parquet"
    measured = out / "serve" / f"measured-r{RATE_RPS:g}.parquet"
    graphs = out / "graphs"
    tol = ",".join(f"{k}={v:g}" for k, v in TOLERANCE.items())
    check = out / "check" / "simcheck.jsonl"

    def check_meta() -> None:
        meta = {"run": measured.stem, "tolerance_pct": TOLERANCE}
        atomic_write_text(meta_path(check), json.dumps(meta) + "\n")

    steps = [
        Step(
            "profile the experts",
            [
                hw,
                "profile",
                "--out",
                str(profile),
                "--batch-sizes",
                "1,2,4,8,16,32,64",
                "--min-calls",
                "5",
                "--min-time-s",
                "0.02",
                "--rounds",
                "2",
                "--state-s",  # the machine's state and stalls: half the default watch
                "30",
                "--no-progress",
            ],
        ),
        Step(
            "train MoE models (fixed and dynamic k)",
            [
                hw,
                "moe",
                "experiments",
                "--quick",
                "--seeds",
                "0,1,2",
                "--samples",
                "1000",
                "--epochs",
                "15",
                "--out",
                str(out / "moe"),
                "--work",
                str(out / "moe-work"),
                "--no-progress",
            ],
        ),
    ]
    for seed in SIM_SEEDS:
        steps.append(
            Step(
                f"simulate B = 1..64 (seed {seed})",
                [
                    sim,
                    "run",
                    "--B",
                    "1..64",
                    "--profile",
                    str(profile),
                    "--rate",
                    f"{RATE_RPS:g}",
                    "--requests",
                    "3000",
                    "--max-wait-ms",
                    "50",
                    "--seed",
                    str(seed),
                    "--out",
                    str(out / "sim" / f"sim-r{RATE_RPS:g}-s{seed}.parquet"),
                ],
            )
        )
    steps += [
        Step(
            f"serve for real at B = {MEASURED_B}",
            [hw, "serve", "--out", str(measured), "--B", MEASURED_B, "--rate", f"{RATE_RPS:g}",
             "--requests", "400", "--max-wait-s", "0.05", "--no-progress"],
        ),
        Step(
            "check the simulator against the measurement",
            [sim, "check", str(measured), "--profile", str(profile), "--tolerance", tol, "--json"],
            stdout_to=check,
            ok_codes=(0, 1),
            after=check_meta,
        ),
        Step(
            "capture a transformer's graphs (checkpointing)",
            [hw, "capture", "transformer", "--out", str(graphs), "--batch", "2", "--ac", "full"],
        ),
        Step(
            "order the graphs with every method",
            [sched, "compare", str(graphs / "forward.fx.json"), str(graphs / "backward.fx.json"),
             "--time-limit", "10", "--json"],
            stdout_to=out / "orders" / "compare.jsonl",
        ),
        Step(
            "choose the best order of the backward graph",
            [sched, "order", str(graphs / "backward.fx.json"), "--method", "best",
             "--time-limit", "10", "--out", str(out / "orders" / "backward.best.json")],
        ),
        Step(
            "verify the chosen order by measurement",
            [hw, "verify", str(graphs / "backward.fx.json"), "--order",
             str(out / "orders" / "backward.best.json"), "--json",
             "--timeline", str(out / "orders" / "backward.best.timeline.parquet")],
            stdout_to=out / "orders" / "verify.json",
        ),
        Step(
            "write the captured (given) order of the backward graph",
            [sched, "order", str(graphs / "backward.fx.json"), "--method", "given",
             "--out", str(out / "orders" / "backward.given.json")],
        ),
        Step(
            "measure the given order's memory timeline",
            [hw, "verify", str(graphs / "backward.fx.json"), "--order",
             str(out / "orders" / "backward.given.json"),
             "--timeline", str(out / "orders" / "backward.given.timeline.parquet")],
        ),
        Step(
            "measure eager vs compile peaks and every order",
            [hw, "memstudy", "--out", str(out / "memory" / "memstudy.parquet"),
             "--models", "mlp,transformer", "--batches", "2", "--time-limit", "5"],
        ),
        Step(
            "build the report",
            [_bin("report"), "build", str(out), "--out", str(out / "report.html"), "--force"],
        ),
        Step(
            "write the results summary",
            [_bin("report"), "writeup", str(out), "--out", str(out / "results.md"),
             "--report", "report.html", "--force"],
        ),
    ]  # fmt: skip
    return steps


def _run_step(step: Step, log: Path) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(step.argv) + "\n")
        fh.flush()
        try:
            proc = subprocess.run(
                step.argv,
                stdout=subprocess.PIPE if step.stdout_to else fh,
                stderr=fh,
                text=True,
                check=False,
            )
        except OSError as exc:
            raise DemoError(f"step '{step.name}' could not start {step.argv[0]}: {exc}") from None
    if proc.returncode not in step.ok_codes:
        tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-15:])
        raise DemoError(
            f"step '{step.name}' failed (exit {proc.returncode}); command and log in {log}:\n{tail}"
        )
    if step.stdout_to is not None:
        atomic_write_text(step.stdout_to, proc.stdout)
    if step.after is not None:
        step.after()
    return time.perf_counter() - t0


def run_demo(out: Path, force: bool = False) -> Path:
    """Run every step into ``out``; returns the report's path. Refuses a non-empty ``out``."""
    if out.exists() and any(out.iterdir()):
        if not force:
            raise DemoError(f"{out} is not empty; pass --force to start over")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = demo_steps(out)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task("demo", total=len(steps))
        for i, step in enumerate(steps):
            bar.update(task, description=f"[{i + 1}/{len(steps)}] {step.name}")
            slug = f"{i + 1:02d}-" + "".join(c if c.isalnum() else "-" for c in step.name)[:40]
            times[step.name] = _run_step(step, out / "logs" / f"{slug}.log")
            bar.advance(task)
        bar.update(task, description="demo")
    times["total"] = time.perf_counter() - t0
    atomic_write_text(out / "timing.json", json.dumps(times, indent=1) + "\n")
    for name, s in times.items():
        err_console.print(f"  {s:7.1f} s  {name}", highlight=False)
    return out / "report.html"
