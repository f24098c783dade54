"""MoE figures: accuracy vs k, samples per expert, the delta-MoE Pareto front, k vs difficulty.

Each builder takes tables in traces formats (or the rows of ``hw moe``'s
``summary.json`` turned into a table) and returns a :class:`Chart`. Means and
spreads over seeds are formatting of rows already in the table.
"""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from reports.chart import Chart, error_bars

__all__ = [
    "PUBLISHED_MNIST1D",
    "accuracy_vs_k",
    "delta_pareto",
    "delta_points_table",
    "k_vs_difficulty",
    "samples_per_expert",
]

PUBLISHED_MNIST1D: dict[str, float] = {
    "logistic regression": 0.32,
    "MLP": 0.68,
    "GRU": 0.91,
    "CNN": 0.94,
}
"""Test accuracy of the MNIST-1D paper's baselines (Greydanus & Kobak 2020, 5000 samples)."""

_EXPERIMENT_LABEL = {
    "k_vs_accuracy": "top-k, weights renormalized",
    "k_vs_accuracy_probs": "top-k, raw gate probabilities",
}


def _spread(df: pl.DataFrame, by: list[str], cols: list[str]) -> pl.DataFrame:
    aggs = [pl.len().alias("seeds")]
    for c in cols:
        aggs += [
            pl.col(c).mean().alias(f"{c}_mean"),
            pl.col(c).std().fill_null(0).alias(f"{c}_std"),
        ]
    return df.group_by(by).agg(aggs).sort(by)


def accuracy_vs_k(results: pl.DataFrame) -> Chart:
    """Test accuracy of models trained with a fixed k, mean ± std over seeds, with baselines."""
    rows = results.filter(
        pl.col("experiment").is_in(list(_EXPERIMENT_LABEL)) & pl.col("eval_k").is_null()
    )
    data = _spread(rows, ["experiment", "train_k"], ["accuracy"])
    fig = go.Figure()
    for exp, label in _EXPERIMENT_LABEL.items():
        d = data.filter(pl.col("experiment") == exp)
        if d.is_empty():
            continue
        fig.add_trace(
            go.Scatter(
                x=d["train_k"].to_list(),
                y=(d["accuracy_mean"] * 100).to_list(),
                error_y={"type": "data", "array": (d["accuracy_std"] * 100).to_list()},
                mode="lines+markers",
                name=label,
                customdata=d["seeds"].to_list(),
                hovertemplate="k=%{x}<br>accuracy %{y:.2f} %<br>± %{error_y.array:.2f} "
                "(std over %{customdata} seeds)<extra></extra>",
            )
        )
    base = results.filter(pl.col("experiment") == "baseline")
    extra = []
    if base.height:
        mean = float(base["accuracy"].mean()) * 100  # type: ignore[arg-type]
        extra.append({"baseline": f"our MLP ({base.height} seeds)", "accuracy_pct": mean})
    extra += [
        {"baseline": f"published {k}", "accuracy_pct": v * 100}
        for k, v in PUBLISHED_MNIST1D.items()
    ]
    for b in extra:
        fig.add_hline(
            y=b["accuracy_pct"],
            line_dash="dot",
            line_color="gray",
            annotation_text=f"{b['baseline']}: {b['accuracy_pct']:.1f} %",
            annotation_position="top left",
        )
    fig.update_layout(
        xaxis_title="experts per sample k (trained and evaluated)",
        yaxis_title="test accuracy (%)",
        xaxis={"dtick": 1},
    )
    table = data.with_columns(pl.lit(None, dtype=pl.String).alias("baseline"))
    table = pl.concat(
        [
            table,
            pl.DataFrame(
                [
                    {
                        "experiment": "baseline",
                        "baseline": b["baseline"],
                        "accuracy_mean": b["accuracy_pct"] / 100,
                    }
                    for b in extra
                ]
            ),
        ],
        how="diagonal_relaxed",
    )
    return Chart(
        "moe-accuracy-k",
        "Accuracy against k",
        "MNIST-1D test accuracy of MoE classifiers trained and evaluated with a fixed k; "
        "error bars are the standard deviation over seeds; dotted lines are baselines.",
        fig,
        table,
    )


