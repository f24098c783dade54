"""``sim sweep``: a grid of simulation points from a TOML spec, run on Dask, resumable.

Spec (every key optional except a grid axis; a list makes an axis of the grid,
a scalar is fixed; ``B`` also takes the ``1..64`` range syntax)::

    profile = "profile.parquet"   # relative to the spec; default: the bundled CPU profile
    [grid]
    B = "1..64"
    rate = [500.0, 1000.0]        # requests/s
    gate = ["topk:2", "topp:0.6"] # or routing traces as "trace:PATH"
    experts = 8                   # default: a routing trace's, else the profile's, as in sim run
    devices = [1, 2]
    seed = [0, 1]
    requests = 20000
    skew = 0.0
    max_wait_ms = 5.0
    gate_latency_s = 0.0          # default: the profile's gate, as in sim run
    combine_latency_s = 0.0       # default: the profile's combine, as in sim run
    service = "median"
    host = true                   # the shared-host model (default: as in sim run, on for a
                                  # CPU profile with the host terms)
    host_lock = ["even", "whole"] # how it shares the interpreter lock (docs/system-model.md §8)
    state_sigma = [0.0, 0.19]     # the machine's state (sim run --host-state): sigma in log,
    state_rho = 0.7               # lag-one correlation and window of its AR(1) (default: the
                                  # profile's measured process; 0 = none)
    state_window_s = 0.1
    gate_preempt = [true, false]  # a woken gate taking the host whole (sim run
                                  # --host-preempt; default: as the profile measured)
    host_stalls = [true, false]   # the machine's stalls (sim run --host-stalls; default:
                                  # as the profile measured)
    [slurm]                       # only read with --slurm (dask-jobqueue SLURMCluster)
    jobs = 4
    queue = "shared"
    cores = 1
    memory = "4GB"
    walltime = "01:00:00"

Every point is one :class:`~sim.config.SimConfig`, identified by a hash of its
JSON. A finished point is written at once, atomically, as its own file in
``OUT.parts/``; the table ``OUT`` is assembled from the parts at the end. A
killed sweep, run again with the same spec and ``OUT``, skips every point whose
part exists and so loses none.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from sim.config import SimConfig, parse_gate
from sim.errors import SimError, SweepSpecError
from sim.runner import (
    default_profile_path,
    parse_b_values,
    profile_defaults,
    simulate_summary,
)
from traces.atomic import atomic_path
from traces.errors import DeltasimError
from traces.profile import read_profile
from traces.routing import read_routing
from traces.serving import SUMMARY

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "SWEEP_FORMAT",
    "SweepPoint",
    "SweepSpec",
    "load_spec",
    "parts_dir",
    "run_sweep",
    "slurm_cluster",
]

SWEEP_FORMAT = "sim-sweep/1"
POINT_COLUMNS: dict[str, pl.DataType] = {
    "point": pl.Utf8(),
    "gate": pl.Utf8(),
    "n_experts": pl.Int64(),
    "n_devices": pl.Int64(),
    "seed": pl.Int64(),
    "config": pl.Utf8(),
}
SWEEP_COLUMNS = {**POINT_COLUMNS, **{k: v for k, v in SUMMARY.columns.items()}}


def _boolean(value: Any) -> bool:
    """A TOML boolean; a string such as "false" would read as true, so it is refused."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


# spec key -> (SimConfig field, converter)
_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "B": ("batch_size", int),
    "rate": ("rate_rps", float),
    "gate": ("gate", lambda v: parse_gate(str(v))),
    "experts": ("n_experts", int),
    "devices": ("n_devices", int),
    "seed": ("seed", int),
    "requests": ("n_requests", int),
    "skew": ("skew", float),
    "max_wait_ms": ("max_wait_s", lambda v: float(v) / 1e3),
    "max_backlog": ("max_backlog", int),
    "gate_latency_s": ("gate_latency_s", float),
    "combine_latency_s": ("combine_latency_s", float),
    "batch_overhead_s": ("batch_overhead_s", float),
    "service": ("service", str),
    "warmup": ("warmup", int),
    "host": ("host", _boolean),
    "host_lock": ("host_lock", str),
    "state_sigma": ("state_sigma", float),
    "state_rho": ("state_rho", float),
    "state_window_s": ("state_window_s", float),
    "gate_preempt": ("gate_preempt", _boolean),
    "host_stalls": ("host_stalls", _boolean),
}


