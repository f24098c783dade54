"""The latency profile table: what ``hw profile`` writes and ``sim`` reads.

One row per (expert, batch size); Parquet or CSV by the file's extension. See
``shared/contracts/profile-format.md``. :class:`LatencyProfile` turns the table
once into a dense lookup array so the simulator's hot loop does no model calls.

In memory, an optional ``component`` column (``expert``, the default, ``gate``
or ``combine``; gate and combine rows carry ``expert = -1``) holds the measured
cost of the gate and combine steps per batch size. On disk the profile file
keeps exactly the contract's columns and expert rows, and those step rows live
in a sibling steps file (:func:`steps_path`), so other tools that read the
contract never see them (:meth:`LatencyProfile.component_latency_s`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from traces.atomic import atomic_write_with
from traces.errors import FormatError
from traces.sidecar import meta_path  # where hw profile records how it measured a profile

__all__ = [
    "COMPANY_PENALTY_COMPONENTS",
    "COMPLETION_COMPONENTS",
    "COMPONENTS",
    "GATE_STAMPED_OVERHEAD",
    "HOST_COMPONENTS",
    "IDLE_COMPONENTS",
    "JOIN_COMPONENTS",
    "JOIN_EARLY_JOINED",
    "JOIN_EARLY_WAITED",
    "JOIN_LATE_JOINED",
    "JOIN_LATE_WAITED",
    "LOOP_COMPONENTS",
    "NOISY_PROFILE",
    "OPTIONAL_COLUMNS",
    "PREEMPT_BUSY",
    "PREEMPT_COMPONENTS",
    "PREEMPT_HANDOFF",
    "PREEMPT_HELD",
    "PREEMPT_SHARED",
    "PREEMPT_WALL",
    "PROFILE_SCHEMA",
    "REQUIRED_COLUMNS",
    "SCHED_TICK",
    "SPEED_PROBE",
    "STALL_COMPONENTS",
    "STALL_GATE",
    "STALL_SPAN",
    "STALL_WATCH",
    "STATE_BLOCK_S",
    "STATE_WINDOW",
    "Z90",
    "LatencyProfile",
    "PreemptPoint",
    "ProfileError",
    "ProfileExtrapolationWarning",
    "StallTerms",
    "busy_handoff_curve",
    "join_shares",
    "meta_path",
    "noisy_profile_note",
    "preempt_curve",
    "profile_from_frame",
    "profile_variation",
    "read_profile",
    "sched_tick_s",
    "stall_terms",
    "state_sigma",
    "steps_path",
    "write_profile",
]

REQUIRED_COLUMNS: dict[str, pl.DataType] = {
    "expert": pl.Int64(),
    "batch_size": pl.Int64(),
    "latency_s": pl.Float64(),
}
OPTIONAL_COLUMNS: dict[str, pl.DataType] = {
    "latency_p10_s": pl.Float64(),
    "latency_p90_s": pl.Float64(),
    "device": pl.Utf8(),
    "dtype": pl.Utf8(),
    "samples": pl.Int64(),
    "component": pl.Utf8(),
    "idle_s": pl.Float64(),  # steps file only: idle time before an IDLE_COMPONENTS row's call
}
# dispatch, collect, gate_/worker_ alone/contended: host-side costs of the CPU server
# (docs/system-model.md §8), measured by hw profile, used by sim's shared-host model.
HOST_COMPONENTS = (
    "dispatch",
    "collect",
    "gate_alone",
    "gate_contended",
    "worker_alone",
    "worker_contended",
)
# curves over an idle time ``idle_s``: the host's chain at a duty (mean idle gap between
# chains; ``duty_threads``: timed in the server's two threads, ``duty``: older profiles, in
# one), the hand-off to a gate / device worker thread that waited that long (optional:
# older profiles lack them), and, in profiles of 2026-11-24 ... 2026-12-02 only, to a worker
# whose waker goes straight on to run the gate (``handoff_worker_busy``, no longer read);
# ``wake``: older profiles' chain after one sleep, no longer read
IDLE_COMPONENTS = (
    "duty_threads",
    "duty",
    "handoff_gate",
    "handoff_worker",
    "handoff_worker_busy",
    # from the two-thread chain, at the worker's wait: its hand-off, and its first (cold)
    # and second (warm) worker step after the wake, and the gather of each
    "handoff_worker_chain",
    "chain_first_step",
    "chain_next_step",
    "chain_first_gather",
    "chain_next_gather",
    # at the level's mean gap: the chain's gate, woken on a host idle that long (its cold
    # start over the shortest gaps'; profiles from session 16)
    "chain_gate",
    # at the gate's wait: the arrival's put to the gate running, in the server's threads
    # (profiles from session 23)
    "handoff_gate_chain",
)
# the real server's own Python around the gate call (per request), a batch (per batch) and
# a completion (per request): hw.profiling.server_loops; optional, older profiles lack them
LOOP_COMPONENTS = (
    "gate_overhead",
    "batch_overhead",
    "completion_overhead",
    "arrival_penalty_gate",
    "arrival_penalty_worker",
)
# the same penalties with the gate and the worker at work together, in the server's own threads
# under its own load generator (hw.profiling.arrival_penalty.company_penalties; a loop that
# waited for the other has none; optional: profiles before 2026-12-06 lack them; not read yet)
COMPANY_PENALTY_COMPONENTS = ("arrival_penalty_gate_company", "arrival_penalty_worker_company")
# the part of ``gate_overhead`` that falls between the server's own gate_start and gate_done
# stamps (its stamps hold the gate call and this; the rest of the loop lies outside them):
# the model stamps its gate where the server does (optional: profiles before 2026-12-04)
GATE_STAMPED_OVERHEAD = "gate_stamped_overhead"
# a request's completion work (collect, then combine) alone and while a second thread loops
# the gate: the combine job's own contention (optional: older profiles lack it)
COMPLETION_COMPONENTS = ("completion_alone", "completion_contended")
# the host's speed while profiled: the gate on one request after exponential gaps of mean
# ``idle_s``, sampled in phases among the duty curve's (hw.profiling.speed_probe); hw serve
# records the same probe around each B, and sim check slows the host model's idle speed by
# the ratio (sim.host_speed; optional: older profiles lack it)
SPEED_PROBE = "speed_probe"
# the machine's state over windows of ``idle_s`` seconds: the median gate of the two-thread
# chain after 2 ms gaps per window, and the state's p10 / p90 over the windows of each
# STATE_BLOCK_S block around the block's own level, sampling noise removed
# (hw.profiling.host_state; sim's state process fits sigma and rho to them; optional:
# older profiles lack it)
STATE_WINDOW = "state_window"
Z90 = 1.2815515655446004  # the standard normal's p90: a state row's p90 / p10 = exp(2·Z90·σ)
# the state rows' block: what moves slower than this, the per-B speed probe of hw serve
# already gives sim check (a B's run lasts 2-8 s at 250-1000 req/s)
STATE_BLOCK_S = 5.0
# a woken gate taking the host whole from a worker at work: per level of load (``idle_s`` the
# level's mean idle gap, naming it), the gate's wall time when it held the host (the worker
# step it started in ended after it) and when it shared it, ``samples`` how many of each; the
# time some thread was at work and the level's wall time, per request (their ratio is the
# level's duty); the hand-off to a gate woken while a worker was at work (hw.profiling.
# preemption; optional: older profiles lack them, profiles before 2026-12-05 the hand-off)
PREEMPT_HELD = "preempt_held"
PREEMPT_SHARED = "preempt_shared"
PREEMPT_BUSY = "preempt_busy"
PREEMPT_WALL = "preempt_wall"
PREEMPT_HANDOFF = "preempt_handoff"
PREEMPT_COMPONENTS = (PREEMPT_HELD, PREEMPT_SHARED, PREEMPT_BUSY, PREEMPT_WALL, PREEMPT_HANDOFF)
# a device worker woken while the gate goes straight on to its next request: per case (the
# next request arrived before the gate started, early, or while it ran, late) the pairs in
# which the worker ran during that next gate (joined) or waited for its end, ``samples``
# how many, ``latency_s`` the next gate's median wall time (hw.profiling.worker_join;
# optional: profiles before 2026-12-05 lack them)
JOIN_EARLY_JOINED = "join_early_joined"
JOIN_EARLY_WAITED = "join_early_waited"
JOIN_LATE_JOINED = "join_late_joined"
JOIN_LATE_WAITED = "join_late_waited"
JOIN_COMPONENTS = (JOIN_EARLY_JOINED, JOIN_EARLY_WAITED, JOIN_LATE_JOINED, JOIN_LATE_WAITED)
# the machine's stalls, found in the state's chains (traces.stalls): ``stall_watch`` the
# chains watched (``latency_s`` their median gate, p10 / p90, ``samples`` how many,
# ``idle_s`` the seconds watched); ``stall_span`` the episodes' spans and ``stall_gate``
# the watched median times their factors (median, p10, p90; ``samples`` the episodes; both
# absent where none was found) (optional: profiles before 2026-12-05 lack them)
STALL_WATCH = "stall_watch"
STALL_SPAN = "stall_span"
STALL_GATE = "stall_gate"
STALL_COMPONENTS = (STALL_WATCH, STALL_SPAN, STALL_GATE)
# the kernel scheduler's tick on the profiled machine, ``latency_s`` its period (1 / CONFIG_HZ,
# read from the kernel's build configuration by hw.profiling.sched_tick): a thread that took
# a core from another holds it until the other is moved to the idle core, at a tick
# (optional: profiles before 2026-12-06 lack it, and machines whose configuration is unreadable)
SCHED_TICK = "sched_tick"
COMPONENTS = (
    "expert", "gate", "combine", *HOST_COMPONENTS, *IDLE_COMPONENTS, *LOOP_COMPONENTS,
    *COMPANY_PENALTY_COMPONENTS, GATE_STAMPED_OVERHEAD, *COMPLETION_COMPONENTS, "wake",
    SPEED_PROBE, STATE_WINDOW, *PREEMPT_COMPONENTS, *JOIN_COMPONENTS, *STALL_COMPONENTS, SCHED_TICK,
)  # fmt: skip
STEP_ONLY_COLUMNS = ("component", "idle_s")
PROFILE_SCHEMA = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}


def state_sigma(p10_s: np.ndarray, p90_s: np.ndarray) -> np.ndarray:
    """The state's spread σ (log) that ``state_window`` rows with these p10 / p90 record."""
    return np.log(np.asarray(p90_s) / np.asarray(p10_s)) / (2 * Z90)


