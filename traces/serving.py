"""Serving results (``serve-records/1``, ``serve-summary/1``) and the run config beside them.

What ``hw serve`` measures and what ``sim run`` writes for the same run, in one
schema, so ``sim check`` compares like with like (``docs/system-model.md`` §6).

``serve-records/1``: one row per (B, request, chosen expert). Times are seconds
on the run's clock (0 = start of that B's run). Every column is required and
non-null except ``rate_rps`` (null when arrivals come from a trace).

| column | type | meaning |
|---|---|---|
| ``B`` | int | queue size of this sweep point |
| ``rate_rps`` | float | offered Poisson rate (null: trace arrivals) |
| ``request`` | int | request id, 0, 1, ... in arrival order |
| ``warmup`` | bool | one of the first ``warmup`` requests: excluded from metrics |
| ``arrival_s`` | float | arrival |
| ``gate_start_s``, ``gate_done_s`` | float | the gate's service of this request |
| ``k`` | int | experts the request uses |
| ``slot`` | int | 0..k-1, in increasing expert index (the enqueue order) |
| ``expert`` | int | expert index |
| ``weight`` | float | gate weight of this expert for this request |
| ``device`` | int | device of the expert (``placement[expert]``) |
| ``enqueue_s`` | float | the request joined this expert's queue |
| ``batch`` | int | id of the batch it left in (unique within a B) |
| ``batch_size`` | int | samples in that batch |
| ``batch_kind`` | str | ``exact`` (B waited), ``flush`` (max_wait) or ``drain`` (end of run) |
| ``batch_formed_s`` | float | the batch left the queue (joined its device's ready list) |
| ``batch_start_s``, ``batch_end_s`` | float | the expert call (end: answers delivered) |
| ``combine_batch`` | int | the batch after which this request's combine ran (its last answer) |
| ``combine_start_s`` | float | start of the combine step (request-level, repeated per slot) |
| ``complete_s`` | float | completion = end of the combine step |

``serve-summary/1``: one row per B, computed from the records by
:func:`summarize` (so the simulator and the server agree on every metric's
definition); see :data:`SUMMARY` for its columns.

The run's full config (:class:`ServeConfig`, defined in ``traces.serve_config``
and re-exported here) is stored as JSON in the Parquet
key-value metadata of both files under ``deltasim.config``: with the records
it is everything the simulator needs to replay the same run (arrivals, routing,
placement, B values, max_wait, measured gate and combine costs).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from traces.errors import FormatError
from traces.serve_config import CONFIG_KEY, ServeConfig, ServeConfigError
from traces.table_schema import TableSpec, read_table, write_table

__all__ = [
    "BATCH_KINDS",
    "CONFIG_KEY",
    "RECORDS",
    "REQUEST_VIEW_COLUMNS",
    "SUMMARY",
    "RecordRow",
    "ServeConfig",
    "ServeConfigError",
    "in_run_profile",
    "read_records",
    "read_summary",
    "records_frame",
    "request_view",
    "summarize",
    "summary_path",
    "write_records",
    "write_summary",
]

BATCH_KINDS = ("exact", "flush", "drain")

RECORDS = TableSpec(
    format="serve-records/1",
    columns={
        "B": pl.Int64(),
        "rate_rps": pl.Float64(),
        "request": pl.Int64(),
        "warmup": pl.Boolean(),
        "arrival_s": pl.Float64(),
        "gate_start_s": pl.Float64(),
        "gate_done_s": pl.Float64(),
        "k": pl.Int64(),
        "slot": pl.Int64(),
        "expert": pl.Int64(),
        "weight": pl.Float64(),
        "device": pl.Int64(),
        "enqueue_s": pl.Float64(),
        "batch": pl.Int64(),
        "batch_size": pl.Int64(),
        "batch_kind": pl.Utf8(),
        "batch_formed_s": pl.Float64(),
        "batch_start_s": pl.Float64(),
        "batch_end_s": pl.Float64(),
        "combine_batch": pl.Int64(),
        "combine_start_s": pl.Float64(),
        "complete_s": pl.Float64(),
    },
    nullable=frozenset({"rate_rps"}),
)

SUMMARY = TableSpec(
    format="serve-summary/1",
    columns={
        "B": pl.Int64(),
        "rate_rps": pl.Float64(),
        "requests": pl.Int64(),  # counted (warm-up excluded)
        "warmup_requests": pl.Int64(),
        "span_s": pl.Float64(),  # first counted arrival -> last counted completion
        "offered_rps": pl.Float64(),  # counted arrivals over their own span
        "throughput_rps": pl.Float64(),
        "latency_mean_s": pl.Float64(),
        "latency_p50_s": pl.Float64(),
        "latency_p95_s": pl.Float64(),
        "latency_p99_s": pl.Float64(),
        "gate_wait_mean_s": pl.Float64(),
        "gate_service_mean_s": pl.Float64(),
        "queue_wait_mean_s": pl.Float64(),  # batch start - enqueue, over (request, expert)
        "combine_service_mean_s": pl.Float64(),
        "batches": pl.Int64(),
        "exact_batches": pl.Int64(),
        "flush_batches": pl.Int64(),
        "drain_batches": pl.Int64(),
        "mean_batch_size": pl.Float64(),
        "batch_hist": pl.List(pl.Int64()),  # [b - 1] = batches of size b
        "device_util": pl.List(pl.Float64()),
        "expert_util": pl.List(pl.Float64()),
        "backlog_half_n": pl.Int64(),  # arrived - completed at the middle arrival
        "backlog_end_n": pl.Int64(),  # ... when arrivals stopped
        "stopped_early": pl.Boolean(),
        "overloaded": pl.Boolean(),
        "overhead_mean_s": pl.Float64(),
        "overhead_p50_s": pl.Float64(),
        "overhead_p95_s": pl.Float64(),
        "overhead_max_s": pl.Float64(),
    },
    nullable=frozenset({"rate_rps", "offered_rps"}),
)

REQUEST_VIEW_COLUMNS = (
    "B",
    "request",
    "warmup",
    "latency_s",
    "gate_wait_s",
    "gate_service_s",
    "combine_service_s",
    "gap_gate_s",
    "gap_enqueue_s",
    "gap_form_s",
    "gap_dispatch_s",
    "gap_combine_s",
    "overhead_s",
)


@dataclass(frozen=True, slots=True)
class RecordRow:
    """One (request, chosen expert) of a run; field names are the ``serve-records/1`` columns."""

    B: int
    rate_rps: float | None
    request: int
    warmup: bool
    arrival_s: float
    gate_start_s: float
    gate_done_s: float
    k: int
    slot: int
    expert: int
    weight: float
    device: int
    enqueue_s: float
    batch: int
    batch_size: int
    batch_kind: str
    batch_formed_s: float
    batch_start_s: float
    batch_end_s: float
    combine_batch: int
    combine_start_s: float
    complete_s: float


def summary_path(records_path: str | Path) -> Path:
    """Where the per-B summary of a records file lives: ``x.parquet`` -> ``x.summary.parquet``."""
    p = Path(records_path)
    return p.with_name(p.stem + ".summary" + (p.suffix or ".parquet"))


def records_frame(rows: list[RecordRow]) -> pl.DataFrame:
    """Rows -> a frame with exactly the ``serve-records/1`` schema."""
    if not rows:
        return RECORDS.empty()
    cols = {name: [getattr(r, name) for r in rows] for name in RECORDS.columns}
    return pl.DataFrame(cols, schema=dict(RECORDS.columns))


def _check_records(df: pl.DataFrame, source: str) -> None:
    kinds = set(df["batch_kind"].unique().to_list())
    if not kinds <= set(BATCH_KINDS):
        raise FormatError(source, "batch_kind", f"unknown kinds {sorted(kinds - set(BATCH_KINDS))}")
    dup = df.group_by(["B", "request", "expert"]).len().filter(pl.col("len") > 1)
    if dup.height:
        r = dup.row(0, named=True)
        raise FormatError(
            source,
            "request",
            f"request {r['request']} at B={r['B']} has expert {r['expert']} twice",
        )


def write_records(path: str | Path, records: pl.DataFrame, config: ServeConfig) -> None:
    """Check and write the records atomically, with the run's config in the metadata."""
    _check_records(records, str(path))
    write_table(
        path, records.sort(["B", "request", "slot"]), RECORDS, {CONFIG_KEY: config.to_json()}
    )


