"""Assemble sections of charts into one self-contained HTML page.

plotly.js is inlined once in the head, so the file opens offline and can be
mailed. Every chart carries a "download CSV" data-URI link with exactly the
table it draws; charts marked ``table`` also show it inline.
"""

from __future__ import annotations

import base64
import html

import plotly.io as pio
import polars as pl
from plotly.offline import get_plotlyjs

from reports.chart import Chart, Section

__all__ = ["csv_data_uri", "render_page", "table_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1em 2em; color: #222; }
nav { background: #f5f5f7; padding: .5em 1.5em; border-radius: 6px; }
nav ul { margin: .3em 0; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
.chart { margin: 1.5em 0 2.5em; } .caption { color: #555; margin: .2em 0 .5em; }
.note { background: #fff8e1; padding: .5em 1em; border-left: 4px solid #f0b400; }
table.data { border-collapse: collapse; font-size: 12px; margin-top: .5em; }
table.data td, table.data th { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
details { margin-top: .4em; } a.csv { font-size: 13px; }
"""

_MAX_TABLE_ROWS = 200


def _plain(df: pl.DataFrame) -> pl.DataFrame:
    """List columns become ';'-joined strings so the table fits CSV."""
    lists = [c for c, t in df.schema.items() if isinstance(t, pl.List)]
    return df.with_columns(
        pl.col(c).cast(pl.List(pl.String)).list.join(";").alias(c) for c in lists
    )


def csv_data_uri(df: pl.DataFrame) -> str:
    """The table as a base64 ``data:text/csv`` URI (opens offline, no server)."""
    text = _plain(df).write_csv()
    return "data:text/csv;base64," + base64.b64encode(text.encode("utf-8")).decode("ascii")


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return html.escape("" if v is None else str(v))


def table_html(df: pl.DataFrame) -> str:
    """A plain HTML table of the first rows (exact values; CSV has all of them)."""
    df = _plain(df)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
        for row in df.head(_MAX_TABLE_ROWS).iter_rows()
    )
    more = (
        f"<p>first {_MAX_TABLE_ROWS} of {df.height} rows; the CSV has all</p>"
        if df.height > _MAX_TABLE_ROWS
        else ""
    )
    return f'<table class="data"><tr>{head}</tr>{body}</table>{more}'


def _chart_html(chart: Chart) -> str:
    parts = [f'<div class="chart" id="{chart.key}">', f"<h3>{html.escape(chart.title)}</h3>"]
    parts.append(f'<p class="caption">{html.escape(chart.caption)}</p>')
    if chart.figure is not None:
        chart.figure.update_layout(title=None, height=460, margin={"t": 40})
        parts.append(
            pio.to_html(
                chart.figure,
                full_html=False,
                include_plotlyjs=False,
                div_id=f"fig-{chart.key}",
                config={"displaylogo": False, "responsive": True},
            )
        )
    parts.append(
        f'<a class="csv" download="{chart.key}.csv" href="{csv_data_uri(chart.data)}">'
        f"download the data (CSV, {chart.data.height} rows)</a>"
    )
    if chart.table and chart.figure is None:
        parts.append(table_html(chart.data))
    elif chart.table:
        parts.append(f"<details><summary>table</summary>{table_html(chart.data)}</details>")
    parts.append("</div>")
    return "\n".join(parts)


def render_page(title: str, sections: list[Section], sources: list[str]) -> str:
    """The whole report: head with inlined plotly.js, table of contents, sections, sources."""
    toc = []
    for s in sections:
        items = "".join(f'<li><a href="#{c.key}">{html.escape(c.title)}</a></li>' for c in s.charts)
        toc.append(f'<li><a href="#{s.key}">{html.escape(s.title)}</a><ul>{items}</ul></li>')
    body = []
    for s in sections:
        body.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>')
        if s.note:
            body.append(f'<p class="note">{html.escape(s.note)}</p>')
        body.extend(_chart_html(c) for c in s.charts)
        body.append("</section>")
    src = "".join(f"<li><code>{html.escape(p)}</code></li>" for p in sources)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<h1>{html.escape(title)}</h1>"
        f"<nav><strong>Contents</strong><ul>{''.join(toc)}</ul></nav>"
        + "\n".join(body)
        + f'<section id="sources"><h2>Input files</h2><ul>{src}</ul></section>'
        + "</body></html>\n"
    )
