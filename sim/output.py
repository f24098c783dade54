"""Simulated runs in the measured-results schema of ``traces.serving`` (system-model §6).

``sim run`` writes exactly what ``hw serve`` writes — ``serve-records/1`` rows
per (B, request, expert), the ``serve-summary/1`` table computed by the same
:func:`traces.serving.summarize`, and a :class:`~traces.serving.ServeConfig`
beside them — so the two are compared metric for metric with one definition.
The simulator's own knobs that ``ServeConfig`` has no field for (gate policy
other than top-k, service model, per-batch overhead) travel in its ``extra``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sim.config import GatePolicy, SimConfig
from sim.queues import KIND_NAMES
from sim.records import RunResult
from traces.serving import (
    RECORDS,
    SUMMARY,
    ServeConfig,
    summarize,
    summary_path,
    write_records,
    write_summary,
)

__all__ = [
    "SIM_EXTRA_KEY",
    "records_of",
    "serve_config",
    "summarize_run",
    "summary_frame",
    "write_runs",
]

SIM_EXTRA_KEY = "sim"  # ServeConfig.extra["sim"]: the SimConfig (without B) as a dict


def serve_config(
    configs: Sequence[SimConfig], profile: str | None = None, stopped_early: Sequence[int] = ()
) -> ServeConfig:
    """The run-level config of simulated points that differ only in B.

    ``stopped_early``: the B values whose arrivals stopped at the overload guard.
    """
    c = configs[0]
    trace = c.gate.policy is GatePolicy.TRACE
    sim = c.to_dict()
    sim.pop("batch_size")
    return ServeConfig(
        n_experts=c.n_experts,
        b_values=tuple(x.batch_size for x in configs),
        devices=c.n_devices,
        placement=c.device_of(),
        arrival="poisson",
        rate_rps=c.rate_rps,
        requests=c.n_requests,
        warmup=c.warmup_requests,
        seed=c.seed,
        max_wait_s=c.max_wait_s,
        max_backlog=c.max_backlog if c.max_backlog is not None else 2**62,
        stopped_early=tuple(stopped_early),
        routing="trace" if trace else "policy",
        k=min(c.gate.max_k, c.n_experts) if not trace else 1,
        skew=c.skew,
        routing_trace=c.gate.trace,
        gate_latency_s=c.gate_latency_s,
        combine_latency_s=c.combine_latency_s,
        extra={SIM_EXTRA_KEY: sim, "profile": profile, "simulated": True},
    )


def records_of(result: RunResult) -> pl.DataFrame:
    """``serve-records/1`` rows of one simulated run (one B)."""
    cfg = result.config
    req, exp, bat = result.item_request, result.item_expert, result.item_batch
    order = np.lexsort((exp, req))
    req, exp, bat = req[order], exp[order], bat[order]
    first = np.searchsorted(req, req, side="left")
    slot = np.arange(len(req)) - first
    k = result.k[req]
    done = result.completion_s[req]
    n_warm = cfg.warmup_requests
    cols: dict[str, Any] = {
        "B": np.full(len(req), cfg.batch_size, dtype=np.int64),
        "rate_rps": np.full(len(req), cfg.rate_rps),
        "request": req,
        "warmup": req < n_warm,
        "arrival_s": result.arrival_s[req],
        "gate_start_s": result.gate_start_s[req],
        "gate_done_s": result.gate_done_s[req],
        "k": k,
        "slot": slot,
        "expert": exp,
        "weight": 1.0 / k,
        "device": result.batch_device[bat],
        "enqueue_s": result.enqueue_s[req],
        "batch": bat,
        "batch_size": result.batch_size[bat],
        "batch_kind": np.asarray(KIND_NAMES)[result.batch_kind[bat]],
        "batch_formed_s": result.batch_formed_s[bat],
        "batch_start_s": result.batch_start_s[bat],
        "batch_end_s": result.batch_end_s[bat],
        "combine_batch": result.combine_batch[req],
        "combine_start_s": done - result.combine_s[req],
        "complete_s": done,
    }
    return pl.DataFrame(cols, schema=dict(RECORDS.columns))


def summarize_run(result: RunResult, config: ServeConfig | None = None) -> dict[str, Any]:
    """The ``serve-summary/1`` row of one run, by the server's own definitions."""
    stopped = [result.config.batch_size] if result.stopped_early else []
    cfg = config or serve_config([result.config], stopped_early=stopped)
    return summarize(records_of(result), cfg).row(0, named=True)


def summary_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """Summary rows (dicts) as a ``serve-summary/1`` frame."""
    return pl.DataFrame(list(rows), schema=dict(SUMMARY.columns))


def write_runs(
    path: str | Path, records: Sequence[pl.DataFrame], summary: pl.DataFrame, config: ServeConfig
) -> Path:
    """Write records to ``path`` and the summary beside it (both atomic); return the latter."""
    write_records(path, pl.concat(list(records)), config)
    spath = summary_path(path)
    write_summary(spath, summary, config)
    return spath
