"""Find and load every result file under the report's input folders, through the traces readers.

The report computes nothing of its own: this module only recognizes files by
their format tag (Parquet key-value ``deltasim.format``) or, for the two JSON
lines outputs of ``sched compare --json`` and ``sim check --json``, by their
keys, and hands each to its reader. Unknown files are skipped, a file that
claims a format but breaks it is a :class:`~traces.errors.FormatError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from traces.errors import DeltasimError, FormatError
from traces.memory_timeline import MEMORY_TIMELINE_FORMAT, read_memory_timeline
from traces.memstudy import read_memstudy
from traces.moe_load import read_load
from traces.moe_results import read_results
from traces.routing import read_routing
from traces.serving import read_summary
from traces.sidecar import meta_path
from traces.table_schema import FORMAT_KEY

__all__ = [
    "COMPARE_SCHEMA",
    "SIMCHECK_SCHEMA",
    "VERIFY_SCHEMA",
    "Inputs",
    "InputsError",
    "ServeRun",
    "load_inputs",
    "read_compare",
    "read_simcheck",
    "read_verify",
]


class InputsError(DeltasimError):
    """The input folders hold nothing a report can show, or a path is missing."""


COMPARE_SCHEMA: dict[str, pl.DataType] = {
    "graph": pl.String(),
    "method": pl.String(),
    "peak_bytes": pl.Int64(),
    "optimal": pl.Boolean(),
    "lower_bound_bytes": pl.Int64(),
    "best_lower_bound_bytes": pl.Int64(),
    "seconds": pl.Float64(),
}
"""``sched compare --json`` lines: one per (graph, method)."""

SIMCHECK_SCHEMA: dict[str, pl.DataType] = {
    "run": pl.String(),
    "B": pl.Int64(),
    "metric": pl.String(),
    "measured": pl.Float64(),
    "simulated": pl.Float64(),
    "error_pct": pl.Float64(),
    "tolerance_pct": pl.Float64(),
    "within": pl.Boolean(),
    "profile_variation": pl.Float64(),
    "speed_factor": pl.Float64(),
    "run_speed": pl.Float64(),
    "run_expert_factor": pl.Float64(),
    "run_combine_factor": pl.Float64(),
    "run_handoff_factor": pl.Float64(),
    "state_from_run": pl.Boolean(),
    "worker_join": pl.Boolean(),
    "stalls": pl.Boolean(),
    "run_stalls_hz": pl.Float64(),
    "profiles": pl.Int64(),
    "host_lock": pl.String(),
}
"""``sim check --json`` lines, one row per (B, metric); tolerance from ``<file>.meta.json``;
``profile_variation``: the profile's recorded run-to-run variation (null: unrecorded);
``speed_factor``: how much slower the host idled during the run than while profiled, as
the host model took it from the speed probes (null: not applied, or older outputs);
``run_speed``: the host's speed during the run over the profile's, as the host model took
it from the run's own alone gates (null: not applied, or older outputs);
``run_expert_factor``: the expert calls' time during the run over the profile's, read from
the run's expert calls with no gate running (null: not applied, or older outputs);
``run_combine_factor``: the worker's combine's time during the run over the profile's, read
from the run's combines with no gate running (null: not applied, or older outputs);
``run_handoff_factor``: the worker's wake (its hand-off and cold gather) during the run over
the profile's, read from the run's ways from a gate to the batch it formed with no other gate
running (null: not applied, or older outputs);
``worker_join``: whether the host model let a worker woken while the gate went on join the
next gate, as the profile measured (null: the ideal model, older outputs, or malformed);
``stalls``: whether the host model ran the machine's stalls (null: the ideal model, older
outputs, or malformed); ``run_stalls_hz``: where it replayed those the run's own gates
showed, how many per second (null: the profile's drawn ones, none, or older outputs);
``state_from_run``: whether the host model read how that speed moved within the run (the
machine's state) from the same gates (null: the ideal model, older outputs, or malformed);
``profiles``: how many profiles' predictions each prediction is the mean of (1: one, or
older outputs); ``host_lock``: how the host model split the host between two threads
(``even`` or ``whole``; null: the ideal model, older outputs, or a malformed value)."""


@dataclass(frozen=True)
class ServeRun:
    """One serve-summary/1 file: ``source`` is ``simulated`` (written by sim) or ``measured``."""

    name: str
    source: str
    rate_rps: float | None
    summary: pl.DataFrame


@dataclass(frozen=True)
class Inputs:
    """Everything found; empty frames / lists where an input kind is absent."""

    moe_results: pl.DataFrame | None = None
    moe_load: pl.DataFrame | None = None
    moe_summary: dict | None = None
    difficulty: pl.DataFrame | None = None  # gate, setting, seed, difficulty, k (routing traces)
    serve: list[ServeRun] = field(default_factory=list)
    simcheck: pl.DataFrame | None = None
    compare: pl.DataFrame | None = None
    memstudy: pl.DataFrame | None = None
    verify: pl.DataFrame | None = None
    timelines: pl.DataFrame | None = None  # memory-timeline/1 rows of every file found
    files: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not self.files


def _format_of(path: Path) -> str | None:
    try:
        return pl.read_parquet_metadata(path).get(FORMAT_KEY)
    except Exception:  # not a Parquet file: not ours
        return None


def _json_lines(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        docs = [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    return [d for d in docs if isinstance(d, dict)]


def read_compare(path: str | Path) -> pl.DataFrame:
    """Rows of a saved ``sched compare --json`` output (graph names shortened to file stems)."""
    docs = _json_lines(Path(path))
    rows = []
    for i, d in enumerate(docs):
        missing = [c for c in COMPARE_SCHEMA if c not in d]
        if missing:
            raise FormatError(str(path), f"line {i + 1}", f"missing key {missing[0]!r}")
        rows.append({c: d[c] for c in COMPARE_SCHEMA} | {"graph": _graph_name(d["graph"])})
    return pl.DataFrame(rows, schema=COMPARE_SCHEMA)


def _graph_name(path: str) -> str:
    p = Path(path)
    stem = p.name.removesuffix(".json")
    return f"{p.parent.name}/{stem}" if p.parent.name not in ("", "graphs") else stem


def read_simcheck(path: str | Path) -> pl.DataFrame:
    """Rows of a saved ``sim check --json`` output; tolerances from the ``.meta.json`` beside it."""
    path = Path(path)
    record = meta_path(path)
    tolerance: dict[str, float] = {}
    run = path.name.removesuffix(".jsonl")
    if record.is_file():
        try:
            meta = json.loads(record.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise FormatError(str(record), "(json)", exc.msg) from None
        tolerance = {str(k): float(v) for k, v in meta.get("tolerance_pct", {}).items()}
        run = str(meta.get("run", run))
    rows = []
    for i, d in enumerate(_json_lines(path)):
        for key in ("B", "measured", "simulated", "error_pct", "within"):
            if key not in d:
                raise FormatError(str(path), f"line {i + 1}", f"missing key {key!r}")
        for metric, err in d["error_pct"].items():
            rows.append(
                {
                    "run": run,
                    "B": d["B"],
                    "metric": metric,
                    "measured": d["measured"][metric],
                    "simulated": d["simulated"][metric],
                    "error_pct": err,
                    "tolerance_pct": tolerance.get(metric),
                    "within": bool(d["within"]),
                    "profile_variation": _float_or_none(d.get("profile_variation")),
                    "speed_factor": _float_or_none(d.get("speed_factor")),
                    "run_speed": _float_or_none(d.get("run_speed")),
                    "run_expert_factor": _float_or_none(d.get("run_expert_factor")),
                    "run_combine_factor": _float_or_none(d.get("run_combine_factor")),
                    "run_handoff_factor": _float_or_none(d.get("run_handoff_factor")),
                    "state_from_run": _bool_or_none(d.get("state_from_run")),
                    "worker_join": _bool_or_none(d.get("worker_join")),
                    "stalls": _bool_or_none(d.get("stalls")),
                    "run_stalls_hz": _float_or_none(d.get("run_stalls_hz")),
                    "profiles": _profiles(d.get("profiles", 1)),
                    "host_lock": _host_lock(d.get("host_lock")),
                }
            )
    return pl.DataFrame(rows, schema=SIMCHECK_SCHEMA)


def _host_lock(value: object) -> str | None:
    """The line's lock sharing; anything but the two known values is read as unknown (the
    field only words the writeup)."""
    return value if value in ("even", "whole") else None


def _profiles(value: object) -> int:
    """The line's profile count; a malformed one is read as one profile (the field only
    adds a sentence to the writeup)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _bool_or_none(value: object) -> bool | None:
    """A true/false of a JSON line, or None for null, absent or anything else."""
    return value if isinstance(value, bool) else None


