"""Memory figures: step peaks, every order against the bound, predicted vs measured peaks,
and the memory timelines of orders.

Built from ``memstudy/1`` rows, saved ``sched compare --json`` rows and
``memory-timeline/1`` rows (``hw verify --timeline``).
"""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from reports.chart import MIB, Chart

__all__ = [
    "memory_timelines",
    "order_peaks_vs_bound",
    "predicted_vs_measured",
    "step_peaks",
    "verified_orders",
]

_PALETTE = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3"]


def _step_label() -> pl.Expr:
    reorder = (
        pl.when(pl.col("reorder_for_peak_memory").is_null())
        .then(pl.lit(""))
        .when(pl.col("reorder_for_peak_memory"))
        .then(pl.lit(" (reorder on)"))
        .otherwise(pl.lit(" (reorder off)"))
    )
    return pl.concat_str([pl.col("mode"), reorder]).alias("variant")


def step_peaks(memstudy: pl.DataFrame) -> Chart:
    """Peak of one training step: eager vs torch.compile, without and with checkpointing."""
    rows = memstudy.filter(pl.col("study") == "step").with_columns(
        _step_label(),
        pl.concat_str([pl.col("model"), pl.lit(" b="), pl.col("batch").cast(pl.String)]).alias(
            "model_batch"
        ),
        (pl.col("measured_peak_bytes") / MIB).alias("measured_peak_mib"),
    )
    acs = rows["ac"].unique(maintain_order=True).to_list()
    fig = make_subplots(
        rows=1,
        cols=len(acs),
        shared_yaxes=True,
        subplot_titles=[f"checkpointing: {a}" for a in acs],
    )
    variants = rows["variant"].unique(maintain_order=True).to_list()
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa"]
    for i, ac in enumerate(acs, start=1):
        for j, v in enumerate(variants):
            d = rows.filter((pl.col("ac") == ac) & (pl.col("variant") == v))
            fig.add_trace(
                go.Bar(
                    x=d["model_batch"].to_list(),
                    y=d["measured_peak_mib"].to_list(),
                    name=v,
                    legendgroup=v,
                    showlegend=i == 1,
                    marker_color=palette[j % len(palette)],
                    customdata=d["measured_peak_bytes"].to_list(),
                    hovertemplate="%{x}<br>%{y:.4f} MiB (%{customdata:,} bytes)<extra>"
                    + f"{v}, ac={ac}</extra>",
                ),
                row=1,
                col=i,
            )
        fig.update_xaxes(title_text="model and batch size", row=1, col=i)
    fig.update_yaxes(title_text="measured peak of one step (MiB)", row=1, col=1)
    fig.update_layout(barmode="group")
    return Chart(
        "memory-steps",
        "Eager vs torch.compile peak, with and without activation checkpointing",
        "Peak memory above the parameters of one forward+backward step, measured by hw memstudy.",
        fig,
        rows.select(
            "model", "batch", "ac", "dtype", "variant", "measured_peak_bytes", "measured_peak_mib"
        ),
    )


def order_peaks_vs_bound(compare: pl.DataFrame) -> Chart:
    """Per graph, every method's simulated peak beside the best proven lower bound."""
    graphs = compare["graph"].unique(maintain_order=True).to_list()
    fig = go.Figure()
    for (method,), d in compare.group_by(["method"], maintain_order=True):
        fig.add_trace(
            go.Bar(
                x=d["graph"].to_list(),
                y=(d["peak_bytes"] / MIB).to_list(),
                name=str(method),
                customdata=list(zip(d["peak_bytes"], d["optimal"], d["seconds"], strict=True)),
                hovertemplate="%{x}<br>peak %{y:.4f} MiB (%{customdata[0]:,} bytes)"
                "<br>proven optimal: %{customdata[1]}<br>%{customdata[2]:.3g} s<extra>"
                + str(method)
                + "</extra>",
            )
        )
    bound = compare.group_by("graph", maintain_order=True).agg(
        pl.col("best_lower_bound_bytes").max()
    )
    fig.add_trace(
        go.Scatter(
            x=bound["graph"].to_list(),
            y=(bound["best_lower_bound_bytes"] / MIB).to_list(),
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 40, "line": {"width": 3}, "color": "black"},
            name="best proven lower bound",
            customdata=bound["best_lower_bound_bytes"].to_list(),
            hovertemplate="%{x}<br>lower bound %{y:.4f} MiB (%{customdata:,} bytes)<extra></extra>",
        )
    )
    fig.update_layout(
        barmode="group",
        xaxis_title="graph",
        yaxis_title="peak memory of the order (MiB, log)",
        yaxis_type="log",
        xaxis={"categoryorder": "array", "categoryarray": graphs},
    )
    return Chart(
        "memory-orders",
        "Ordering methods against the proven lower bound",
        "Peak of each method's order replayed by the memory simulator (sched compare); the black "
        "tick is the best lower bound any method proved, so a bar on the tick is optimal.",
        fig,
        compare,
        table=True,
    )


