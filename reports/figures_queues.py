"""Queue figures: throughput and latency against B, the trade-off curve, utilization, batches.

Built from ``serve-summary/1`` tables (simulated and measured share the schema,
so they share the axes) and from saved ``sim check --json`` rows.
"""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from reports.chart import Chart
from reports.inputs import ServeRun

__all__ = [
    "batch_histograms",
    "expert_utilization",
    "points_table",
    "sim_vs_measured",
    "tradeoff_curve",
    "versus_B",
]

_METRICS = (
    ("throughput_rps", "throughput (requests/s)", 1.0),
    ("latency_p50_s", "p50 latency (ms)", 1e3),
    ("latency_p99_s", "p99 latency (ms)", 1e3),
)


def _label(source: str, rate: float | None) -> str:
    return f"{source}, {rate:g} req/s" if rate is not None else f"{source}, trace arrivals"


def points_table(runs: list[ServeRun]) -> pl.DataFrame:
    """One row per (run, B): the summary columns the queue figures draw, and their source."""
    frames = []
    for r in runs:
        frames.append(
            r.summary.select(
                pl.lit(r.name).alias("run"),
                pl.lit(r.source).alias("source"),
                pl.lit(_label(r.source, r.rate_rps)).alias("series"),
                "B",
                "rate_rps",
                "requests",
                "offered_rps",
                "throughput_rps",
                "latency_p50_s",
                "latency_p99_s",
                "mean_batch_size",
                "overloaded",
                "expert_util",
                "batch_hist",
            )
        )
    return pl.concat(frames) if frames else pl.DataFrame()


def _by_series(points: pl.DataFrame) -> pl.DataFrame:
    """Mean and min/max over runs that share a series and B (e.g. simulator seeds)."""
    aggs = [pl.len().alias("runs")]
    for col, _, _ in _METRICS:
        aggs += [
            pl.col(col).mean().alias(col),
            pl.col(col).min().alias(f"{col}_min"),
            pl.col(col).max().alias(f"{col}_max"),
        ]
    return points.group_by(["series", "source", "B"]).agg(aggs).sort(["series", "B"])


def versus_B(points: pl.DataFrame) -> Chart:
    """Throughput, p50 and p99 against B; simulated and measured on the same axes."""
    data = _by_series(points)
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t, _ in _METRICS])
    colors: dict[str, str] = {}
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    for i, (col, title, scale) in enumerate(_METRICS, start=1):
        for (series,), d in data.group_by(["series"], maintain_order=True):
            rate = str(series).split(", ", 1)[-1]  # same colour for sim and measured at a rate
            color = colors.setdefault(rate, palette[len(colors) % len(palette)])
            simulated = d["source"][0] == "simulated"
            y = d[col] * scale
            fig.add_trace(
                go.Scatter(
                    x=d["B"].to_list(),
                    y=y.to_list(),
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": (d[f"{col}_max"] * scale - y).to_list(),
                        "arrayminus": (y - d[f"{col}_min"] * scale).to_list(),
                    },
                    mode="lines+markers",
                    line={"dash": "dash" if simulated else "solid", "color": color},
                    marker={"symbol": "circle-open" if simulated else "circle"},
                    name=str(series),
                    legendgroup=str(series),
                    showlegend=i == 1,
                    customdata=d["runs"].to_list(),
                    hovertemplate="B=%{x}<br>%{y:.4g}<br>runs: %{customdata}<extra>"
                    + str(series)
                    + "</extra>",
                ),
                row=1,
                col=i,
            )
        fig.update_xaxes(
            title_text="queue size B (samples)", type="log", dtick=0.30103, row=1, col=i
        )
        fig.update_yaxes(title_text=title, row=1, col=i)
    return Chart(
        "queues-vs-B",
        "Throughput and latency against B",
        "Solid: measured by hw serve; dashed: the SimPy model. Error bars span the runs "
        "that share a series and B (simulator seeds); absent where there is one run.",
        fig,
        data,
    )


def tradeoff_curve(points: pl.DataFrame) -> Chart:
    """p99 latency against throughput, each point labelled with its B."""
    data = _by_series(points)
    fig = go.Figure()
    for (series,), d in data.group_by(["series"], maintain_order=True):
        simulated = d["source"][0] == "simulated"
        fig.add_trace(
            go.Scatter(
                x=d["throughput_rps"].to_list(),
                y=(d["latency_p99_s"] * 1e3).to_list(),
                text=[f"B={b}" for b in d["B"].to_list()],
                mode="lines+markers+text",
                textposition="top center",
                line={"dash": "dash" if simulated else "solid"},
                name=str(series),
                hovertemplate="%{text}<br>throughput %{x:.4g} req/s<br>p99 %{y:.4g} ms"
                "<extra>" + str(series) + "</extra>",
            )
        )
    fig.update_layout(xaxis_title="throughput (requests/s)", yaxis_title="p99 latency (ms)")
    return Chart(
        "queues-tradeoff",
        "Latency–throughput trade-off",
        "Each point is one queue size B; moving along a curve is choosing B.",
        fig,
        data.select("series", "B", "throughput_rps", "latency_p99_s", "runs"),
    )