def _float_or_none(value: object) -> float | None:
    """A number of a JSON line, or None for null, absent or not a number (older outputs)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


VERIFY_SCHEMA: dict[str, pl.DataType] = {
    "graph": pl.String(),
    "level": pl.String(),
    "kind": pl.String(),
    "method": pl.String(),
    "predicted_peak_bytes": pl.Int64(),
    "measured_peak_bytes": pl.Int64(),
    "default_measured_peak_bytes": pl.Int64(),
    "order_applied": pl.Boolean(),
}
"""``hw verify --json`` output: the chosen order run exactly, predicted vs measured peak."""


def read_verify(path: str | Path) -> pl.DataFrame:
    """Rows of a saved ``hw verify --json`` output (one object per verified order)."""
    rows = []
    for i, d in enumerate(_json_lines(Path(path))):
        for key in ("graph", "method", "predicted_peak_bytes", "measured_peak_bytes"):
            if key not in d:
                raise FormatError(str(path), f"line {i + 1}", f"missing key {key!r}")
        rows.append({c: d.get(c) for c in VERIFY_SCHEMA})
    return pl.DataFrame(rows, schema=VERIFY_SCHEMA)


def _is_verify(docs: list[dict]) -> bool:
    return bool(docs) and all("measured_peak_bytes" in d and "order_applied" in d for d in docs)


def _is_compare(docs: list[dict]) -> bool:
    return bool(docs) and all("method" in d and "lower_bound_bytes" in d for d in docs)


def _is_simcheck(docs: list[dict]) -> bool:
    return bool(docs) and all("error_pct" in d and "simulated" in d for d in docs)


def _difficulty_rows(folders: list[Path], results: pl.DataFrame | None) -> pl.DataFrame | None:
    """Per-sample (difficulty, k) of the routing traces of the ``difficulty`` experiment.

    A trace is looked up in ``routing/`` beside each results table found, first hit wins,
    so a trace kept both in a published folder and in a work folder counts once.
    """
    if results is None:
        return None
    rows = results.filter(
        (pl.col("experiment") == "difficulty") & pl.col("routing_trace").is_not_null()
    )
    frames = []
    for r in rows.iter_rows(named=True):
        hits = [f / "routing" / r["routing_trace"] for f in folders]
        trace_path = next((h for h in hits if h.is_file()), None)
        if trace_path is None:
            continue
        t = read_routing(trace_path).table.filter(pl.col("difficulty").is_not_null())
        setting = _setting(r)
        frames.append(
            t.select("difficulty", "k").with_columns(
                pl.lit(r["gate"]).alias("gate"),
                pl.lit(setting).alias("setting"),
                pl.lit(r["seed"]).alias("seed"),
            )
        )
    return pl.concat(frames) if frames else None


def _setting(r: dict) -> str:
    if r["gate"] == "topp":
        return f"topp p={r['train_p']:g}"
    if r["gate"] == "budget":
        return f"budget penalty={r['penalty']:g}"
    return f"{r['gate']} k={r['train_k']}"


def _concat(old: pl.DataFrame | None, new: pl.DataFrame) -> pl.DataFrame:
    """Stack tables, dropping exact duplicate rows: ``hw moe`` publishes the union of its
    per-run tables, and a run folder may hold both (the rows are identical)."""
    return new if old is None else pl.concat([old, new]).unique(maintain_order=True)


def load_inputs(dirs: list[Path]) -> Inputs:
    """Walk the folders (or single files) and load every recognized result file."""
    found: dict[str, object] = {"serve": [], "files": []}
    acc: dict[str, pl.DataFrame | None] = dict.fromkeys(
        ("moe_results", "moe_load", "simcheck", "compare", "memstudy", "verify", "timelines")
    )
    moe_summary = None
    results_dirs: list[Path] = []
    for d in dirs:
        if not d.exists():
            raise InputsError(f"{d}: no such file or folder")
        paths = [d] if d.is_file() else sorted(p for p in d.rglob("*") if p.is_file())
        for p in paths:
            if "routing" in p.parts[len(d.parts) :]:
                continue  # routing traces are read through their results table
            if _load_one(p, acc, found) == "moe-results/1":
                results_dirs.append(p.parent)
            if p.name == "summary.json" and (p.parent / "moe_results.parquet").is_file():
                try:
                    moe_summary = json.loads(p.read_text(encoding="utf-8"))
                    found["files"].append(str(p))  # type: ignore[union-attr]
                except json.JSONDecodeError as exc:
                    raise FormatError(str(p), "(json)", exc.msg) from None
    return Inputs(
        moe_results=acc["moe_results"],
        difficulty=_difficulty_rows(results_dirs, acc["moe_results"]),
        moe_load=acc["moe_load"],
        moe_summary=moe_summary,
        serve=found["serve"],  # type: ignore[arg-type]
        simcheck=acc["simcheck"],
        compare=acc["compare"],
        verify=acc["verify"],
        memstudy=acc["memstudy"],
        timelines=acc["timelines"],
        files=found["files"],  # type: ignore[arg-type]
    )


def _load_one(p: Path, acc: dict[str, pl.DataFrame | None], found: dict[str, object]) -> str | None:
    files: list[str] = found["files"]  # type: ignore[assignment]
    if p.suffix == ".parquet":
        fmt = _format_of(p)
        if fmt == "moe-results/1":
            acc["moe_results"] = _concat(acc["moe_results"], read_results(p))
        elif fmt == "moe-load/1":
            acc["moe_load"] = _concat(acc["moe_load"], read_load(p))
        elif fmt == "memstudy/1":
            acc["memstudy"] = _concat(acc["memstudy"], read_memstudy(p))
        elif fmt == MEMORY_TIMELINE_FORMAT:
            acc["timelines"] = _concat(acc["timelines"], read_memory_timeline(p))
        elif fmt == "serve-summary/1":
            df, config = read_summary(p)
            source = "simulated" if "sim" in config.extra else "measured"
            name = p.name.removesuffix(".summary.parquet")
            found["serve"].append(ServeRun(name, source, config.rate_rps, df))  # type: ignore[union-attr]
        else:
            return None
        files.append(str(p))
        return fmt
    if p.suffix in (".jsonl", ".json") and not p.name.endswith(".meta.json"):
        docs = _json_lines(p)
        if _is_compare(docs):
            acc["compare"] = _concat(acc["compare"], read_compare(p))
        elif _is_simcheck(docs):
            acc["simcheck"] = _concat(acc["simcheck"], read_simcheck(p))
        elif _is_verify(docs):
            acc["verify"] = _concat(acc["verify"], read_verify(p))
        else:
            return None
        files.append(str(p))
        return "jsonl"
    return None