@dataclass(frozen=True)
class SweepPoint:
    """One point of the grid: its config and stable id."""

    config: SimConfig

    @property
    def id(self) -> str:
        return hashlib.sha256(self.config.to_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SweepSpec:
    """A parsed spec: the points in grid order, the profile, the SLURM options."""

    points: tuple[SweepPoint, ...]
    profile: str
    slurm: dict[str, Any]


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a TOML spec; every point's config is built (and checked) here."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SweepSpecError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepSpecError(f"{path}: not valid TOML: {exc}") from None
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise SweepSpecError(f"{path}: needs a [grid] table with at least one key")
    unknown = set(grid) - set(_KEYS)
    if unknown:
        raise SweepSpecError(f"{path}: unknown grid keys {sorted(unknown)}; known {list(_KEYS)}")
    axes: dict[str, list[Any]] = {}
    for key, value in grid.items():
        if key == "B" and isinstance(value, str):
            value = parse_b_values(value)
        values = value if isinstance(value, list) else [value]
        if not values:
            raise SweepSpecError(f"{path}: grid key {key!r} has no values")
        field, conv = _KEYS[key]
        try:
            axes[field] = [conv(v) for v in values]
        except (TypeError, ValueError) as exc:
            raise SweepSpecError(f"{path}: grid key {key!r}: {exc}") from None
    names = list(axes)
    profile = raw.get("profile")
    profile_path = str(path.parent / profile) if profile else str(default_profile_path())
    from_profile = profile_defaults(read_profile(profile_path))  # as sim run takes them
    defaults = {k: v for k, v in from_profile.items() if k not in axes}
    trace_experts: dict[str, int] = {}
    points = []
    for combo in itertools.product(*(axes[n] for n in names)):
        kw = {**defaults, **dict(zip(names, combo, strict=True))}
        if kw.get("gate") is not None and kw["gate"].trace:
            trace = Path(kw["gate"].trace)
            if not trace.is_absolute():
                kw["gate"] = parse_gate(f"trace:{path.parent / trace}")
            if "n_experts" not in axes:  # as sim run: the trace's M before the profile's
                kw["n_experts"] = _trace_experts(path, kw["gate"].trace, trace_experts)
        try:
            points.append(SweepPoint(SimConfig.from_dict(kw)))
        except SimError as exc:
            raise SweepSpecError(f"{path}: point {kw}: {exc}") from None
    ids = [p.id for p in points]
    if len(set(ids)) != len(ids):
        raise SweepSpecError(f"{path}: the grid repeats a point")
    slurm = raw.get("slurm", {})
    if not isinstance(slurm, dict):
        raise SweepSpecError(f"{path}: [slurm] must be a table")
    return SweepSpec(tuple(points), profile_path, dict(slurm))


def _trace_experts(spec: Path, trace: str, seen: dict[str, int]) -> int:
    """The routing trace's number of experts, each trace read once; an unreadable trace is
    a spec error before any point runs."""
    if trace not in seen:
        try:
            seen[trace] = read_routing(trace).n_experts
        except DeltasimError as exc:  # names the trace and what is wrong with it
            raise SweepSpecError(f"{spec}: {exc}") from None
    return seen[trace]


def parts_dir(out: str | Path) -> Path:
    """Where finished points live: ``OUT.parts/`` beside the final table."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _row(point: SweepPoint, summary: dict[str, Any]) -> pl.DataFrame:
    c = point.config
    row = {
        "point": point.id,
        "gate": c.gate.label(),
        "n_experts": c.n_experts,
        "n_devices": c.n_devices,
        "seed": c.seed,
        "config": c.to_json(),
        **summary,
    }
    return pl.DataFrame([row], schema=SWEEP_COLUMNS)


def _write_part(parts: Path, point: SweepPoint, frame: pl.DataFrame) -> None:
    with atomic_path(parts / f"{point.id}.parquet") as tmp:
        frame.write_parquet(tmp)


def _finished(parts: Path) -> dict[str, pl.DataFrame]:
    """Parts already written (temporary files of a killed write are ignored)."""
    if not parts.is_dir():
        return {}
    return {p.stem: pl.read_parquet(p) for p in sorted(parts.glob("*.parquet"))}


def slurm_cluster(options: dict[str, Any]) -> Any:
    """A dask-jobqueue SLURMCluster from the spec's [slurm] table (``jobs`` = workers to start)."""
    from dask_jobqueue import SLURMCluster

    kw = {k: v for k, v in options.items() if k != "jobs"}
    kw.setdefault("cores", 1)
    kw.setdefault("memory", "4GB")
    kw.setdefault("processes", 1)
    return SLURMCluster(**kw)


@contextmanager
def _client(
    scheduler: str | None, slurm: dict[str, Any] | None, workers: int | None, processes: bool
) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    if slurm is not None:
        cluster = slurm_cluster(slurm)
        cluster.scale(jobs=int(slurm.get("jobs", 1)))
    else:
        cluster = LocalCluster(
            n_workers=workers or (1 if not processes else None),
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
        )
    with cluster, Client(cluster) as client:
        yield client


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    scheduler: str | None = None,
    slurm: bool = False,
    workers: int | None = None,
    processes: bool = True,
    on_point: Callable[[SweepPoint, bool], None] | None = None,
) -> tuple[pl.DataFrame, int]:
    """Run the points not finished yet; return the full table and how many ran now.

    ``on_point(point, computed_now)`` is called once per point (for progress).
    """
    out = Path(out)
    parts = parts_dir(out)
    parts.mkdir(parents=True, exist_ok=True)
    done = _finished(parts)
    todo = [p for p in spec.points if p.id not in done]
    for p in spec.points:
        if p.id in done and on_point is not None:
            on_point(p, False)
    if todo:
        from distributed import as_completed

        with _client(scheduler, spec.slurm if slurm else None, workers, processes) as client:
            futures = {
                client.submit(
                    simulate_summary, p.config, spec.profile, key=f"sim-point-{p.id}", pure=False
                ): p
                for p in todo
            }
            for fut in as_completed(futures):
                point = futures[fut]
                frame = _row(point, fut.result())
                _write_part(parts, point, frame)  # appended the moment it finishes
                done[point.id] = frame
                if on_point is not None:
                    on_point(point, True)
    table = pl.concat([done[p.id] for p in spec.points])
    with atomic_path(out) as tmp:
        table.write_parquet(tmp, metadata={"deltasim.format": SWEEP_FORMAT})
    return table, len(todo)