def _per_position(
    points: pl.DataFrame, column: str, value: str, position: str, first: int
) -> pl.DataFrame:
    """A per-point list column (one entry per expert, per batch size, ...) as long rows:
    ``value`` with its ``position`` in the list (counted from ``first``) per run and B."""
    long = points.select("run", "series", "B", column).explode(column)
    long = long.with_columns((pl.int_range(pl.len()).over(["run", "B"]) + first).alias(position))
    return long.rename({column: value})


def expert_utilization(points: pl.DataFrame) -> Chart:
    """Busy fraction of each expert at each B, per run."""
    long = _per_position(points, "expert_util", "utilization", "expert", first=0)
    fig = go.Figure()
    for (run, b), d in long.group_by(["run", "B"], maintain_order=True):
        fig.add_trace(
            go.Bar(
                x=d["expert"].to_list(),
                y=(d["utilization"] * 100).to_list(),
                name=f"{run} B={b}",
                hovertemplate="expert %{x}<br>busy %{y:.3f} %<extra>" + f"{run} B={b}</extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        xaxis_title="expert (index)",
        yaxis_title="utilization (% of the run busy)",
        xaxis={"dtick": 1},
    )
    return Chart(
        "queues-utilization",
        "Per-expert utilization",
        "Fraction of the measured span each expert spends running batches.",
        fig,
        long.select("run", "series", "B", "expert", "utilization"),
    )


def batch_histograms(points: pl.DataFrame) -> Chart:
    """How many batches of each size ran, per run and B."""
    long = _per_position(points, "batch_hist", "batches", "batch_size", first=1)
    long = long.filter(pl.col("batches").is_not_null())
    fig = go.Figure()
    for (run, b), d in long.group_by(["run", "B"], maintain_order=True):
        fig.add_trace(
            go.Bar(
                x=d["batch_size"].to_list(),
                y=d["batches"].to_list(),
                name=f"{run} B={b}",
                hovertemplate="size %{x}: %{y} batches<extra>" + f"{run} B={b}</extra>",
            )
        )
    fig.update_layout(
        barmode="group", xaxis_title="batch size (samples)", yaxis_title="batches (count)"
    )
    return Chart(
        "queues-batches",
        "Batch-size histograms",
        "Below B a batch left on the max-wait flush or at the end of the run.",
        fig,
        long.select("run", "series", "B", "batch_size", "batches"),
    )


def sim_vs_measured(check: pl.DataFrame) -> Chart:
    """Relative error of the model per B and metric, with the tolerance band of sim check."""
    metrics = check["metric"].unique(maintain_order=True).to_list()
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    for i, metric in enumerate(metrics, start=1):
        d = check.filter(pl.col("metric") == metric)
        for (run,), dr in d.group_by(["run"], maintain_order=True):
            fig.add_trace(
                go.Scatter(
                    x=dr["B"].to_list(),
                    y=dr["error_pct"].to_list(),
                    mode="markers+lines",
                    name=str(run),
                    legendgroup=str(run),
                    showlegend=i == 1,
                    customdata=list(zip(dr["measured"], dr["simulated"], strict=True)),
                    hovertemplate="B=%{x}<br>error %{y:+.2f} %<br>measured %{customdata[0]:.4g}"
                    "<br>simulated %{customdata[1]:.4g}<extra>" + str(run) + "</extra>",
                ),
                row=1,
                col=i,
            )
        tol = d["tolerance_pct"].drop_nulls()
        if tol.len():  # after the traces: plotly drops shapes on a still-empty subplot
            t = float(tol[0])
            fig.add_hrect(y0=-t, y1=t, fillcolor="green", opacity=0.12, line_width=0, row=1, col=i)
        fig.update_xaxes(
            title_text="queue size B (samples)", type="log", dtick=0.30103, row=1, col=i
        )
        fig.update_yaxes(title_text="(simulated − measured) / measured (%)", row=1, col=i)
    return Chart(
        "sim-vs-measured",
        "Sim vs measured: error per point",
        "sim check replays each measured run in the model; the green band is its tolerance.",
        fig,
        check,
        table=True,
    )