def _config_from(meta: Mapping[str, str], source: str) -> ServeConfig:
    if CONFIG_KEY not in meta:
        raise FormatError(source, CONFIG_KEY, "missing run config in the Parquet metadata")
    return ServeConfig.from_json(meta[CONFIG_KEY], source)


def read_records(path: str | Path) -> tuple[pl.DataFrame, ServeConfig]:
    """Read and validate a records file; returns the frame and the run's config."""
    df, meta = read_table(path, RECORDS)
    _check_records(df, str(path))
    return df, _config_from(meta, str(path))


def write_summary(path: str | Path, summary: pl.DataFrame, config: ServeConfig) -> None:
    write_table(path, summary, SUMMARY, {CONFIG_KEY: config.to_json()})


def read_summary(path: str | Path) -> tuple[pl.DataFrame, ServeConfig]:
    df, meta = read_table(path, SUMMARY)
    return df, _config_from(meta, str(path))


# --- metrics ---------------------------------------------------------------------------------


def _batches(rows: pl.DataFrame) -> pl.DataFrame:
    return (
        rows.group_by("batch")
        .agg(
            pl.col("expert").first(),
            pl.col("device").first(),
            pl.col("batch_size").first(),
            pl.col("batch_kind").first(),
            pl.col("batch_formed_s").first(),
            pl.col("batch_start_s").first(),
            pl.col("batch_end_s").first(),
            pl.col("enqueue_s").min().alias("first_enqueue_s"),
            pl.col("enqueue_s").max().alias("last_enqueue_s"),
            pl.len().alias("members"),
        )
        .sort("batch")
    )


