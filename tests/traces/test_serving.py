"""The serving tables: round trips, schema checks, and metrics on hand-computed timelines."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from traces.errors import FormatError
from traces.serving import (
    RECORDS,
    SUMMARY,
    RecordRow,
    ServeConfig,
    ServeConfigError,
    in_run_profile,
    read_records,
    read_summary,
    records_frame,
    request_view,
    summarize,
    summary_path,
    write_records,
    write_summary,
)


def _row(
    req: int,
    arrival: float,
    gate: tuple[float, float],
    expert: int,
    batch: tuple,
    comb: tuple,
    B: int = 2,
    warmup: bool = False,
) -> RecordRow:
    bid, size, kind, formed, start, end = batch
    return RecordRow(
        B=B, rate_rps=1.0, request=req, warmup=warmup, arrival_s=arrival,
        gate_start_s=gate[0], gate_done_s=gate[1], k=1, slot=0, expert=expert, weight=1.0,
        device=0, enqueue_s=gate[1], batch=bid, batch_size=size, batch_kind=kind,
        batch_formed_s=formed, batch_start_s=start, batch_end_s=end, combine_batch=bid,
        combine_start_s=comb[0], complete_s=comb[1],
    )  # fmt: skip


def _ideal(dispatch_delay: float = 0.0) -> list[RecordRow]:
    """B=2, one device, gate 1 s, expert 2 s, combine 0.5 s, by the system model's rules.

    r0 (t=0) and r1 (t=0.5) fill expert 0's queue at t=2; r2 (t=3) is drained at
    t=4 (last gate done) and waits for the device until 5 (its combines end at 5).
    """
    d = dispatch_delay
    return [
        _row(0, 0.0, (0.0, 1.0), 0, (0, 2, "exact", 2.0, 2.0, 4.0), (4.0, 4.5)),
        _row(1, 0.5, (1.0, 2.0), 0, (0, 2, "exact", 2.0, 2.0, 4.0), (4.5, 5.0)),
        _row(2, 3.0, (3.0, 4.0), 1, (1, 1, "drain", 4.0, 5.0 + d, 7.0 + d), (7.0 + d, 7.5 + d)),
    ]


def _config(**kw: object) -> ServeConfig:
    base: dict = dict(n_experts=2, b_values=(2,), rate_rps=1.0, requests=3)
    base.update(kw)
    return ServeConfig(**base)


def test_records_round_trip_keeps_rows_and_config(tmp_path: Path) -> None:
    frame = records_frame(_ideal())
    cfg = _config(gate_latency_s=1.0, model={"n_experts": 2}, stopped_early=(2,))
    path = tmp_path / "run.parquet"
    write_records(path, frame, cfg)
    back, back_cfg = read_records(path)
    assert back.equals(frame.sort(["B", "request", "slot"]))
    assert back_cfg == cfg
    summary = summarize(back, back_cfg)
    write_summary(summary_path(path), summary, cfg)
    s_back, s_cfg = read_summary(tmp_path / "run.summary.parquet")
    assert s_back.equals(summary) and s_cfg == cfg


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    records_frame(_ideal()).drop("batch_end_s").write_parquet(
        path, metadata={"deltasim.format": RECORDS.format}
    )
    with pytest.raises(FormatError, match="batch_end_s"):
        read_records(path)


def test_wrong_format_and_missing_config_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    records_frame(_ideal()).write_parquet(path, metadata={"deltasim.format": SUMMARY.format})
    with pytest.raises(FormatError, match="serve-records/1"):
        read_records(path)
    records_frame(_ideal()).write_parquet(path, metadata={"deltasim.format": RECORDS.format})
    with pytest.raises(FormatError, match=r"deltasim\.config"):
        read_records(path)
    with pytest.raises(FormatError, match="no such file"):
        read_records(tmp_path / "absent.parquet")


def test_duplicate_request_expert_is_rejected(tmp_path: Path) -> None:
    rows = _ideal()
    with pytest.raises(FormatError, match="request 2"):
        write_records(tmp_path / "d.parquet", records_frame([*rows, rows[2]]), _config())


def test_ideal_timeline_has_zero_overhead_and_closed_form_metrics() -> None:
    rec = records_frame(_ideal())
    view = request_view(rec)
    assert view["latency_s"].to_list() == [4.5, 4.5, 4.5]
    assert np.allclose(view["overhead_s"].to_numpy(), 0.0)
    s = summarize(rec, _config()).row(0, named=True)
    assert s["requests"] == 3 and s["warmup_requests"] == 0
    assert s["span_s"] == pytest.approx(7.5)
    assert s["throughput_rps"] == pytest.approx(3 / 7.5)
    assert s["offered_rps"] == pytest.approx(2 / 3.0)
    assert s["latency_mean_s"] == pytest.approx(4.5)
    assert s["gate_wait_mean_s"] == pytest.approx(0.5 / 3)  # r1 waits 0.5 for the gate
    assert s["queue_wait_mean_s"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert (s["exact_batches"], s["flush_batches"], s["drain_batches"]) == (1, 0, 1)
    assert s["batch_hist"] == [1, 1]
    # device busy: batches 2-4 and 5-7, combines 4-5 and 7-7.5 -> 5.5 of 7.5 s
    assert s["device_util"] == [pytest.approx(5.5 / 7.5)]
    assert s["expert_util"] == [pytest.approx(2 / 7.5), pytest.approx(2 / 7.5)]
    assert not s["overloaded"]


def test_a_late_dispatch_is_overhead_of_that_request_only() -> None:
    view = request_view(records_frame(_ideal(dispatch_delay=0.25)))
    assert np.allclose(view["gap_dispatch_s"].to_numpy(), [0.0, 0.0, 0.25])
    assert np.allclose(view["overhead_s"].to_numpy(), [0.0, 0.0, 0.25])


def test_warmup_requests_are_excluded() -> None:
    rows = _ideal()
    rows[0] = replace(rows[0], warmup=True)
    s = summarize(records_frame(rows), _config(warmup=1)).row(0, named=True)
    assert s["requests"] == 2 and s["warmup_requests"] == 1
    assert s["span_s"] == pytest.approx(7.5 - 0.5)


def _queue_rows(n: int, service_s: float, gap_s: float) -> list[RecordRow]:
    """B=1, k=1, one expert, FCFS device of fixed service; zero gate/combine cost."""
    rows, free = [], 0.0
    for i in range(n):
        t = i * gap_s
        start = max(t, free)
        free = start + service_s
        rows.append(_row(i, t, (t, t), 0, (i, 1, "exact", t, start, free), (free, free), B=1))
    return rows


def test_overload_is_a_growing_backlog() -> None:
    cfg = ServeConfig(n_experts=1, b_values=(1,), rate_rps=10.0, requests=200)
    slow = summarize(records_frame(_queue_rows(200, 0.2, 0.1)), cfg).row(0, named=True)
    fast = summarize(records_frame(_queue_rows(200, 0.05, 0.1)), cfg).row(0, named=True)
    assert slow["overloaded"] and not fast["overloaded"]
    assert slow["backlog_end_n"] >= 1.8 * slow["backlog_half_n"] > 0
    assert fast["backlog_end_n"] <= 1
    assert slow["throughput_rps"] == pytest.approx(5.0, rel=0.02)  # the server's capacity
    stopped = summarize(records_frame(_queue_rows(20, 0.05, 0.1)), replace(cfg, stopped_early=(1,)))
    assert stopped["overloaded"][0] and stopped["stopped_early"][0]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"b_values": (0,)}, "B must be >= 1"),
        ({"rate_rps": -1.0}, "rate"),
        ({"placement": (0, 3)}, "placement"),
        ({"k": 3}, "k must be"),
        ({"max_wait_s": 0.0}, "max-wait"),
        ({"warmup": -1}, "warmup"),
        ({"rate_rps": None}, "need --rate"),
    ],
)
def test_config_rejects_impossible_runs(kw: dict, match: str) -> None:
    with pytest.raises(ServeConfigError, match=match):
        _config(**kw)


def test_config_json_keeps_unknown_keys_in_extra() -> None:
    cfg = _config()
    text = cfg.to_json().replace('"k": 1', '"k": 1, "future_knob": 3')
    back = ServeConfig.from_json(text)
    assert back.extra == {"future_knob": 3}
    assert replace(back, extra={}) == cfg
    with pytest.raises(FormatError):
        ServeConfig.from_json("[1, 2]")


def test_empty_records_summarize_to_an_empty_table() -> None:
    assert summarize(RECORDS.empty(), _config()).height == 0
    assert (
        pl.DataFrame(schema=dict(SUMMARY.columns)).columns
        == summarize(RECORDS.empty(), _config()).columns
    )


def test_in_run_profile_is_a_valid_profile_of_the_seen_service_times() -> None:
    from traces.profile import profile_from_frame

    prof = profile_from_frame(in_run_profile(records_frame(_ideal())))
    assert prof.experts == [0, 1]
    assert prof.latency_s(0, 2) == pytest.approx(2.0)
    assert prof.latency_s(1, 1) == pytest.approx(2.0)
    assert prof.component_latency_s("gate") == pytest.approx(1.0)
    assert prof.component_latency_s("combine") == pytest.approx(0.5)


SERVE_DATA = Path(__file__).resolve().parents[2] / "traces" / "data" / "serve"


@pytest.mark.parametrize(("name", "rate"), [("cpu-r100", 100.0), ("cpu-r400", 400.0)])
def test_shipped_measured_runs_are_consistent_and_replayable(name: str, rate: float) -> None:
    from polars.testing import assert_frame_equal

    rec, cfg = read_records(SERVE_DATA / f"{name}.parquet")
    summary, cfg2 = read_summary(SERVE_DATA / f"{name}.summary.parquet")
    assert cfg == cfg2 and cfg.rate_rps == rate and cfg.b_values == (1, 4, 16)
    assert cfg.gate_latency_s and cfg.gate_latency_s > 0
    assert cfg.combine_latency_s and cfg.combine_latency_s > 0
    # the stored summary is exactly what the shared metric code computes from the records
    assert_frame_equal(summarize(rec, cfg), summary)
    per_b = rec.group_by("B", "request").agg(pl.len(), pl.col("k").first(), pl.col("expert"))
    assert (per_b["len"] == per_b["k"]).all()
    assert per_b.group_by("B").len()["len"].to_list() == [cfg.requests] * 3
    # every B saw the same requests: same routing, so a replay compares like with like
    routes = per_b.sort("B", "request").group_by("B", maintain_order=True).agg(pl.col("expert"))
    assert routes["expert"][0].to_list() == routes["expert"][1].to_list()
    batches = rec.unique(["B", "batch"])
    assert (batches.filter(pl.col("batch_kind") == "exact")["batch_size"] == batches.filter(
        pl.col("batch_kind") == "exact"
    )["B"]).all()  # fmt: skip
    cols = ["arrival_s", "gate_start_s", "gate_done_s", "enqueue_s", "batch_formed_s",
            "batch_start_s", "batch_end_s", "combine_start_s", "complete_s"]  # fmt: skip
    assert (np.diff(rec.select(cols).to_numpy(), axis=1) >= 0).all()
