"""A small run folder holding one file of every kind the report reads, written by traces writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from traces.memstudy import MemstudyRow, rows_to_frame, write_memstudy
from traces.moe_load import LoadRow, write_load
from traces.moe_results import ResultRow, write_results
from traces.routing import RoutingTrace, write_routing
from traces.serving import SUMMARY, ServeConfig, write_summary

ACCURACY = {(1, 0): 0.60, (1, 1): 0.64, (2, 0): 0.70, (2, 1): 0.74}  # (k, seed) -> accuracy


def _result(**kw: object) -> ResultRow:
    base = dict(
        experiment="k_vs_accuracy",
        dataset="mnist1d-300",
        run="r",
        model="moe",
        gate="topk",
        seed=0,
        n_experts=4,
        train_k=1,
        train_p=None,
        penalty=None,
        max_k=None,
        eval_k=None,
        accuracy=0.5,
        n_test=100,
        mean_k=1.0,
        expert_evals=100,
        flops_per_sample=1000.0,
        train_time_s=1.0,
        routing_trace=None,
    )
    base.update(kw)
    return ResultRow(**base)  # type: ignore[arg-type]


def _moe(d: Path) -> None:
    rows = [
        _result(run=f"k{k}-s{s}", train_k=k, seed=s, accuracy=a, mean_k=float(k))
        for (k, s), a in ACCURACY.items()
    ]
    rows.append(_result(experiment="baseline", model="mlp", gate=None, n_experts=0, accuracy=0.5,
                        train_k=None, mean_k=0.0, expert_evals=0))  # fmt: skip
    rng = np.random.default_rng(0)
    for s in (0, 1):
        name = f"gmm-topp-s{s}.parquet"
        diff = np.repeat(np.arange(3), 10)
        k = 1 + (diff >= s + 1).astype(int)  # seed 0: k=2 from level 1; seed 1: from level 2
        experts = np.stack([rng.permutation(4)[:2] for _ in diff])
        experts[k == 1, 1] = -1  # padded [N, 2]: unused slots hold -1
        weights = np.where(experts >= 0, 1.0 / k[:, None], 0.0)
        trace = RoutingTrace.from_arrays(
            experts, weights, 4, difficulty=diff, meta={"run": f"gmm-s{s}"}
        )
        write_routing(d / "routing" / name, trace)
        rows.append(_result(experiment="difficulty", dataset="gmm", gate="topp", train_k=None,
                            train_p=0.5, seed=s, run=f"gmm-s{s}", routing_trace=name,
                            mean_k=float(k.mean())))  # fmt: skip
    write_results(d / "moe_results.parquet", rows)
    load = []
    for k in (1, 2):
        for s in (0, 1):
            counts = [40, 30, 20, 10] if k == 1 else [30 + s, 30 - s, 20, 20]
            for e, c in enumerate(counts):
                load.append(LoadRow(f"k{k}-s{s}", "topk", None, float(k), e, c * k, c / 100, 10,
                                    0.1, 0.01, 0.05, 0.15))  # fmt: skip
    write_load(d / "moe_load.parquet", load)
    ci = lambda m: {"mean": m, "low": m - 0.05, "high": m + 0.05, "n": 2}  # noqa: E731
    summary = {
        "baseline_mlp": ci(0.5),
        "fixed_k": {"softmax": {"trained": {"1": ci(0.62), "2": ci(0.74)}}},
        "delta_points": [
            {"setting": "topk k=1", "gate": "topk", "accuracy": ci(0.62), "mean_k": ci(1.0),
             "flops_per_sample": 1000.0, "pareto": True},
            {"setting": "topk k=2", "gate": "topk", "accuracy": ci(0.72), "mean_k": ci(2.0),
             "flops_per_sample": 2000.0, "pareto": True},
            {"setting": "topp p=0.5", "gate": "topp", "accuracy": ci(0.65), "mean_k": ci(1.6),
             "flops_per_sample": 1600.0, "pareto": False},
        ],
        "answer": {
            "best_fixed": "topk k=2",
            "settings": [
                {"setting": "topp p=0.5", "accuracy_diff": ci(-0.07),
                 "expert_evals_ratio": ci(0.8), "fewer_evals": True,
                 "not_significantly_worse": False},
            ],
        },
        "difficulty": {"topp p=0.5": {"spearman_k_difficulty": ci(0.8)}},
        "moe_beats_published_mlp": False,
    }  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))


def _summary_rows(bs: list[int], thr: list[float], p50: list[float]) -> pl.DataFrame:
    rows = []
    for b, t, p in zip(bs, thr, p50, strict=True):
        row: dict[str, object] = {c: 0 for c in SUMMARY.columns}
        row.update(
            B=b, rate_rps=100.0, requests=100, span_s=1.0, offered_rps=100.0,
            throughput_rps=t, latency_mean_s=p, latency_p50_s=p, latency_p95_s=2 * p,
            latency_p99_s=3 * p, mean_batch_size=float(b), batch_hist=[0] * (b - 1) + [5],
            device_util=[0.5], expert_util=[0.1, 0.2], stopped_early=False, overloaded=False,
            gate_wait_mean_s=0.0, gate_service_mean_s=0.0, queue_wait_mean_s=0.0,
            combine_service_mean_s=0.0, overhead_mean_s=0.0, overhead_p50_s=0.0,
            overhead_p95_s=0.0, overhead_max_s=0.0,
        )  # fmt: skip
        rows.append(row)
    return pl.DataFrame(rows, schema=dict(SUMMARY.columns))


def _serve(d: Path) -> None:
    measured = ServeConfig(n_experts=2, b_values=(1, 4), rate_rps=100.0, extra={"torch": "x"})
    rows = _summary_rows([1, 4], [99.0, 98.0], [0.001, 0.02])
    write_summary(d / "measured.summary.parquet", rows, measured)
    for seed, shift in ((0, 0.0), (1, 0.002)):
        cfg = ServeConfig(n_experts=2, b_values=(1, 4), rate_rps=100.0, seed=seed,
                          extra={"sim": {}})  # fmt: skip
        df = _summary_rows([1, 4], [100.0, 99.0], [0.001 + shift, 0.02 + shift])
        write_summary(d / f"sim-s{seed}.summary.parquet", df, cfg)
    lines = [
        {"B": 1, "measured": {"throughput": 99.0, "p50": 0.001}, "simulated": {"throughput": 100.0,
         "p50": 0.0011}, "error_pct": {"throughput": 1.0101, "p50": 10.0}, "within": False},
        {"B": 4, "measured": {"throughput": 98.0, "p50": 0.02}, "simulated": {"throughput": 99.0,
         "p50": 0.0201}, "error_pct": {"throughput": 1.0204, "p50": 0.5}, "within": True},
    ]  # fmt: skip
    (d / "simcheck.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    meta = {"run": "measured", "tolerance_pct": {"throughput": 5, "p50": 5}}
    (d / "simcheck.jsonl.meta.json").write_text(json.dumps(meta))


def _memory(d: Path) -> None:
    rows = []
    for ac, eager, comp in (("none", 4 << 20, 3 << 20), ("full", 2 << 20, 3 << 20)):
        for mode, peak in (("eager", eager), ("compile", comp)):
            rows.append(MemstudyRow(f"step|{ac}|{mode}", "step", "tiny", 2, ac, "float32", mode,
                                    None if mode == "eager" else True, "step", None, None, peak,
                                    None, None, None, "2.13.0"))  # fmt: skip
    for method, pred, meas in (("lpmf", 3 << 20, 3 << 20), ("best", 2 << 20, (2 << 20) + 1024)):
        rows.append(MemstudyRow(f"order|{method}", "order", "tiny", 2, "full", "float32", "fx",
                                None, "backward", method, pred, meas, True, True, 0.1,
                                "2.13.0"))  # fmt: skip
    # Inductor level: graph/1 says 4 MiB, the compiled wrapper's reuse makes it 3 MiB, as measured
    rows.append(MemstudyRow("order|inductor|best", "order", "tiny", 2, "full", "float32",
                            "inductor", None, "backward", "best", 4 << 20, 3 << 20, True, True,
                            0.1, "2.13.0", predicted_with_reuse_bytes=3 << 20))  # fmt: skip
    write_memstudy(rows_to_frame(rows), d / "memstudy.parquet")
    compare = [
        {"graph": "g/backward.fx.json", "method": m, "peak_bytes": p, "optimal": o,
         "lower_bound_bytes": 100, "best_lower_bound_bytes": 200, "seconds": 0.01, "gap": 0.0}
        for m, p, o in (("lpmf", 300, False), ("ilp", 200, True))
    ]  # fmt: skip
    (d / "compare.jsonl").write_text("".join(json.dumps(x) + "\n" for x in compare))
    verify = {"graph": "g-bw", "level": "fx", "kind": "backward", "method": "best",
              "predicted_peak_bytes": 2048, "measured_peak_bytes": 2048,
              "default_measured_peak_bytes": 4096, "error_bytes": 0, "rel_error": 0.0,
              "order_applied": True}  # fmt: skip
    (d / "verify.json").write_text(json.dumps(verify) + "\n")


@pytest.fixture
def small_run(tmp_path: Path) -> Path:
    """A run folder with every input kind, small enough to check figures by hand."""
    d = tmp_path / "run"
    (d / "moe").mkdir(parents=True)
    _moe(d / "moe")
    _serve(d)
    _memory(d)
    return d