def _point_view(rows: pl.DataFrame, max_wait_s: float | None) -> pl.DataFrame:
    """Per-request latency decomposition of one B (see :func:`request_view`)."""
    reqs = (
        rows.group_by("request")
        .agg(
            pl.col("B").first(),
            pl.col("warmup").first(),
            pl.col("arrival_s").first(),
            pl.col("gate_start_s").first(),
            pl.col("gate_done_s").first(),
            pl.col("combine_batch").first(),
            pl.col("combine_start_s").first(),
            pl.col("complete_s").first(),
            pl.col("enqueue_s").filter(pl.col("batch") == pl.col("combine_batch")).first(),
        )
        .sort("request")
    )
    batches = _batches(rows)
    n = reqs.height
    arrival = reqs["arrival_s"].to_numpy()
    g_start = reqs["gate_start_s"].to_numpy()
    g_done = reqs["gate_done_s"].to_numpy()
    c_start = reqs["combine_start_s"].to_numpy()
    done = reqs["complete_s"].to_numpy()
    crit = reqs["combine_batch"].to_numpy()
    crit_enq = reqs["enqueue_s"].fill_null(np.nan).to_numpy()

    # gate: one FCFS server in request order
    prev_done = np.concatenate([[-np.inf], g_done[:-1]]) if n else np.array([])
    gap_gate = g_start - np.maximum(arrival, prev_done)

    # batch formation instant the model would give, and dispatch onto the device
    b_id = batches["batch"].to_numpy()
    kind = batches["batch_kind"].to_list()
    formed = batches["batch_formed_s"].to_numpy()
    start = batches["batch_start_s"].to_numpy()
    end = batches["batch_end_s"].to_numpy()
    device = batches["device"].to_numpy()
    last_gate_done = float(g_done.max()) if n else 0.0
    model_formed = np.where(
        np.array([k == "exact" for k in kind]),
        batches["last_enqueue_s"].to_numpy(),
        np.where(
            np.array([k == "drain" for k in kind]),
            last_gate_done,
            batches["first_enqueue_s"].to_numpy() + (max_wait_s or 0.0),
        ),
    )
    if max_wait_s is None:  # a flush without max_wait cannot happen; leave its formation as is
        model_formed = np.where(np.array([k == "flush" for k in kind]), formed, model_formed)
    gap_form = np.maximum(formed - model_formed, 0.0)
    # device free: end of its previous batch and of the combines run right after it
    last_complete = dict(rows.group_by("combine_batch").agg(pl.col("complete_s").max()).iter_rows())
    free_before = np.full(len(b_id), -np.inf)
    for d in np.unique(device):
        idx = np.flatnonzero(device == d)
        idx = idx[np.argsort(start[idx], kind="stable")]
        for prev, cur in itertools.pairwise(idx):
            free_before[cur] = max(end[prev], last_complete.get(int(b_id[prev]), -np.inf))
    gap_dispatch = start - np.maximum(formed, free_before)
    pos = {int(b): i for i, b in enumerate(b_id)}
    ci = np.array([pos[int(b)] for b in crit], dtype=np.int64)

    # combine: sequential on the device after the critical batch, in combine_start order
    gap_combine = np.zeros(n)
    order = np.lexsort((c_start, crit))
    prev_b, prev_end = None, -np.inf
    for i in order:
        if crit[i] != prev_b:
            prev_b, prev_end = crit[i], end[ci[i]]
        gap_combine[i] = c_start[i] - max(end[ci[i]], prev_end)
        prev_end = done[i]

    gap_enqueue = crit_enq - g_done
    view = pl.DataFrame(
        {
            "B": reqs["B"],
            "request": reqs["request"],
            "warmup": reqs["warmup"],
            "latency_s": done - arrival,
            "gate_wait_s": g_start - arrival,
            "gate_service_s": g_done - g_start,
            "combine_service_s": done - c_start,
            "gap_gate_s": gap_gate,
            "gap_enqueue_s": gap_enqueue,
            "gap_form_s": gap_form[ci],
            "gap_dispatch_s": gap_dispatch[ci],
            "gap_combine_s": gap_combine,
        }
    )
    return view.with_columns(
        (
            pl.col("gap_gate_s")
            + pl.col("gap_enqueue_s")
            + pl.col("gap_form_s")
            + pl.col("gap_dispatch_s")
            + pl.col("gap_combine_s")
        ).alias("overhead_s")
    ).select(REQUEST_VIEW_COLUMNS)