class PreemptPoint(NamedTuple):
    """One level of the gate's preemption: its duty and the share of the counted gates that
    held the host. (The held gates' wall time, the ``preempt_held`` row's latency, is
    measured but not read: ``sim.host_terms.HostTerms.from_profile``.)"""

    duty: float
    p: float


def preempt_curve(steps: pl.DataFrame, source: str = "steps file") -> list[PreemptPoint]:
    """The gate's preemption per level of load from a steps frame's ``preempt_*`` rows, by
    increasing duty (empty without them): per level (``idle_s``), the held gates' share of
    those counted (``samples``), at the duty busy ÷ wall of its ``preempt_busy`` and
    ``preempt_wall`` rows. A level where no gate was counted has no point."""
    levels = []
    for duty, level in _preempt_levels(steps, source):
        count = dict(zip(level["component"], level["samples"], strict=True))
        held = count.get(PREEMPT_HELD, 0)
        seen = held + count.get(PREEMPT_SHARED, 0)
        if seen > 0:
            levels.append(PreemptPoint(duty, held / seen))
    return sorted(levels, key=lambda pt: pt.duty)


def busy_handoff_curve(
    steps: pl.DataFrame, source: str = "steps file"
) -> list[tuple[float, tuple[float, float, float]]]:
    """The hand-off to a gate woken while a worker was at work, per level of load, by
    increasing duty: (duty, (p10, median, p90)) of each level's ``preempt_handoff`` row
    (empty without them). Every level with the row has a point, also one where no woken gate
    was counted for :func:`preempt_curve`: the hand-off counts the arrivals put while a
    worker step ran, and their gates may all have started after it ended."""
    points = []
    for duty, level in _preempt_levels(steps, source):
        spread = _spread_of(level.filter(pl.col("component") == PREEMPT_HANDOFF), source)
        if spread is not None:
            points.append((duty, spread))
    return sorted(points, key=lambda pt: pt[0])


