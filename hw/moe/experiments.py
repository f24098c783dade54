"""The delta-MoE experiment set: plan, run with run-level checkpoints, collect the tables.

A plan is a list of :class:`RunSpec` (one trained model each). Each finished
run leaves ``<work>/<run id>/`` with its result rows, load rows, routing traces
and a ``done.json`` holding its spec, so a killed experiment resumes from the
finished runs; a run id carries a hash of its spec, so a changed setting never
reuses a stale checkpoint. :func:`collect` merges the finished runs into the
published tables (``moe_results.parquet``, ``moe_load.parquet``, ``routing/``).

Experiments (``experiment`` column of ``moe-results/1``):

- ``baseline``: the MNIST-1D paper's MLP.
- ``k_vs_accuracy``: one top-k model per training k, each evaluated at every
  k in ``eval_ks`` (load per k comes from the same evaluations).
- ``k_vs_accuracy_probs``: the same with top-p's recipe (full-softmax
  probabilities as weights, no gate noise, Switch balance loss), a control
  that separates "dynamic k" from "how the kept experts are weighted".
- ``delta``: top-p over ``ps`` and the budget gate over ``penalties``.
- ``difficulty``: top-p and budget gates on the Gaussian mixture whose
  per-sample difficulty is known, traces carrying the difficulty level.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hw.moe.checkpoint import save_checkpoint
from hw.moe.data import DEFAULT_CACHE_DIR, Dataset, gaussian_mixture, mnist1d
from hw.moe.errors import MoEConfigError
from hw.moe.gates import GateName, check_k, check_p
from hw.moe.models import MoEConfig, build_mlp_classifier, build_moe_classifier
from hw.moe.stats import window_loads
from hw.moe.train import Evaluation, TrainConfig, evaluate, train
from traces.atomic import atomic_write_bytes, atomic_write_text
from traces.moe_load import LoadRow, load_frame, read_load, write_load
from traces.moe_results import ResultRow, read_results, results_frame, write_results
from traces.routing import RoutingTrace, write_routing

__all__ = [
    "ExperimentConfig",
    "RunSpec",
    "collect",
    "load_rows",
    "plan",
    "routing_trace",
    "run_experiments",
    "run_one",
]

RESULTS_FILE = "moe_results.parquet"
LOAD_FILE = "moe_load.parquet"
ROUTING_DIR = "routing"
CHECKPOINT_FILE = "model.ckpt"


@dataclass(frozen=True)
class ExperimentConfig:
    """Every knob of the experiment set; :meth:`quick` is the tiny version tests use."""

    seeds: tuple[int, ...] = (0, 1, 2)
    num_samples: int = 5000
    data_seed: int = 42
    n_experts: int = 8
    trunk: str = "conv"
    d_model: int = 64
    expert_hidden: int = 64
    train_ks: tuple[int, ...] = (1, 2, 3, 4)
    eval_ks: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    ps: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    penalties: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03)
    max_k: int = 4
    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-2
    mlp_epochs: int = 60
    gmm_train: int = 4000
    gmm_test: int = 2000
    gmm_ps: tuple[float, ...] = (0.5, 0.8)
    gmm_penalties: tuple[float, ...] = (0.003, 0.03)
    gmm_epochs: int = 20
    window_samples: int = 100
    probs_control: bool = True
    cache_dir: str | None = str(DEFAULT_CACHE_DIR)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise MoEConfigError("need at least one seed")
        for k in (*self.train_ks, *self.eval_ks):
            check_k(k, self.n_experts)
        check_k(self.max_k, self.n_experts, "max_k (K)")
        for p in (*self.ps, *self.gmm_ps):
            check_p(p)
        if any(x < 0 for x in (*self.penalties, *self.gmm_penalties)):
            raise MoEConfigError("compute penalties must be >= 0")
        if self.window_samples < 1:
            raise MoEConfigError("window must be >= 1 sample")
        if min(self.epochs, self.mlp_epochs, self.gmm_epochs) < 1:
            raise MoEConfigError("epochs must be >= 1")

    @classmethod
    def quick(cls, **overrides: Any) -> ExperimentConfig:
        """Seconds-long settings for tests and smoke runs."""
        base = dict(
            seeds=(0,),
            num_samples=300,
            n_experts=4,
            trunk="mlp",
            d_model=16,
            expert_hidden=16,
            train_ks=(1, 2),
            eval_ks=(1, 2, 3, 4),
            ps=(0.5,),
            penalties=(0.01,),
            max_k=2,
            epochs=1,
            mlp_epochs=1,
            gmm_train=300,
            gmm_test=100,
            gmm_ps=(0.5,),
            gmm_penalties=(0.01,),
            gmm_epochs=1,
            window_samples=10,
        )
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class RunSpec:
    """One model to train and how to evaluate it."""

    experiment: str
    dataset: str
    model: str
    seed: int
    moe: dict[str, Any] | None
    train: dict[str, Any]
    eval_ks: tuple[int | None, ...] = (None,)
    trace_ks: tuple[int | None, ...] = (None,)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        if self.model == "mlp":
            label = "mlp"
        else:
            moe = self.moe or {}
            gate = moe["gate"]
            setting = {
                "topk": f"k{moe.get('k')}",
                "topp": f"p{moe.get('p')}",
                "budget": f"pen{moe.get('penalty')}",
            }[gate]
            label = f"{gate}-{setting}"
            if moe.get("weighting") == "probs":
                label = f"{gate}probs-{setting}"
        return f"{self.dataset}-{label}-s{self.seed}-{digest[:8]}"


def plan(cfg: ExperimentConfig) -> list[RunSpec]:
    """Every run of the experiment set, cheapest first within each seed."""
    mn = {"kind": "mnist1d", "num_samples": cfg.num_samples, "seed": cfg.data_seed}
    gm = {"kind": "gmm", "n_train": cfg.gmm_train, "n_test": cfg.gmm_test, "seed": cfg.data_seed}
    mn_name, gm_name = f"mnist1d-{cfg.num_samples}", "gmm"
    sizes = dict(
        n_experts=cfg.n_experts,
        trunk=cfg.trunk,
        d_model=cfg.d_model,
        expert_hidden=cfg.expert_hidden,
    )
    k_big = max(cfg.train_ks)
    runs: list[RunSpec] = []
    for seed in cfg.seeds:
        tr = asdict(TrainConfig(cfg.epochs, cfg.batch_size, cfg.lr, 0.0, seed))
        tr_mlp = asdict(TrainConfig(cfg.mlp_epochs, cfg.batch_size, cfg.lr, 0.0, seed))
        tr_gmm = asdict(TrainConfig(cfg.gmm_epochs, cfg.batch_size, cfg.lr, 0.0, seed))
        runs.append(RunSpec("baseline", mn_name, "mlp", seed, None, tr_mlp, data=mn))
        for k in cfg.train_ks:
            traces: tuple[int | None, ...] = (None,)
            if k == k_big and seed == cfg.seeds[0]:
                traces = (None, *cfg.eval_ks)
            moe = dict(sizes, gate="topk", k=k)
            runs.append(
                RunSpec(
                    "k_vs_accuracy",
                    mn_name,
                    "moe",
                    seed,
                    moe,
                    tr,
                    (None, *cfg.eval_ks),
                    traces,
                    mn,
                )
            )
        if cfg.probs_control:
            for k in cfg.train_ks:  # fixed k with top-p's recipe: probs weights, no noise
                moe = dict(
                    sizes, gate="topk", k=k, noisy=False, balance="switch", weighting="probs"
                )
                runs.append(
                    RunSpec(
                        "k_vs_accuracy_probs",
                        mn_name,
                        "moe",
                        seed,
                        moe,
                        tr,
                        (None, *cfg.eval_ks),
                        data=mn,
                    )
                )
        for p in cfg.ps:
            moe = dict(sizes, gate="topp", p=p)
            runs.append(RunSpec("delta", mn_name, "moe", seed, moe, tr, data=mn))
        for pen in cfg.penalties:
            moe = dict(sizes, gate="budget", max_k=cfg.max_k, penalty=pen)
            runs.append(RunSpec("delta", mn_name, "moe", seed, moe, tr, data=mn))
        gsizes = dict(sizes, trunk="mlp", max_k=cfg.max_k)
        for p in cfg.gmm_ps:
            moe = dict(gsizes, gate="topp", p=p)
            runs.append(RunSpec("difficulty", gm_name, "moe", seed, moe, tr_gmm, data=gm))
        for pen in cfg.gmm_penalties:
            moe = dict(gsizes, gate="budget", penalty=pen)
            runs.append(RunSpec("difficulty", gm_name, "moe", seed, moe, tr_gmm, data=gm))
    return runs


class _DataCache:
    """Each data set is generated (or read from the disk cache) once per process."""

    def __init__(self, cache_dir: str | None) -> None:
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._sets: dict[str, Dataset] = {}

    def get(self, spec: dict[str, Any]) -> Dataset:
        key = json.dumps(spec, sort_keys=True)
        if key not in self._sets:
            args = dict(spec)
            kind = args.pop("kind")
            if kind == "mnist1d":
                self._sets[key] = mnist1d(cache_dir=self.cache_dir, **args)
            else:
                self._sets[key] = gaussian_mixture(**args)
        return self._sets[key]


def routing_trace(
    ev: Evaluation, n_experts: int, data: Dataset, meta: dict[str, str]
) -> RoutingTrace:
    """The routing trace of one evaluation (test samples in arrival order)."""
    return RoutingTrace.from_arrays(
        ev.experts,
        ev.weights,
        n_experts,
        labels=data.y_test,
        predicted=ev.predicted,
        difficulty=data.difficulty_test,
        meta=meta,
    )


def load_rows(
    run: str, gate: str, eval_k: int | None, ev: Evaluation, n_experts: int, window: int
) -> list[LoadRow]:
    """Per-expert totals and per-window load of one evaluation."""
    rates = window_loads(ev.experts, n_experts, window)
    total = max(int(ev.counts.sum()), 1)
    rows = []
    for e in range(n_experts):
        r = rates[:, e] if len(rates) else np.zeros(1)
        rows.append(
            LoadRow(
                run=run,
                gate=gate,
                eval_k=eval_k,
                mean_k=ev.mean_k,
                expert=e,
                samples=int(ev.counts[e]),
                share=float(ev.counts[e]) / total,
                window_samples=window,
                load_mean_rps=float(r.mean()),
                load_std_rps=float(r.std()),
                load_p10_rps=float(np.percentile(r, 10)),
                load_p90_rps=float(np.percentile(r, 90)),
            )
        )
    return rows


def run_one(
    spec: RunSpec,
    data: Dataset,
    work_dir: Path,
    window: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> Path:
    """Train and evaluate one run; write its checkpoint folder and return it (skip if done)."""
    run_dir = work_dir / spec.run_id
    done = run_dir / "done.json"
    if done.exists():
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a run killed half-way restarts from scratch
    run_dir.mkdir(parents=True)
    tcfg = TrainConfig(**spec.train)
    if spec.model == "mlp":
        torch.manual_seed(spec.seed)
        model = build_mlp_classifier(data.n_features, data.n_classes)
    else:
        moe = dict(spec.moe or {})
        moe.setdefault("n_features", data.n_features)
        moe.setdefault("n_classes", data.n_classes)
        model = build_moe_classifier(seed=spec.seed, **moe)
    stats = train(model, data, tcfg, on_epoch)
    cfg: MoEConfig | None = getattr(model, "cfg", None)
    if cfg is not None:  # what hw profile / hw serve --checkpoint load
        save_checkpoint(model, run_dir / CHECKPOINT_FILE)
    results: list[ResultRow] = []
    loads: list[LoadRow] = []
    for eval_k in spec.eval_ks:
        ev = evaluate(model, data.x_test, data.y_test, k=eval_k)
        trace_name = None
        if cfg is not None and eval_k in spec.trace_ks:
            suffix = "" if eval_k is None else f"-k{eval_k}"
            trace_name = f"{spec.run_id}{suffix}.parquet"
            meta = {
                "run": spec.run_id,
                "dataset": spec.dataset,
                "gate": cfg.gate,
                "eval_k": "" if eval_k is None else str(eval_k),
            }
            trace = routing_trace(ev, cfg.n_experts, data, meta)
            write_routing(run_dir / ROUTING_DIR / trace_name, trace)
        if cfg is not None:
            loads += load_rows(spec.run_id, cfg.gate, eval_k, ev, cfg.n_experts, window)
        results.append(
            ResultRow(
                experiment=spec.experiment,
                dataset=spec.dataset,
                run=spec.run_id,
                model=spec.model,
                gate=None if cfg is None else cfg.gate,
                seed=spec.seed,
                n_experts=0 if cfg is None else cfg.n_experts,
                train_k=cfg.k if cfg is not None and cfg.gate == GateName.TOPK else None,
                train_p=cfg.p if cfg is not None and cfg.gate == GateName.TOPP else None,
                penalty=cfg.penalty if cfg is not None and cfg.gate == GateName.BUDGET else None,
                max_k=cfg.max_k if cfg is not None and cfg.gate == GateName.BUDGET else None,
                eval_k=eval_k,
                accuracy=ev.accuracy,
                n_test=len(data.y_test),
                mean_k=ev.mean_k,
                expert_evals=ev.expert_evals,
                flops_per_sample=ev.flops_per_sample,
                train_time_s=stats.train_time_s,
                routing_trace=trace_name,
            )
        )
    write_results(run_dir / RESULTS_FILE, results)
    write_load(run_dir / LOAD_FILE, loads)
    atomic_write_text(done, json.dumps({"spec": asdict(spec), "steps": stats.steps}) + "\n")
    return run_dir


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from traces.cli_support import err_console

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def run_experiments(
    cfg: ExperimentConfig, work_dir: Path, progress: bool = True
) -> tuple[list[Path], float]:
    """Run (or resume) every planned run; returns the run folders and the wall time."""
    runs = plan(cfg)
    cache = _DataCache(cfg.cache_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    dirs: list[Path] = []
    with _progress() if progress else nullcontext() as live:
        all_task = live.add_task("runs", total=len(runs)) if live else None
        for spec in runs:
            epochs = spec.train["epochs"]
            ep_task = live.add_task(spec.run_id, total=epochs) if live else None

            def tick(epoch: int, loss: float, _t: Any = ep_task) -> None:
                if live is not None:
                    live.update(_t, completed=epoch + 1)

            dirs.append(run_one(spec, cache.get(spec.data), work_dir, cfg.window_samples, tick))
            if live is not None:
                live.update(ep_task, completed=epochs, visible=False)
                live.advance(all_task)
    wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    log = work_dir / "timing.jsonl"  # one line per invocation: resumed runs cost less
    with log.open("a") as fh:
        fh.write(json.dumps({"runs": len(runs), "wall_s": wall_s, "cpu_s": cpu_s}) + "\n")
    return dirs, wall_s


def _iter_files(dirs: list[Path], name: str) -> Iterator[Path]:
    for d in dirs:
        path = d / name
        if path.exists():
            yield path


def collect(dirs: list[Path], out_dir: Path) -> tuple[Path, Path]:
    """Merge finished runs into ``out_dir`` (results, load, routing traces); atomic per file."""
    import polars as pl

    results = [read_results(p) for p in _iter_files(dirs, RESULTS_FILE)]
    loads = [read_load(p) for p in _iter_files(dirs, LOAD_FILE)]
    out_dir.mkdir(parents=True, exist_ok=True)
    res_path, load_path = out_dir / RESULTS_FILE, out_dir / LOAD_FILE
    write_results(res_path, pl.concat(results) if results else results_frame([]))
    write_load(load_path, pl.concat(loads) if loads else load_frame([]))
    trace_out = out_dir / ROUTING_DIR
    trace_out.mkdir(exist_ok=True)
    new = {t for d in dirs for t in (d / ROUTING_DIR).glob("*.parquet")}
    for old in trace_out.glob("*.parquet"):
        if old.name not in {t.name for t in new}:
            old.unlink()  # traces of runs no longer in the set
    for trace in sorted(new):
        atomic_write_bytes(trace_out / trace.name, trace.read_bytes())
    return res_path, load_path
