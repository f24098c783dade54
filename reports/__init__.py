"""Self-contained Plotly HTML reports built only from files in traces formats."""