def _preempt_levels(steps: pl.DataFrame, source: str) -> list[tuple[float, pl.DataFrame]]:
    """Per level (``idle_s``) of a steps frame's ``preempt_*`` rows, its duty (busy ÷ wall
    of its ``preempt_busy`` and ``preempt_wall`` rows) and its rows; the rows checked once
    for both curves."""
    if "component" not in steps.columns:
        return []
    rows = steps.filter(pl.col("component").is_in(PREEMPT_COMPONENTS))
    if rows.height == 0:
        return []
    if {"samples", "idle_s"} - set(rows.columns) or any(
        rows[c].null_count() for c in ("samples", "idle_s")
    ):
        raise ProfileError(source, "preempt_*", "rows need idle_s and samples")
    levels = []
    for (idle,), level in rows.group_by("idle_s", maintain_order=True):
        busy, wall = (
            level.filter(pl.col("component") == c)["latency_s"]
            for c in (PREEMPT_BUSY, PREEMPT_WALL)
        )
        if busy.len() != 1 or wall.len() != 1 or not 0 < busy[0] <= wall[0]:
            raise ProfileError(
                source,
                f"preempt level {idle}",
                "needs one preempt_busy and one preempt_wall row, 0 < busy <= wall",
            )
        levels.append((float(busy[0]) / float(wall[0]), level))
    return levels