def request_view(records: pl.DataFrame, max_wait_s: float | None = None) -> pl.DataFrame:
    """One row per (B, request): latency and where it went (``docs/system-model.md`` §7).

    ``overhead_s`` is the sum of the gaps on the request's path where the run
    lags the instant rules of the system model: gate start after the gate was
    free and the request there (``gap_gate_s``), enqueue after gate done
    (``gap_enqueue_s``), batch formation after its rule fired (``gap_form_s``),
    batch start after the batch was ready and its device free
    (``gap_dispatch_s``), and combine start after its turn came
    (``gap_combine_s``); all are 0 in the simulator by construction.
    """
    parts = [
        _point_view(records.filter(pl.col("B") == b), max_wait_s)
        for b in sorted(records["B"].unique().to_list())
    ]
    if not parts:
        return pl.DataFrame(schema=dict.fromkeys(REQUEST_VIEW_COLUMNS, pl.Float64()))
    return pl.concat(parts)


def _busy(starts: np.ndarray, ends: np.ndarray, lo: float, hi: float) -> float:
    return float(np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0.0, None).sum())


def _backlog_at(t: float, arrival: np.ndarray, done: np.ndarray) -> int:
    return int((arrival <= t).sum() - (done <= t).sum())


def _summary_row(rows: pl.DataFrame, config: ServeConfig, b: int) -> dict[str, Any]:
    view = _point_view(rows, config.max_wait_s)
    counted = view.filter(~pl.col("warmup"))
    reqs = rows.group_by("request").agg(
        pl.col("arrival_s").first(), pl.col("complete_s").first(), pl.col("warmup").first()
    )
    creq = reqs.filter(~pl.col("warmup"))
    crows = rows.filter(~pl.col("warmup"))
    batches = _batches(rows)
    arr_all = np.sort(reqs["arrival_s"].to_numpy())
    done_all = reqs["complete_s"].to_numpy()
    n = creq.height
    if n:
        lo, hi = float(creq["arrival_s"].min()), float(creq["complete_s"].max())
    else:
        lo = hi = 0.0
    span = max(hi - lo, 0.0)
    arr_span = float(creq["arrival_s"].max() - creq["arrival_s"].min()) if n > 1 else 0.0
    lat = counted["latency_s"].to_numpy()
    over = counted["overhead_s"].to_numpy()

    def q(a: np.ndarray, p: float) -> float:
        return float(np.percentile(a, p)) if len(a) else float("nan")

    def mean(a: np.ndarray) -> float:
        return float(a.mean()) if len(a) else float("nan")

    sizes = batches["batch_size"].to_numpy()
    hist = np.bincount(sizes, minlength=max(b, int(sizes.max()) if len(sizes) else 0) + 1)[1:]
    kinds = batches["batch_kind"].to_list()
    n_dev = max(config.devices, int(rows["device"].max()) + 1 if rows.height else 1)
    n_exp = max(config.n_experts, int(rows["expert"].max()) + 1 if rows.height else 1)
    b_start = batches["batch_start_s"].to_numpy()
    b_end = batches["batch_end_s"].to_numpy()
    b_dev = batches["device"].to_numpy()
    b_exp = batches["expert"].to_numpy()
    comb = rows.group_by("request").agg(
        pl.col("combine_start_s").first(),
        pl.col("complete_s").first(),
        pl.col("device").filter(pl.col("batch") == pl.col("combine_batch")).first(),
    )
    c_dev = comb["device"].to_numpy()
    c_s, c_e = comb["combine_start_s"].to_numpy(), comb["complete_s"].to_numpy()
    dev_util = [
        (
            _busy(b_start[b_dev == d], b_end[b_dev == d], lo, hi)
            + _busy(c_s[c_dev == d], c_e[c_dev == d], lo, hi)
        )
        / span
        if span > 0
        else 0.0
        for d in range(n_dev)
    ]
    exp_util = [
        _busy(b_start[b_exp == e], b_end[b_exp == e], lo, hi) / span if span > 0 else 0.0
        for e in range(n_exp)
    ]
    backlog_half = (
        _backlog_at(float(arr_all[len(arr_all) // 2]), arr_all, done_all) if len(arr_all) else 0
    )
    backlog_end = _backlog_at(float(arr_all[-1]), arr_all, done_all) if len(arr_all) else 0
    stopped = b in config.stopped_early
    slack = n_exp * b + n_dev
    overloaded = stopped or (backlog_end > slack and backlog_end >= 1.5 * max(backlog_half, 1))
    return {
        "B": b,
        "rate_rps": rows["rate_rps"][0] if rows.height else config.rate_rps,
        "requests": n,
        "warmup_requests": reqs.height - n,
        "span_s": span,
        "offered_rps": (n - 1) / arr_span if arr_span > 0 else None,
        "throughput_rps": n / span if span > 0 else 0.0,
        "latency_mean_s": mean(lat),
        "latency_p50_s": q(lat, 50),
        "latency_p95_s": q(lat, 95),
        "latency_p99_s": q(lat, 99),
        "gate_wait_mean_s": mean(counted["gate_wait_s"].to_numpy()),
        "gate_service_mean_s": mean(counted["gate_service_s"].to_numpy()),
        "queue_wait_mean_s": mean((crows["batch_start_s"] - crows["enqueue_s"]).to_numpy()),
        "combine_service_mean_s": mean(counted["combine_service_s"].to_numpy()),
        "batches": batches.height,
        "exact_batches": kinds.count("exact"),
        "flush_batches": kinds.count("flush"),
        "drain_batches": kinds.count("drain"),
        "mean_batch_size": mean(sizes.astype(float)),
        "batch_hist": hist.tolist(),
        "device_util": dev_util,
        "expert_util": exp_util,
        "backlog_half_n": backlog_half,
        "backlog_end_n": backlog_end,
        "stopped_early": stopped,
        "overloaded": bool(overloaded),
        "overhead_mean_s": mean(over),
        "overhead_p50_s": q(over, 50),
        "overhead_p95_s": q(over, 95),
        "overhead_max_s": float(over.max()) if len(over) else float("nan"),
    }


def summarize(records: pl.DataFrame, config: ServeConfig) -> pl.DataFrame:
    """The ``serve-summary/1`` table of a records table: one row per B.

    Overload: arrivals stopped at ``max_backlog``, or the backlog (arrived but
    not completed) when arrivals stopped exceeds what full queues can hold
    (``n_experts * B + devices``) and is at least 1.5x the backlog at the middle
    arrival, i.e. it was still growing.
    """
    out = [
        _summary_row(records.filter(pl.col("B") == b), config, int(b))
        for b in sorted(records["B"].unique().to_list())
    ]
    if not out:
        return SUMMARY.empty()
    return pl.DataFrame(out, schema=dict(SUMMARY.columns))


def in_run_profile(records: pl.DataFrame, device: str = "in-run") -> pl.DataFrame:
    """The service times a run actually saw, as a latency profile table (``traces.profile``).

    One row per (expert, batch size) with the median, p10 and p90 of its batches'
    ``batch_end - batch_start``, plus ``gate`` and ``combine`` rows (batch size 1,
    ``expert = -1``) from the counted requests. Replaying a run with this profile
    instead of the offline one separates the model's error from the slowdown the
    server's own concurrency causes (``docs/serving.md``).
    """
    counted = records.filter(~pl.col("warmup"))
    batches = counted.unique(["B", "batch"], keep="first").with_columns(
        (pl.col("batch_end_s") - pl.col("batch_start_s")).alias("s")
    )
    reqs = counted.unique(["B", "request"], keep="first")

    def stats(frame: pl.DataFrame, keys: list[str], col: pl.Expr) -> pl.DataFrame:
        return frame.group_by(keys).agg(
            col.median().alias("latency_s"),
            col.quantile(0.1).alias("latency_p10_s"),
            col.quantile(0.9).alias("latency_p90_s"),
            pl.len().cast(pl.Int64).alias("samples"),
        )

    experts = stats(batches, ["expert", "batch_size"], pl.col("s")).with_columns(
        pl.lit("expert").alias("component")
    )
    steps = [
        stats(reqs.with_columns(pl.lit(-1).alias("expert"), pl.lit(1).alias("batch_size")),
              ["expert", "batch_size"], col).with_columns(pl.lit(name).alias("component"))
        for name, col in (
            ("gate", pl.col("gate_done_s") - pl.col("gate_start_s")),
            ("combine", pl.col("complete_s") - pl.col("combine_start_s")),
        )
    ]  # fmt: skip
    out = pl.concat([experts, *steps], how="diagonal_relaxed").with_columns(
        pl.lit(device).alias("device"),
        pl.col("expert").cast(pl.Int64),
        pl.col("batch_size").cast(pl.Int64),
        pl.max_horizontal(pl.col("latency_p10_s"), pl.lit(1e-9)).alias("latency_p10_s"),
        pl.max_horizontal(pl.col("latency_s"), pl.lit(1e-9)).alias("latency_s"),
    )
    return out.sort("component", "expert", "batch_size")