def samples_per_expert(load: pl.DataFrame) -> Chart:
    """Samples routed to each expert for each fixed k (top-k gate, its own rule)."""
    rows = load.filter((pl.col("gate") == "topk") & pl.col("eval_k").is_null())
    rows = rows.with_columns(pl.col("mean_k").round(0).cast(pl.Int64).alias("k"))
    data = _spread(rows, ["k", "expert"], ["samples", "share"])
    fig = go.Figure()
    for (k,), d in data.group_by(["k"], maintain_order=True):
        fig.add_trace(
            go.Bar(
                x=d["expert"].to_list(),
                y=d["samples_mean"].to_list(),
                error_y={"type": "data", "array": d["samples_std"].to_list()},
                name=f"k={k}",
                customdata=(d["share_mean"] * 100).to_list(),
                hovertemplate="expert %{x}<br>%{y:.1f} samples (%{customdata:.1f} % of "
                "assignments)<extra>k=" + str(k) + "</extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        xaxis_title="expert (index)",
        yaxis_title="samples routed (count, test set)",
        xaxis={"dtick": 1},
    )
    return Chart(
        "moe-load-k",
        "Samples per expert for each k",
        "Test samples routed to each expert by top-k gates, mean ± std over trained models "
        "with that k. Flat bars mean balanced load.",
        fig,
        data,
    )


def delta_points_table(summary: dict) -> pl.DataFrame:
    """The ``delta_points`` of ``hw moe``'s summary.json as a flat table."""
    rows = []
    for p in summary.get("delta_points", []):
        rows.append(
            {
                "setting": p["setting"],
                "gate": p["gate"],
                "accuracy_mean": p["accuracy"]["mean"],
                "accuracy_low": p["accuracy"]["low"],
                "accuracy_high": p["accuracy"]["high"],
                "mean_k_mean": p["mean_k"]["mean"],
                "mean_k_low": p["mean_k"]["low"],
                "mean_k_high": p["mean_k"]["high"],
                "flops_per_sample": p["flops_per_sample"],
                "pareto": bool(p["pareto"]),
                "seeds": p["accuracy"]["n"],
            }
        )
    return pl.DataFrame(rows)


def delta_pareto(points: pl.DataFrame) -> Chart:
    """Accuracy against average k and against FLOPs per sample; Pareto points joined."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06)
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a"]
    gates = points["gate"].unique(maintain_order=True).to_list()
    for col, (x, err) in enumerate([("mean_k_mean", True), ("flops_per_sample", False)], start=1):
        for (gate,), d in points.group_by(["gate"], maintain_order=True):
            pct = d.select(pl.col("accuracy_mean", "accuracy_low", "accuracy_high") * 100)
            fig.add_trace(
                go.Scatter(
                    x=d[x].to_list(),
                    y=(d["accuracy_mean"] * 100).to_list(),
                    error_y=error_bars(pct, "accuracy_mean", "accuracy_low", "accuracy_high"),
                    error_x=error_bars(d, "mean_k_mean", "mean_k_low", "mean_k_high")
                    if err
                    else None,
                    mode="markers",
                    marker={"color": palette[gates.index(gate) % len(palette)]},
                    name=str(gate),
                    legendgroup=str(gate),
                    showlegend=col == 1,
                    text=d["setting"].to_list(),
                    hovertemplate="%{text}<br>x=%{x:.4g}<br>accuracy %{y:.2f} %<extra></extra>",
                ),
                row=1,
                col=col,
            )
        front = points.filter(pl.col("pareto")).sort(x)
        fig.add_trace(
            go.Scatter(
                x=front[x].to_list(),
                y=(front["accuracy_mean"] * 100).to_list(),
                mode="lines",
                line={"dash": "dash", "color": "black"},
                name="Pareto front",
                showlegend=col == 1,
                hoverinfo="skip",
            ),
            row=1,
            col=col,
        )
    fig.update_xaxes(title_text="average experts per sample (k)", row=1, col=1)
    fig.update_xaxes(title_text="forward FLOPs per sample", row=1, col=2)
    fig.update_yaxes(title_text="test accuracy (%)", row=1, col=1)
    return Chart(
        "moe-delta-pareto",
        "delta-MoE: accuracy against average k and FLOPs",
        "Each point is a gate setting (fixed top-k, top-p, budget), mean with 95 % CI over "
        "seeds; the dashed line joins the Pareto-optimal settings as marked by hw moe.",
        fig,
        points,
    )


def k_vs_difficulty(samples: pl.DataFrame) -> Chart:
    """Mean chosen k per known difficulty level, mean ± std over seeds, per dynamic gate."""
    per_seed = samples.group_by(["setting", "seed", "difficulty"]).agg(pl.col("k").mean())
    data = _spread(per_seed, ["setting", "difficulty"], ["k"])
    fig = go.Figure()
    for (setting,), d in data.group_by(["setting"], maintain_order=True):
        fig.add_trace(
            go.Scatter(
                x=d["difficulty"].to_list(),
                y=d["k_mean"].to_list(),
                error_y={"type": "data", "array": d["k_std"].to_list()},
                mode="lines+markers",
                name=str(setting),
                hovertemplate="difficulty %{x}<br>mean k %{y:.3f}<extra>"
                + str(setting)
                + "</extra>",
            )
        )
    fig.update_layout(
        xaxis_title="sample difficulty (level, known by construction)",
        yaxis_title="experts chosen per sample (mean k)",
        xaxis={"dtick": 1},
    )
    return Chart(
        "moe-k-difficulty",
        "Chosen k against sample difficulty",
        "Dynamic gates on the Gaussian-mixture data whose difficulty is known; a gate that "
        "spends compute where it helps rises to the right. Error bars: std over seeds.",
        fig,
        data,
    )
