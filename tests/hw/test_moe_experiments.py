"""The experiment set end to end at tiny settings: tables, traces, resume, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from hw.cli import app
from hw.moe.checkpoint import load_checkpoint
from hw.moe.errors import MoEConfigError
from hw.moe.experiments import ExperimentConfig, collect, plan, run_experiments
from hw.moe.summary import summarize_dir
from traces.moe_load import read_load_rows
from traces.moe_results import read_result_rows
from traces.routing import read_routing

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: the test box is shared, and oversubscribed threads only spin."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[ExperimentConfig, Path, list[Path]]:
    root = tmp_path_factory.mktemp("moe")
    cfg = ExperimentConfig.quick(cache_dir=str(root / "cache"))
    dirs, _ = run_experiments(cfg, root / "work", progress=False)
    collect(dirs, root / "out")
    return cfg, root, dirs


def test_tables_and_traces_are_complete(quick_run) -> None:
    cfg, root, dirs = quick_run
    rows = read_result_rows(root / "out" / "moe_results.parquet")
    assert len(dirs) == len(plan(cfg)) == len({r.run for r in rows})
    assert {r.experiment for r in rows} == {
        "baseline",
        "k_vs_accuracy",
        "k_vs_accuracy_probs",
        "delta",
        "difficulty",
    }
    topk = [r for r in rows if r.gate == "topk"]
    assert {r.eval_k for r in topk} == {None, *cfg.eval_ks}
    for r in rows:
        if r.gate == "topk" and r.eval_k is not None:
            assert r.mean_k == r.eval_k and r.expert_evals == r.eval_k * r.n_test
        if r.routing_trace:
            trace = read_routing(root / "out" / "routing" / r.routing_trace)
            assert len(trace.table) == r.n_test
            assert trace.k.mean() == pytest.approx(r.mean_k)
            assert (trace.correct.mean()) == pytest.approx(r.accuracy)
            if r.experiment == "difficulty":
                assert trace.difficulty is not None
    loads = read_load_rows(root / "out" / "moe_load.parquet")
    per_setting: dict = {}
    for lr in loads:
        per_setting.setdefault((lr.run, lr.eval_k), []).append(lr)
    for (run, _), group in per_setting.items():
        assert len(group) == cfg.n_experts or run.startswith("gmm")
        assert sum(x.share for x in group) == pytest.approx(1.0)
        k = group[0].mean_k
        # mean load summed over experts is k arrivals per arrival
        assert sum(x.load_mean_rps for x in group) == pytest.approx(k, rel=0.05)


def test_resume_skips_finished_runs_and_reproduces_numbers(quick_run) -> None:
    cfg, root, dirs = quick_run
    before = {d.name: (d / "done.json").stat().st_mtime_ns for d in dirs}
    killed = dirs[2]
    (killed / "done.json").unlink()  # as if killed before finishing
    old = read_result_rows(killed / "moe_results.parquet")
    again, _ = run_experiments(cfg, root / "work", progress=False)
    after = {d.name: (d / "done.json").stat().st_mtime_ns for d in again}
    assert [d.name for d in again] == [d.name for d in dirs]
    assert all(after[n] == t for n, t in before.items() if n != killed.name)
    new = read_result_rows(killed / "moe_results.parquet")
    assert [(r.accuracy, r.mean_k) for r in new] == [(r.accuracy, r.mean_k) for r in old]


def test_summary_answers_the_question(quick_run) -> None:
    _, root, _ = quick_run
    s = summarize_dir(root / "out")
    assert s["answer"]["verdict"].split(":")[0] in ("yes", "no", "inconclusive")
    assert set(s["fixed_k"]) == {"softmax", "probs"}
    for fk in s["fixed_k"].values():
        assert set(fk["trained"]) == {1, 2}
        assert set(fk["load_trained"]) == {1, 2}
    assert any(d["pareto"] for d in s["delta_points"])
    assert s["difficulty"]


def test_cli_experiments_summary_and_overwrite(quick_run) -> None:
    _, root, _ = quick_run
    out = root / "cli-out"
    args = ["moe", "experiments", "--quick", "--threads", "1", "--work", str(root / "work")]
    args += ["--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["answer"]["verdict"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(app, ["moe", "summary", str(out), "--json"])
    assert res.exit_code == 0 and "delta_points" in json.loads(res.stdout)


def test_cli_missing_column_is_one_line_exit_2(quick_run, tmp_path) -> None:
    _, root, _ = quick_run
    for name in ("moe_load.parquet",):
        (tmp_path / name).write_bytes((root / "out" / name).read_bytes())
    src = root / "out" / "moe_results.parquet"
    df = pl.read_parquet(src).drop("mean_k")
    df.write_parquet(tmp_path / "moe_results.parquet", metadata=pl.read_parquet_metadata(src))
    res = runner.invoke(app, ["moe", "summary", str(tmp_path)])
    assert res.exit_code == 2
    assert "mean_k: missing column" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "9"], "k must be an integer in 1..8"),
        (["--gate", "topp", "--p", "1.5"], "p must be in (0, 1]"),
        (["--p", "0"], "p must be in (0, 1]"),
        (["--gate", "dense"], "unknown gate 'dense'"),
        (["--gate", "budget", "--max-k", "12"], "max_k (K) must be"),
        (["--dataset", "cifar"], "dataset must be"),
    ],
)
def test_cli_bad_arguments_exit_2(args: list[str], message: str) -> None:
    res = runner.invoke(app, ["moe", "train", "--dataset", "gmm", *args])
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())


def test_cli_train_tiny(tmp_path) -> None:
    trace = tmp_path / "trace.parquet"
    ckpt = tmp_path / "model.ckpt"
    res = runner.invoke(
        app,
        [
            "moe", "train", "--dataset", "gmm", "--trunk", "mlp", "--gate", "budget",
            "--max-k", "3", "--experts", "4", "--d-model", "8", "--expert-hidden", "8",
            "--epochs", "1", "--threads", "1", "--trace", str(trace),
            "--checkpoint", str(ckpt), "--json",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    back = read_routing(trace)
    assert back.expert_counts().tolist() == doc["expert_counts"]
    assert 1 <= doc["mean_k"] <= 3
    model = load_checkpoint(ckpt)  # what hw profile / hw serve --checkpoint read
    assert model.cfg.gate == "budget" and model.cfg.n_experts == 4 and model.cfg.max_k == 3


def test_bad_experiment_config() -> None:
    with pytest.raises(MoEConfigError):
        ExperimentConfig.quick(eval_ks=(1, 5))
    with pytest.raises(MoEConfigError):
        ExperimentConfig.quick(ps=(0.0,))