def join_shares(steps: pl.DataFrame, source: str = "steps file") -> tuple[float, float] | None:
    """(early, late): the share of the pairs of each case in which a worker woken while the
    gate went on ran during the next gate, from a steps frame's ``join_*`` rows (None without
    them; a case with no pair reads 0, the worker waiting as in older profiles)."""
    if "component" not in steps.columns:
        return None
    rows = steps.filter(pl.col("component").is_in(JOIN_COMPONENTS))
    if rows.height == 0:
        return None
    if "samples" not in rows.columns or rows["samples"].null_count() or rows["samples"].min() < 1:
        raise ProfileError(source, "join_*", "rows need samples >= 1")
    if rows["component"].n_unique() != rows.height:
        raise ProfileError(source, "join_*", "one row per component")
    count = dict(zip(rows["component"], rows["samples"], strict=True))
    shares = []
    for joined, waited in (
        (JOIN_EARLY_JOINED, JOIN_EARLY_WAITED),
        (JOIN_LATE_JOINED, JOIN_LATE_WAITED),
    ):
        n = count.get(joined, 0) + count.get(waited, 0)
        shares.append(count.get(joined, 0) / n if n else 0.0)
    return shares[0], shares[1]


class StallTerms(NamedTuple):
    """The machine's stalls as ``hw profile`` found them: episodes per second, and the
    (p10, median, p90) of their spans (seconds) and of their factors on every wall time."""

    rate_hz: float
    span_s: tuple[float, float, float]
    factor: tuple[float, float, float]