def predicted_vs_measured(memstudy: pl.DataFrame) -> Chart:
    """Predicted peak of each order against the peak measured when running exactly that order."""
    rows = memstudy.filter(
        (pl.col("study") == "order") & pl.col("predicted_peak_bytes").is_not_null()
    ).select(
        "model",
        "batch",
        "ac",
        "mode",
        "graph",
        "method",
        # Inductor level: graph/1 with the compiled wrapper's decisions folded in, when known
        pl.coalesce("predicted_with_reuse_bytes", "predicted_peak_bytes").alias(
            "predicted_peak_bytes"
        ),
        pl.col("predicted_peak_bytes").alias("graph_predicted_peak_bytes"),
        "measured_peak_bytes",
        "order_applied",
    )
    fig = go.Figure()
    sizes = pl.concat([rows["predicted_peak_bytes"], rows["measured_peak_bytes"]]) / MIB
    hi = max(1.0, float(sizes.max() or 0.0))
    fig.add_trace(
        go.Scatter(
            x=[0, hi],
            y=[0, hi],
            mode="lines",
            line={"dash": "dot", "color": "gray"},
            name="measured = predicted",
            hoverinfo="skip",
        )
    )
    for (mode,), d in rows.group_by(["mode"], maintain_order=True):
        text = [
            f"{m} {g} {meth} (b={b}, ac={a})"
            for m, g, meth, b, a in zip(
                d["model"], d["graph"], d["method"], d["batch"], d["ac"], strict=True
            )
        ]
        fig.add_trace(
            go.Scatter(
                x=(d["predicted_peak_bytes"] / MIB).to_list(),
                y=(d["measured_peak_bytes"] / MIB).to_list(),
                mode="markers",
                name=f"{mode} level",
                text=text,
                customdata=list(
                    zip(d["predicted_peak_bytes"], d["measured_peak_bytes"], strict=True)
                ),
                hovertemplate="%{text}<br>predicted %{customdata[0]:,} bytes<br>measured "
                "%{customdata[1]:,} bytes<extra></extra>",
            )
        )
    fig.update_layout(xaxis_title="predicted peak (MiB)", yaxis_title="measured peak (MiB)")
    return Chart(
        "memory-predicted-measured",
        "Predicted vs measured peak of each order",
        "Each point is one method's order of one captured graph, run exactly in that order by "
        "hw verify / hw memstudy; on the dotted line the prediction is exact.",
        fig,
        rows,
        table=True,
    )


def verified_orders(verify: pl.DataFrame) -> Chart:
    """The chosen orders run by ``hw verify``: a table, since the numbers are the point."""
    return Chart(
        "memory-verified",
        "The chosen order, verified by measurement",
        "hw verify rebuilt the captured graph, ran exactly the chosen order and measured its "
        "peak; default_measured_peak_bytes is the same graph in its captured order.",
        None,
        verify,
        table=True,
    )


def memory_timelines(timelines: pl.DataFrame, graph: str) -> Chart:
    """Memory at every step of each order of ``graph``: predicted as a line, measured as
    markers on top, one colour per order, so where they part the prediction is off."""
    rows = (
        timelines.filter(pl.col("graph") == graph)
        .sort("method", "step")
        .with_columns(
            (pl.col("predicted_bytes") / MIB).alias("predicted_mib"),
            (pl.col("measured_bytes") / MIB).alias("measured_mib"),
        )
    )
    fig = go.Figure()
    methods = rows["method"].unique(maintain_order=True).to_list()
    for i, method in enumerate(methods):
        d = rows.filter(pl.col("method") == method)
        color = _PALETTE[i % len(_PALETTE)]
        peak = int(d["predicted_bytes"].max() or 0)
        custom = list(zip(d["node"], d["predicted_bytes"], strict=True))
        fig.add_trace(
            go.Scatter(
                x=d["step"].to_list(),
                y=d["predicted_mib"].to_list(),
                mode="lines",
                line={"color": color, "shape": "hv"},
                name=f"{method}: predicted (peak {peak:,} B)",
                legendgroup=str(method),
                customdata=custom,
                hovertemplate="step %{x}: %{customdata[0]}<br>predicted %{customdata[1]:,} bytes"
                f"<extra>{method}</extra>",
            )
        )
        m = d.filter(pl.col("measured_bytes").is_not_null())
        if m.height:
            fig.add_trace(
                go.Scatter(
                    x=m["step"].to_list(),
                    y=m["measured_mib"].to_list(),
                    mode="markers",
                    marker={"color": color, "symbol": "circle-open", "size": 7},
                    name=f"{method}: measured (peak {int(m['measured_bytes'].max()):,} B)",
                    legendgroup=str(method),
                    customdata=list(
                        zip(m["node"], m["measured_bytes"], m["predicted_bytes"], strict=True)
                    ),
                    hovertemplate="step %{x}: %{customdata[0]}<br>measured %{customdata[1]:,} "
                    f"bytes<br>predicted %{{customdata[2]:,}} bytes<extra>{method}</extra>",
                )
            )
    fig.update_layout(
        xaxis_title="step of the order (one operation per step)",
        yaxis_title="memory during the step (MiB)",
    )
    slug = "".join(c if c.isalnum() else "-" for c in graph)
    return Chart(
        f"memory-timeline-{slug}",
        f"Memory timeline of {len(methods)} order(s) of {graph}",
        "Memory at every step of each order: the line is the graph/1 prediction (live buffers "
        "plus the operation's workspace), the markers are measured by hw verify --timeline "
        "(the allocator's highest live total while that operation ran). Hover for exact bytes.",
        fig,
        rows.select(
            "graph", "level", "method", "step", "node", "predicted_bytes", "measured_bytes"
        ),
    )