def stall_terms(steps: pl.DataFrame, source: str = "steps file") -> StallTerms | None:
    """The stalls from a steps frame's ``stall_*`` rows (None without them; a rate of 0
    where the watch found no episode)."""
    if "component" not in steps.columns:
        return None
    watch = steps.filter(pl.col("component") == STALL_WATCH)
    if watch.height == 0:
        return None
    spread = _spread_of(watch, source)
    seconds = watch["idle_s"][0] if "idle_s" in watch.columns else None
    if spread is None or seconds is None or not seconds > 0:
        raise ProfileError(source, STALL_WATCH, "needs one row with idle_s > 0 (seconds watched)")
    span_rows = steps.filter(pl.col("component") == STALL_SPAN)
    span = _spread_of(span_rows, source)
    gate = _spread_of(steps.filter(pl.col("component") == STALL_GATE), source)
    if span is None and gate is None:
        return StallTerms(0.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    if span is None or gate is None:
        raise ProfileError(source, "stall_*", "stall_span and stall_gate rows come together")
    count = span_rows["samples"][0]
    if count is None or count < 1:
        raise ProfileError(source, STALL_SPAN, "needs samples >= 1 (the episodes)")
    factor = tuple(g / spread[1] for g in gate)
    if factor[0] < 1:
        raise ProfileError(source, STALL_GATE, "a stall's gate must be slower than the watched")
    return StallTerms(float(count) / float(seconds), span, factor)  # type: ignore[arg-type]


def sched_tick_s(steps: pl.DataFrame, source: str = "steps file") -> float | None:
    """The scheduler tick from a steps frame's ``sched_tick`` row (None without one)."""
    if "component" not in steps.columns:
        return None
    row = steps.filter(pl.col("component") == SCHED_TICK)
    if row.height == 0:
        return None
    tick = row["latency_s"][0]
    if row.height != 1 or tick is None or not 0 < tick < 1:
        raise ProfileError(source, SCHED_TICK, "needs one row with 0 < latency_s < 1 s")
    return float(tick)


def _spread_of(row: pl.DataFrame, source: str) -> tuple[float, float, float] | None:
    """(p10, median, p90) of a one-row frame (None: no row); the row needs all three, in
    order, above 0."""
    if row.height == 0:
        return None
    got = tuple(
        float(row[c][0]) if c in row.columns and row[c][0] is not None else float("nan")
        for c in ("latency_p10_s", "latency_s", "latency_p90_s")
    )
    if row.height != 1 or not 0 < got[0] <= got[1] <= got[2]:
        raise ProfileError(
            source, str(row["component"][0]), "needs one row per level, 0 < p10 <= median <= p90"
        )
    return got


class ProfileError(FormatError):
    """A latency profile breaks its contract (missing column, bad value, unknown expert)."""


class ProfileExtrapolationWarning(UserWarning):
    """A batch size beyond the largest measured one was extrapolated linearly."""


def _check_frame(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    for col in REQUIRED_COLUMNS:
        if col not in frame.columns:
            raise ProfileError(source, col, "required column is missing")
    casts = []
    for col, dtype in PROFILE_SCHEMA.items():
        if col in frame.columns:
            casts.append(pl.col(col).cast(dtype, strict=True))
    try:
        frame = frame.with_columns(casts)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        raise ProfileError(source, "(columns)", f"wrong column type: {exc}") from None
    if frame.height == 0:
        raise ProfileError(source, "(rows)", "the profile has no rows")
    for col in REQUIRED_COLUMNS:
        if frame[col].null_count():
            raise ProfileError(source, col, "has missing values")
    if "component" in frame.columns:
        frame = frame.with_columns(pl.col("component").fill_null("expert"))
        unknown = set(frame["component"].unique().to_list()) - set(COMPONENTS)
        if unknown:
            raise ProfileError(
                source,
                "component",
                f"must be one of {', '.join(COMPONENTS)}, got {sorted(unknown)}",
            )
        is_expert = pl.col("component") == "expert"
    else:
        is_expert = pl.lit(True)
    if frame.filter(is_expert & (pl.col("expert") < 0)).height:
        raise ProfileError(source, "expert", "must be >= 0")
    if frame.filter(~is_expert & (pl.col("expert") != -1)).height:
        raise ProfileError(source, "expert", "must be -1 on gate and combine rows")
    if (frame["batch_size"] < 1).any():
        raise ProfileError(source, "batch_size", "must be >= 1")
    bad = frame.filter(~(pl.col("latency_s") > 0) | pl.col("latency_s").is_infinite())
    if bad.height:
        row = bad.row(0, named=True)
        raise ProfileError(
            source,
            "latency_s",
            f"must be positive and finite, got {row['latency_s']} for expert {row['expert']} "
            f"batch_size {row['batch_size']}",
        )
    keys = ["expert", "batch_size"] + [c for c in STEP_ONLY_COLUMNS if c in frame.columns]
    dup = frame.group_by(keys).len().filter(pl.col("len") > 1)
    if dup.height:
        row = dup.row(0, named=True)
        raise ProfileError(
            source,
            "(expert, batch_size)",
            f"duplicate rows for expert {row['expert']} batch_size {row['batch_size']}",
        )
    return frame.sort(keys)


def steps_path(path: str | Path) -> Path:
    """Where the gate and combine rows of the profile at ``path`` live on disk.

    The profile file itself holds exactly the contract's expert rows (other
    tools read it); ``hw profile``'s measured gate and combine costs go to this
    sibling file (``NAME.steps.parquet`` beside ``NAME.parquet``), with the same
    columns plus ``component`` and ``expert = -1``.
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.steps{path.suffix}")


# A profile whose medians moved more than this between hw profile's passes was measured
# while the machine changed speed by as much, an error every prediction from it inherits
# (one at 86 % predicted a p50 of 54 ms where six runs gave 0.9-17 ms: benchmarks/README.md,
# "Fidelity, session 9"); the bundled profiles lie at 0.6-25 %.
NOISY_PROFILE = 0.25


def profile_variation(path: str | Path) -> float | None:
    """The median run-to-run variation of the profile's medians ((max - min) / min over passes)
    that ``hw profile`` recorded beside it; None where it recorded none (a profile from
    another tool, one pass, or an unreadable record: the record is not part of the
    profile contract, so its absence is never an error)."""
    try:
        meta = json.loads(meta_path(path).read_text())
        value = float(meta["variation"]["median_rel"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if np.isfinite(value) and value >= 0 else None


def noisy_profile_note(variation: float | None) -> str | None:
    """The sentence every tool prints when a profile's recorded variation is over
    :data:`NOISY_PROFILE` (None when it is not, or unrecorded)."""
    if variation is None or variation <= NOISY_PROFILE:
        return None
    return (
        f"hw profile's passes differ by {variation:.0%} (median over its rows): the machine "
        "changed speed while it was measured, and predictions from it carry that error; "
        "profile again on a quiet machine"
    )


def _read_table(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix == ".csv":
            return pl.read_csv(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ProfileError(str(path), "(file)", f"cannot be read: {exc}") from None
    raise ProfileError(str(path), "(file)", "extension must be .parquet or .csv")


def read_profile(path: str | Path) -> LatencyProfile:
    """Read and validate a profile (``.parquet`` or ``.csv``) and its steps file if present."""
    path = Path(path)
    if not path.exists():
        raise ProfileError(str(path), "(file)", "no such file")
    frame = _read_table(path)
    for col in STEP_ONLY_COLUMNS:
        if col in frame.columns:
            raise ProfileError(
                str(path), col, "belongs in the steps file, not in the contract's profile"
            )
    steps = steps_path(path)
    if steps.exists():
        extra = _read_table(steps)
        if "component" not in extra.columns:
            raise ProfileError(str(steps), "component", "required column is missing")
        frame = pl.concat(
            [frame.with_columns(pl.lit("expert").alias("component")), extra], how="diagonal_relaxed"
        )
    return profile_from_frame(frame, source=str(path))


def profile_from_frame(frame: pl.DataFrame, source: str = "profile") -> LatencyProfile:
    """Validate a profile table held in memory; gate and combine rows are kept apart."""
    checked = _check_frame(frame, source)
    if "component" not in checked.columns:
        return LatencyProfile(checked, source)
    experts = checked.filter(pl.col("component") == "expert").drop(
        [c for c in STEP_ONLY_COLUMNS if c in checked.columns]
    )
    if experts.height == 0:
        raise ProfileError(source, "(rows)", "the profile has no expert rows")
    return LatencyProfile(experts, source, checked.filter(pl.col("component") != "expert"))


def write_profile(frame: pl.DataFrame, path: str | Path) -> None:
    """Validate and write a profile atomically; the format follows the extension.

    Expert rows go to ``path`` with exactly the contract's columns; gate and
    combine rows (``component`` column), if any, go to :func:`steps_path`.
    """
    path = Path(path)
    if path.suffix.lower() not in (".parquet", ".csv"):
        raise ProfileError(str(path), "(file)", "extension must be .parquet or .csv")
    checked = _check_frame(frame, str(path))
    cols = [c for c in PROFILE_SCHEMA if c in checked.columns and c not in STEP_ONLY_COLUMNS]
    if "component" in checked.columns:
        experts = checked.filter(pl.col("component") == "expert").select(cols)
        extra = [c for c in STEP_ONLY_COLUMNS if c in checked.columns]
        steps = checked.filter(pl.col("component") != "expert").select([*cols, *extra])
    else:
        experts, steps = checked.select(cols), None
    if experts.height == 0:
        raise ProfileError(str(path), "(rows)", "the profile has no expert rows")
    _write_table(experts, path)
    if steps is not None and steps.height:
        _write_table(steps, steps_path(path))


def _write_table(frame: pl.DataFrame, path: Path) -> None:
    if path.suffix.lower() == ".parquet":
        atomic_write_with(path, lambda tmp: frame.write_parquet(tmp))
    else:
        atomic_write_with(path, lambda tmp: frame.write_csv(tmp))


@dataclass(frozen=True, eq=False)
class LatencyProfile:
    """A validated profile with interpolation between measured batch sizes."""

    frame: pl.DataFrame
    source: str = "profile"
    components: pl.DataFrame | None = None  # gate and combine rows (expert -1), if measured

    def component_latency_s(self, component: str, batch_size: int = 1) -> float | None:
        """Median cost of the ``gate`` or ``combine`` step for ``batch_size`` samples, if measured.

        Interpolated like an expert; clamped to the nearest measured size outside them.
        """
        if self.components is None:
            return None
        rows = self.components.filter(pl.col("component") == component)
        if rows.height == 0:
            return None
        xs, ys = rows["batch_size"].to_numpy(), rows["latency_s"].to_numpy()
        return float(np.interp(batch_size, xs, ys))

    @property
    def experts(self) -> list[int]:
        return sorted(self.frame["expert"].unique().to_list())

    def points(self, expert: int) -> tuple[np.ndarray, np.ndarray]:
        """Measured (batch sizes, median latencies) of one expert."""
        rows = self.frame.filter(pl.col("expert") == expert)
        if rows.height == 0:
            raise ProfileError(self.source, "expert", f"expert {expert} is not in the profile")
        return rows["batch_size"].to_numpy(), rows["latency_s"].to_numpy()

    def spread(self, expert: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(batch sizes, p10, p90) when the profile has them, else None."""
        if "latency_p10_s" not in self.frame.columns or "latency_p90_s" not in self.frame.columns:
            return None
        rows = self.frame.filter(pl.col("expert") == expert)
        return (
            rows["batch_size"].to_numpy(),
            rows["latency_p10_s"].to_numpy(),
            rows["latency_p90_s"].to_numpy(),
        )

    def latency_s(self, expert: int, batch_size: int) -> float:
        """Latency of one call with ``batch_size`` samples (see :meth:`table`)."""
        return float(self.table([expert], batch_size)[0, batch_size])

    def table(self, experts: Iterable[int], max_batch: int) -> np.ndarray:
        """Dense lookup ``T[i, b]`` = latency of ``experts[i]`` at batch size ``b`` (b >= 1).

        Linear interpolation between measured sizes; past the largest measured
        size, linear extrapolation from the last two points (never below the
        last measured latency) with a :class:`ProfileExtrapolationWarning`;
        below the smallest measured size, the smallest size's latency.
        Column 0 is unused (NaN).
        """
        experts = list(experts)
        out = np.full((len(experts), max_batch + 1), np.nan)
        b = np.arange(1, max_batch + 1, dtype=float)
        for i, e in enumerate(experts):
            xs, ys = self.points(e)
            vals = np.interp(b, xs, ys)
            beyond = b > xs[-1]
            if beyond.any():
                warnings.warn(
                    f"{self.source}: expert {e} measured up to batch {xs[-1]}; "
                    f"extrapolating linearly to {max_batch}",
                    ProfileExtrapolationWarning,
                    stacklevel=2,
                )
                slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) if len(xs) > 1 else 0.0
                vals[beyond] = ys[-1] + max(slope, 0.0) * (b[beyond] - xs[-1])
            out[i, 1:] = vals
        return out
