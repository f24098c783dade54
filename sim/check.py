"""``sim check``: replay a measured ``hw serve`` run in the model and compare, per B.

The replay uses exactly what the measured run stored (``traces.serving``): its
config (experts, devices, placement, max_wait, warm-up, the measured gate and
combine costs) and, from the records, each request's arrival time and experts.
Only the expert service times come from the latency profile. Both sides are
summarized by the same :func:`traces.serving.summarize`, so a difference is a
difference of the system, not of the metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sim.config import GateSpec, HostLock, ServiceModel, SimConfig
from sim.engine import simulate
from sim.errors import CheckError
from sim.host_speed import at_host_speed, speed_factor
from sim.machine_state import MachineState
from sim.output import records_of
from sim.parts import mean_parts, request_parts
from sim.run_absences import run_absences, with_absences
from sim.run_contention import RunContention, at_contention, run_contention
from sim.run_speed import (
    MIN_ALONE_GATES,
    RunSpeeds,
    at_run_speeds,
    run_speeds,
)
from sim.run_stalls import matched_stalls, run_stalls, with_stalls
from sim.run_state import run_state, with_state
from sim.run_wakes import run_wake_tails, with_wake_tails
from sim.runner import default_profile_path, load_service
from sim.sensitivity import scale_costs
from sim.service import ServiceTable
from sim.terms import ServiceTerms, replay_terms, sampled_terms
from sim.workload import Workload
from traces.profile import LatencyProfile, profile_variation, read_profile
from traces.serving import ServeConfig, read_records, summarize

__all__ = [
    "DEFAULT_TOLERANCE",
    "METRICS",
    "CheckRow",
    "HostSpeed",
    "Terms",
    "check_run",
    "check_runs",
    "parse_tolerance",
    "replay_config",
    "runs_on_host_cpu",
]


class Terms(str, Enum):
    """What the replay takes from the measured run besides arrivals and routing.

    ``profile``: expert times from the latency profile, gate and combine from the
    run's measured medians (a prediction). ``replay``: every service time and
    overhead gap of the run, per item (:mod:`sim.terms`; a check of the queue rules).
    ``sampled``: the same terms drawn independently from the run's distributions.
    """

    PROFILE = "profile"
    REPLAY = "replay"
    SAMPLED = "sampled"


class HostSpeed(str, Enum):
    """Where the host model takes the host's speed during each B of a measured run from.

    ``run``: the run's own gates that ran alone (:mod:`sim.run_speed`); ``probe``: the speed
    probes ``hw serve`` takes just before and after the B, against the profile's
    (:mod:`sim.host_speed`); ``profile``: the profile's, as measured.
    """

    RUN = "run"
    PROBE = "probe"
    PROFILE = "profile"


METRICS = {"throughput": "throughput_rps", "p50": "latency_p50_s", "p99": "latency_p99_s"}
DEFAULT_TOLERANCE = "throughput=5,p50=5,p99=10"


def parse_tolerance(text: str) -> dict[str, float]:
    """``5`` (percent, every metric) or ``throughput=5,p50=5,p99=10``."""
    text = text.strip()
    try:
        if "=" not in text:
            return dict.fromkeys(METRICS, float(text))
        out = parse_tolerance(DEFAULT_TOLERANCE) if text != DEFAULT_TOLERANCE else {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in METRICS:
                raise CheckError(f"--tolerance: unknown metric {name!r}; use {list(METRICS)}")
            out[name] = float(value)
    except ValueError:
        raise CheckError(f"--tolerance {text!r}: give percents like 5 or p99=10") from None
    if any(not v >= 0 for v in out.values()):
        raise CheckError(f"--tolerance {text!r}: percents must be >= 0")
    return out


@dataclass(frozen=True, slots=True)
class CheckRow:
    """Measured vs simulated values of one B; errors in percent of the measured value."""

    B: int
    measured: dict[str, float]
    simulated: dict[str, float]
    error_pct: dict[str, float]
    within: bool
    overloaded: bool
    host: bool = False  # simulated with the shared-host model (system-model §8)
    # --sensitivity: per metric, (lowest, highest) prediction with every cost ×(1 ± p)
    band: dict[str, tuple[float, float]] | None = None
    # several runs of one command (check_runs): measured and simulated are means over
    # ``runs``; per metric the (lowest, highest) measured value; runs within on their own
    runs: int = 1
    measured_range: dict[str, tuple[float, float]] | None = None
    runs_within: int | None = None
    # per metric, the standard error of ``error_pct`` over the runs (their paired
    # simulated - measured differences): how finely the runs resolve the error
    error_se_pct: dict[str, float] | None = None
    # hw profile's recorded run-to-run variation of the profile the costs came from (None:
    # unrecorded, or costs taken from the run): how much the machine moved while profiled
    profile_variation: float | None = None
    # the run's speed probe ÷ the profile's (sim.host_speed): how much slower the host idled
    # during the run, as the replay took it; None: not applied (no probes, another source)
    speed_factor: float | None = None
    # the host's speed during the run over the profile's, from the run's alone gates
    # (sim.run_speed); None: not applied (too few alone gates, another source)
    run_speed: float | None = None
    # the expert calls' length in the run over the replay's at that speed, from the run's
    # expert calls with no gate running (sim.run_speed.run_expert_factor); None: not applied
    run_expert_factor: float | None = None
    # the worker's combine job in the run over the replay's at that speed, from the run's
    # combines with no gate running (sim.run_speed.run_combine_factor); None: not applied
    run_combine_factor: float | None = None
    # the worker's hand-off factor read from the run's wake-ups from a gate, alone
    # (sim.run_speed.run_handoff_factor); None: not applied
    run_handoff_factor: float | None = None
    # several profiles (check_runs): ``simulated`` is the mean of their predictions, and
    # per metric the (lowest, highest) of the profiles' own predictions (each over the runs)
    profiles: int = 1
    simulated_range: dict[str, tuple[float, float]] | None = None
    # how the host model split the host between two threads at work (a HostLock value);
    # None: the ideal model
    host_lock: str | None = None
    # each prediction is the mean of this many replays (the model's seeds seed, seed + 1, ...)
    replays: int = 1
    # --parts: per part of a request (sim.parts.PARTS), measured and simulated (p50, p99) s
    parts_measured: dict[str, tuple[float, float]] | None = None
    parts_simulated: dict[str, tuple[float, float]] | None = None
    # the machine's state process the host model ran, set with --host-state or the
    # profile's measured one (means over profiles); None: none
    state: MachineState | None = None
    # whether the host model ran the gate's preemption the profile measured (SimConfig
    # gate_preempt; False where the profile lacks it or --host-preempt off); None: ideal model
    gate_preempt: bool | None = None
    # whether a worker woken while the gate goes on could join the next gate (the profile's
    # join_* rows, HostTerms.worker_join); None: the ideal model
    worker_join: bool | None = None
    # whether the host model ran the machine's stalls the profile measured (SimConfig
    # host_stalls; False where the profile lacks them or --host-stalls off); None: ideal model
    stalls: bool | None = None
    # whether that state was read from the run's own alone gates (sim.run_state; several
    # runs or profiles: from every one's); None: the ideal model
    state_from_run: bool | None = None
    # the stalls the run's own gates show, replayed where they were (sim.run_stalls):
    # episodes per second of the B (several runs: the mean); None: not read (the profile's
    # drawn stalls, --host-stalls profile or off, or too few gates)
    run_stalls_hz: float | None = None
    # whether the replay's hand-offs got the tail of the run's own wake-ups (sim.run_wakes;
    # several runs or profiles: every one's); None: the ideal model
    wakes_from_run: bool | None = None
    # whether the workers' hand-offs got theirs too (else the gates' only)
    worker_wakes_from_run: bool | None = None
    # the spells the run's own workers sat out with a batch ready, replayed where they were
    # (sim.run_absences): absences per second of the B (several runs: the mean); None: not
    # read (--worker-absences off, the ideal model, or too few batches)
    run_absences_hz: float | None = None
    # what company cost the run's steps, as factors on the profile's contention of the gate,
    # the expert call and the combine (sim.run_contention; several runs: the means); None:
    # not read (--host-contention profile, the ideal model, or none of the three readable)
    run_contention: RunContention | None = None

    def unresolved(self) -> bool:
        """Past tolerance, but every metric's error within two standard errors of the runs'
        own spread: more runs are needed to tell a model error from the machine's noise."""
        if self.within or self.error_se_pct is None:
            return False
        return all(
            math.isfinite(self.error_pct[k]) and abs(self.error_pct[k]) <= 2 * self.error_se_pct[k]
            for k in METRICS
        )

    def between_profiles(self, tolerance: dict[str, float]) -> bool:
        """Past tolerance, but every metric past it measured between the lowest and highest
        of several profiles' own predictions: the profiles disagree by more than the miss,
        and more of them (or a steadier machine) are needed to tell a model error."""
        if self.within or self.simulated_range is None:
            return False
        return all(
            self.simulated_range[k][0] <= self.measured[k] <= self.simulated_range[k][1]
            for k in METRICS
            if not _metric_within(self.error_pct, tolerance, k)
        )

    def in_band(self, metric: str) -> bool | None:
        """Whether the measured ``metric`` lies inside the prediction's band (None: no band)."""
        if self.band is None:
            return None
        lo, hi = self.band[metric]
        return bool(lo <= self.measured[metric] <= hi)

    def to_json(self) -> dict[str, Any]:
        def finite(v: float) -> float | None:
            return v if math.isfinite(v) else None

        def clean(d: dict[str, float]) -> dict[str, float | None]:
            return {k: finite(v) for k, v in d.items()}

        extra: dict[str, Any] = {}
        if self.band is not None:
            extra["band"] = {k: [finite(lo), finite(hi)] for k, (lo, hi) in self.band.items()}
            extra["in_band"] = {k: self.in_band(k) for k in self.band}
        if self.runs > 1 and self.measured_range is not None:
            extra["runs"] = self.runs
            extra["runs_within"] = self.runs_within
            extra["measured_min"] = {k: finite(lo) for k, (lo, _) in self.measured_range.items()}
            extra["measured_max"] = {k: finite(hi) for k, (_, hi) in self.measured_range.items()}
        if self.error_se_pct is not None:
            extra["error_se_pct"] = clean(self.error_se_pct)
        if self.replays > 1:
            extra["replays"] = self.replays
        if self.parts_measured is not None and self.parts_simulated is not None:
            sides = {"measured": self.parts_measured, "simulated": self.parts_simulated}
            extra["parts"] = {
                name: {
                    side: {"p50": finite(got[name][0]), "p99": finite(got[name][1])}
                    for side, got in sides.items()
                }
                for name in self.parts_measured
            }
        if self.profiles > 1 and self.simulated_range is not None:
            extra["profiles"] = self.profiles
            extra["simulated_min"] = {k: finite(lo) for k, (lo, _) in self.simulated_range.items()}
            extra["simulated_max"] = {k: finite(hi) for k, (_, hi) in self.simulated_range.items()}
        return {
            "B": self.B,
            "measured": clean(self.measured),
            "simulated": clean(self.simulated),
            "error_pct": clean(self.error_pct),
            "within": self.within,
            "overloaded": self.overloaded,
            "host": self.host,
            "profile_variation": self.profile_variation,
            "speed_factor": self.speed_factor,
            "run_speed": self.run_speed,
            "run_expert_factor": self.run_expert_factor,
            "run_combine_factor": self.run_combine_factor,
            "run_handoff_factor": self.run_handoff_factor,
            "host_lock": self.host_lock,
            "state": None if self.state is None else asdict(self.state),
            "gate_preempt": self.gate_preempt,
            "worker_join": self.worker_join,
            "stalls": self.stalls,
            "state_from_run": self.state_from_run,
            "run_stalls_hz": self.run_stalls_hz,
            "wakes_from_run": self.wakes_from_run,
            "worker_wakes_from_run": self.worker_wakes_from_run,
            "run_absences_hz": self.run_absences_hz,
            "run_contention": None
            if self.run_contention is None
            else self.run_contention._asdict(),
            **extra,
        }


def replay_config(
    cfg: ServeConfig,
    b: int,
    n_requests: int,
    service: ServiceModel = ServiceModel.MEDIAN,
    host: LatencyProfile | None = None,
    host_lock: HostLock = HostLock.EVEN,
    host_state: dict[str, float | bool] | None = None,
) -> SimConfig:
    """The model's config for one B of a measured run (its measured gate/combine costs).

    ``host``: the shared-host model (system-model §8) with the gate and combine
    costs of this profile, so the prediction takes no number from the run;
    ``host_lock``: how that model splits the host between two threads at work;
    ``host_state``: the machine's state, the gate's preemption and the machine's stalls
    (SimConfig ``state_*``, ``gate_preempt``, ``host_stalls`` fields), host model only.
    """
    if host_state and host_state.get("state_sigma") and host is None:
        raise CheckError("--host-state is part of the shared-host model: use it with --host")
    gate_s, combine_s = cfg.gate_latency_s or 0.0, cfg.combine_latency_s or 0.0
    if host is not None:
        gate_s = host.component_latency_s("gate") or 0.0
        combine_s = host.component_latency_s("combine") or 0.0
    return SimConfig(
        service=service,
        batch_size=b,
        n_experts=cfg.n_experts,
        gate=GateSpec(k=min(max(cfg.k, 1), cfg.n_experts)),
        skew=cfg.skew,
        rate_rps=cfg.rate_rps or 1.0,
        n_requests=n_requests,
        n_devices=cfg.devices,
        placement=tuple(cfg.placement),
        max_wait_s=cfg.max_wait_s,
        max_backlog=None,  # the records hold exactly the requests that arrived
        gate_latency_s=gate_s,
        combine_latency_s=combine_s,
        warmup=min(cfg.warmup, n_requests - 1),
        seed=cfg.seed,
        host=host is not None,
        host_lock=host_lock,
        **(host_state or {}),
    )


def runs_on_host_cpu(cfg: ServeConfig) -> bool:
    """Whether the run's devices were the host CPU (its workers then share the host, §8)."""
    return bool(cfg.device_names) and all(d.startswith("cpu") for d in cfg.device_names)


def _workload(rows: pl.DataFrame) -> Workload:
    reqs = (
        rows.sort(["request", "slot"])
        .group_by("request", maintain_order=True)
        .agg(pl.col("arrival_s").first(), pl.col("expert"))
    )
    ids = reqs["request"].to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise CheckError("measured records: request ids of a B are not 0, 1, 2, ...")
    arrivals = reqs["arrival_s"].to_numpy().astype(float)
    if (np.diff(arrivals) < 0).any():
        raise CheckError("measured records: arrivals are not in request order")
    return Workload.from_lists(arrivals.tolist(), reqs["expert"].to_list())


def _metric_within(err: dict[str, float], tol: dict[str, float], metric: str) -> bool:
    """``metric``'s error finite and inside its tolerance."""
    return math.isfinite(err[metric]) and abs(err[metric]) <= tol[metric]


def _within(err: dict[str, float], tol: dict[str, float]) -> bool:
    """Every metric's error finite and inside its tolerance."""
    return all(_metric_within(err, tol, k) for k in METRICS)


def _err(sim: float, meas: float) -> float:
    if not math.isfinite(sim) or not math.isfinite(meas) or meas == 0:
        return math.nan
    return 100.0 * (sim - meas) / meas


def check_run(
    measured_path: str | Path,
    profile_path: str | Path | None = None,
    tolerance: dict[str, float] | None = None,
    service: ServiceModel | None = None,
    terms: Terms = Terms.PROFILE,
    host: bool | None = None,
    sensitivity: float | None = None,
    host_speed: HostSpeed | None = None,
    host_lock: HostLock = HostLock.EVEN,
    replays: int = 1,
    parts: bool = False,
    host_state: dict[str, float | bool] | None = None,
    state_from_run: bool = True,
    stalls_from_run: bool = True,
    wakes_from_run: bool = True,
    worker_wakes_from_run: bool = False,
    absences_from_run: bool = True,
    contention_from_run: bool = True,
) -> list[CheckRow]:
    """Replay every B of a measured run; compare throughput, p50 and p99.

    ``sensitivity`` (a fraction, e.g. 0.05; ``--terms profile`` only): also
    replay each B with every measured cost ×(1 ∓ it) and report the band of
    predictions (:mod:`sim.sensitivity`).

    ``service`` defaults to ``spread`` when the profile has p10/p90 (real calls
    vary, and the variation is measured), else ``median``. ``host`` (profile
    terms only) runs the shared-host model of system-model §8; None: on for a
    run on CPU devices when the profile has the host terms, off otherwise.
    ``host_speed`` (host model only, :class:`HostSpeed`): where each B's host speed comes
    from: the run's own alone gates (:mod:`sim.run_speed`), the speed probes (the host
    model's idle slowdown grows with the run's probe ÷ the profile's, :mod:`sim.host_speed`)
    or the profile; None: the run's where it has enough alone gates, else the probes where
    the run and the profile both carry them, else the profile's.
    ``host_lock``: how the host model splits the host between two threads at work
    (:class:`~sim.config.HostLock`). ``replays``: each B's prediction is the mean of this
    many replays that differ only in the model's own draws (seeds ``seed``, ``seed + 1``,
    ...; the arrivals and routing are the run's): one replay's p99 at B = 1 moves by
    about 3 % from seed to seed on this machine's runs (4-7 % with the lock won whole).
    ``parts``: also compare each part of a request (:mod:`sim.parts`: the queue before
    the gate, the gate, the worker's part, the latency), p50 and p99, measured and replayed.
    ``host_state``: the machine's state in the host model (:func:`replay_config`);
    ``state_from_run``: where it sets none, each B's state is read from the run's own alone
    gates (:mod:`sim.run_state`) where it has enough of them, else the profile's.
    ``stalls_from_run``: where the stalls are on (``host_stalls``), each B replays the
    stalls its own gates show (:mod:`sim.run_stalls`) where it has enough gates, in place
    of the profile's drawn ones.
    ``wakes_from_run``: each B's gates' hand-offs get the tail its own gates' wake-ups have
    over its replay's (:mod:`sim.run_wakes`) where it has enough of them, on top of the
    profile's; ``worker_wakes_from_run``: its workers' too (off by default: the worker's wake
    is read from the run as a factor, :func:`sim.run_speed.run_handoff_factor`, and a tail
    on top of it, each wake drawing its excess at random, ran the way from the gate to the
    batch long at its median; the gates' tails were off by default until session 31, when
    the worker's wake, then too long, hid that the replay's gates woke too fast in the tail:
    ``benchmarks/README.md``, "Fidelity, session 31").
    ``absences_from_run``: each B replays the spells its own device workers sat out with a
    batch ready (:mod:`sim.run_absences`) where it has enough batches.
    ``contention_from_run``: each B's replay pays for company what its own steps paid
    (:mod:`sim.run_contention`: the gate's, the expert call's and the combine's contention as
    factors on the profile's). Both on by default since session 29: alone, the absences
    overshot three cells of blocks 36-40 that were within, because the replay charged the
    worker for company the run's did not pay; with the run's price of company, B = 1's p99
    at 500 req/s came within on four of the five blocks (``benchmarks/README.md``, "Fidelity,
    session 29").
    """
    options = (tolerance, service, terms, host, sensitivity, host_speed, host_lock, replays, parts)
    # one run: its own rows
    return check_runs(
        [measured_path], profile_path, *options, host_state=host_state,
        state_from_run=state_from_run, stalls_from_run=stalls_from_run,
        wakes_from_run=wakes_from_run, worker_wakes_from_run=worker_wakes_from_run,
        absences_from_run=absences_from_run, contention_from_run=contention_from_run,
    )  # fmt: skip


def _with_variation(
    rows: list[CheckRow], profile_paths: Sequence[str | Path | None], terms: Terms
) -> list[CheckRow]:
    """The rows with the profiles' recorded variation (the largest, with several), where the
    costs came from them."""
    if terms is not Terms.PROFILE:
        return rows
    recorded = [profile_variation(p or default_profile_path()) for p in profile_paths]
    known = [v for v in recorded if v is not None]
    variation = max(known) if known else None
    return [replace(r, profile_variation=variation) for r in rows]


def _check_loaded(
    records: pl.DataFrame,
    cfg: ServeConfig,
    profile: LatencyProfile,
    tolerance: dict[str, float] | None,
    service: ServiceModel | None,
    terms: Terms,
    host: bool | None,
    sensitivity: float | None,
    host_speed: HostSpeed | None = None,
    host_lock: HostLock = HostLock.EVEN,
    replays: int = 1,
    parts: bool = False,
    host_state: dict[str, float | bool] | None = None,
    state_from_run: bool = True,
    stalls_from_run: bool = True,
    wakes_from_run: bool = True,
    worker_wakes_from_run: bool = False,
    absences_from_run: bool = True,
    contention_from_run: bool = True,
) -> list[CheckRow]:
    """:func:`check_run` on records already read."""
    tol = tolerance or parse_tolerance(DEFAULT_TOLERANCE)
    b_values = sorted(records["B"].unique().to_list())
    table, _ = load_service(profile, cfg.n_experts, max(b_values))
    if service is None:
        service = ServiceModel.MEDIAN if table.p10 is None else ServiceModel.SPREAD
    if host is None:
        host = terms is Terms.PROFILE and table.host is not None and runs_on_host_cpu(cfg)
    if host and terms is not Terms.PROFILE:
        raise CheckError("the host model predicts from the profile: use it with --terms profile")
    if host and table.host is None:
        raise CheckError(
            f"{profile.source}: no host terms (dispatch, collect, gate_/worker_ alone/"
            "contended); profile again with `hw profile`, or use --no-host"
        )
    if sensitivity is not None and terms is not Terms.PROFILE:
        raise CheckError("--sensitivity scales the profile's costs: use it with --terms profile")
    if host_speed not in (None, HostSpeed.PROFILE) and not host:
        raise CheckError(
            f"--host-speed {host_speed.value} sets the shared-host model's speed: use it with "
            "--terms profile on a run on CPU devices and a profile with the host terms"
        )
    measured = summarize(records, cfg)
    out = []
    for b in b_values:
        rows = records.filter(pl.col("B") == b)
        work = _workload(rows)
        sim_cfg = replay_config(
            cfg, int(b), work.n_requests, service, profile if host else None, host_lock, host_state
        )
        factor, b_table = None, table
        speeds = RunSpeeds(None, None, None, None)
        from_run, path = False, None
        if host and state_from_run and sim_cfg.state_sigma is None:
            got = run_state(rows)
            if got is not None:
                b_table, from_run, path = with_state(table, got.state, got.path), True, got.path
        absences_hz, contention = None, None
        if host and absences_from_run:
            away = run_absences(rows)
            if away is not None:
                b_table, absences_hz = with_absences(b_table, away), away.rate_hz
        stalls_hz = None
        if host and stalls_from_run and sim_cfg.host_stalls:
            met = run_stalls(rows, path)
            if met is not None:
                b_table, stalls_hz = with_stalls(b_table, met), met.rate_hz
        if host and host_speed in (None, HostSpeed.RUN):
            speeds = run_speeds(rows, sim_cfg, b_table, work)
            if speeds.scale is None and host_speed is HostSpeed.RUN:
                raise CheckError(
                    f"--host-speed run: B = {b} has fewer than {MIN_ALONE_GATES} gates that "
                    "ran alone (on a warm host, for a profile without the gate's cold start) "
                    "in the run or in its replay (a short run, or a load that keeps the host "
                    "busy); use --host-speed probe or profile"
                )
            # the host, the worker's calls, combines and hand-offs each at their run's speed
            b_table = at_run_speeds(b_table, speeds)
            if contention_from_run:  # what company cost the run's steps, at those speeds
                b_table, contention = _at_run_contention(rows, sim_cfg, b_table, work)
            if stalls_hz:
                b_table = matched_stalls(rows, sim_cfg, b_table, work)
        if host and speeds.scale is None and host_speed in (None, HostSpeed.PROBE):
            factor = speed_factor(cfg, profile, int(b))
            if factor is None and host_speed is HostSpeed.PROBE:
                raise CheckError(
                    f"--host-speed probe: no host speed probe for B = {b} in the run (hw "
                    f"serve --speed-probe-s 0, or older) or in {profile.source} (profile again)"
                )
            if factor is not None:
                b_table = at_host_speed(b_table, profile, factor)
        if host and contention_from_run and host_speed not in (None, HostSpeed.RUN):
            # at the probe's or the profile's speed
            b_table, contention = _at_run_contention(rows, sim_cfg, b_table, work)
        tails = None
        if host and wakes_from_run:  # over the replay as it stands now, at the run's speed
            tails = run_wake_tails(rows, sim_cfg, b_table, work, workers=worker_wakes_from_run)
            b_table = with_wake_tails(b_table, tails)
        measured_terms = None
        if terms is Terms.REPLAY:
            measured_terms = replay_terms(rows, cfg.max_wait_s)
        elif terms is Terms.SAMPLED:
            measured_terms = sampled_terms(rows, cfg.max_wait_s, cfg.seed)
        sim_parts: list[dict[str, tuple[float, float]]] | None = [] if parts else None
        s = _predict(sim_cfg, b_table, work, measured_terms, cfg, replays, sim_parts)
        meas = measured.filter(pl.col("B") == b).row(0, named=True)
        m = {k: float(meas[col]) for k, col in METRICS.items()}
        e = {k: _err(s[k], m[k]) for k in METRICS}
        within = _within(e, tol)
        band = None
        if sensitivity is not None:
            ends = [
                _predict(
                    *scale_costs(sim_cfg, b_table, 1.0 + sign * sensitivity),
                    work,
                    None,
                    cfg,
                    replays,
                )
                for sign in (-1.0, 1.0)
            ]
            band = {k: (min(x[k] for x in ends), max(x[k] for x in ends)) for k in METRICS}
        row = CheckRow(int(b), m, s, e, within, bool(meas["overloaded"]), host, band)
        host_lock_used = host_lock.value if host else None
        row = replace(
            row,
            speed_factor=factor,
            run_speed=speeds.scale,
            run_expert_factor=speeds.expert,
            run_combine_factor=speeds.combine,
            run_handoff_factor=speeds.handoff,
            host_lock=host_lock_used,
            replays=replays,
            state=sim_cfg.machine_state(b_table.host.state if host and b_table.host else None),
            gate_preempt=bool(sim_cfg.gate_preempt and b_table.host and b_table.host.preempt_p)
            if host
            else None,
            worker_join=bool(b_table.host and b_table.host.worker_join_p) if host else None,
            stalls=bool(sim_cfg.host_stalls and b_table.host and b_table.host.stalls)
            if host
            else None,
            state_from_run=from_run if host else None,
            run_stalls_hz=stalls_hz,
            wakes_from_run=tails is not None if host else None,
            worker_wakes_from_run=bool(tails and (tails.worker or tails.worker_after_gate))
            if host
            else None,
            run_absences_hz=absences_hz,
            run_contention=contention,
        )
        if sim_parts:
            row = replace(
                row, parts_measured=request_parts(rows), parts_simulated=mean_parts(sim_parts)
            )
        out.append(row)
    return out


# what makes two measured runs repeats of one command (the seed and the measured
# gate/combine medians may differ)
_SAME_COMMAND = (
    "n_experts",
    "b_values",
    "devices",
    "placement",
    "device_names",
    "arrival",
    "rate_rps",
    "requests",
    "duration_s",
    "warmup",
    "max_wait_s",
    "max_backlog",
    "routing",
    "k",
    "skew",
    "routing_trace",
    "model",
)


ProfilePaths = str | Path | Sequence[str | Path] | None
"""One profile, several (their predictions averaged), or None: the bundled one."""


def _profile_list(profile_path: ProfilePaths) -> list[str | Path | None]:
    if profile_path is None or isinstance(profile_path, str | Path):
        return [profile_path]
    if not profile_path:
        raise CheckError("give at least one profile")
    return list(profile_path)


def check_runs(
    measured_paths: Sequence[str | Path],
    profile_path: ProfilePaths = None,
    tolerance: dict[str, float] | None = None,
    service: ServiceModel | None = None,
    terms: Terms = Terms.PROFILE,
    host: bool | None = None,
    sensitivity: float | None = None,
    host_speed: HostSpeed | None = None,
    host_lock: HostLock = HostLock.EVEN,
    replays: int = 1,
    parts: bool = False,
    only_b: Sequence[int] | None = None,
    host_state: dict[str, float | bool] | None = None,
    state_from_run: bool = True,
    stalls_from_run: bool = True,
    wakes_from_run: bool = True,
    worker_wakes_from_run: bool = False,
    absences_from_run: bool = True,
    contention_from_run: bool = True,
) -> list[CheckRow]:
    """:func:`check_run` over repeated runs of one ``hw serve`` command, judged on the means,
    predicted from one profile or the mean of several.

    Why repeats: on a shared machine the real server's p50 and p99 at small B differ
    between identical runs by more than the tolerance (``benchmarks/README.md``),
    so one run is one draw, not the measurement. Each run is replayed with its
    own arrivals and routing; per B, ``measured`` and ``simulated`` are the means
    over the runs, the error is that of the means, ``error_se_pct`` its standard
    error over the runs, ``measured_range`` the lowest and highest measured value,
    and ``runs_within`` how many runs pass on their own.
    The runs must share every setting but the seed (:data:`_SAME_COMMAND`).

    Why several profiles: a profile is one draw too, of the machine's state while it was
    taken. On a machine whose state moves over minutes, the same runs predicted from three
    profiles taken among them differed at B = 1 by up to 39 points, the same for every run
    (``benchmarks/README.md``, "Fidelity, session 11"); each run is then predicted as the
    mean of every profile's prediction of it, and ``simulated_range`` keeps the lowest and
    highest profile's (each over the runs), how far the reference state moves the answer.

    ``only_b``: check only these B values (each must be in every run), e.g. B = 1 of a
    ``--B 1..64`` run, without replaying the others. ``state_from_run``: as in
    :func:`check_run`, each run's machine state from its own alone gates;
    ``stalls_from_run``: as there, each run's stalls from its own gates;
    ``wakes_from_run``, ``worker_wakes_from_run``: as there, each run's wake-up tails (the
    gates', the workers') from its own wake-ups;
    ``absences_from_run``: as there, each run's workers' absences from its own records;
    ``contention_from_run``: as there, each run's price of company from its own records.
    """
    if not measured_paths:
        raise CheckError("give at least one measured run")
    if replays < 1:
        raise CheckError(f"--replays must be >= 1, got {replays}")
    tol = tolerance or parse_tolerance(DEFAULT_TOLERANCE)
    paths = _profile_list(profile_path)
    profiles = [read_profile(p or default_profile_path()) for p in paths]
    loaded = []
    for path in measured_paths:
        records, cfg = read_records(path)
        if records.height == 0:
            raise CheckError(f"{path}: the measured run has no records")
        if only_b is not None:
            have = sorted(records["B"].unique().to_list())
            missing = sorted(set(only_b) - set(have))
            if missing:
                raise CheckError(f"{path} has no B = {missing} (it has B = {have})")
            records = records.filter(pl.col("B").is_in(list(only_b)))
        if loaded:
            first_path, first_cfg = measured_paths[0], loaded[0][1]
            for name in (f.name for f in fields(ServeConfig) if f.name in _SAME_COMMAND):
                a, b = getattr(first_cfg, name), getattr(cfg, name)
                if a != b:
                    raise CheckError(
                        f"{path} is not a repeat of {first_path}: {name} {b!r} vs {a!r}"
                    )
        loaded.append((records, cfg))
    by_profile = [
        [
            _check_loaded(
                records,
                cfg,
                prof,
                tol,
                service,
                terms,
                host,
                sensitivity,
                host_speed,
                host_lock,
                replays,
                parts,
                host_state,
                state_from_run,
                stalls_from_run,
                wakes_from_run=wakes_from_run,
                worker_wakes_from_run=worker_wakes_from_run,
                absences_from_run=absences_from_run,
                contention_from_run=contention_from_run,
            )
            for records, cfg in loaded
        ]
        for prof in profiles
    ]
    per_run = [_profiles_mean([rows[i] for rows in by_profile], tol) for i in range(len(loaded))]
    if len(per_run) == 1:
        return _with_variation(per_run[0], paths, terms)
    by_b = [{r.B: r for r in rows} for rows in per_run]
    for path, rows in zip(measured_paths, by_b, strict=True):
        if rows.keys() != by_b[0].keys():
            raise CheckError(
                f"{path} has records for B = {sorted(rows)}, {measured_paths[0]} for "
                f"B = {sorted(by_b[0])}: not repeats of one command"
            )
    means = [_mean_row([rows[b] for rows in by_b], tol) for b in sorted(by_b[0])]
    if len(profiles) > 1:
        own = []  # each profile's prediction over the runs
        for rows in by_profile:
            keyed = [{r.B: r for r in run} for run in rows]
            own.append({b: _mean_row([run[b] for run in keyed], tol) for b in by_b[0]})
        means = [
            replace(m, profiles=len(profiles), simulated_range=_range([o[m.B] for o in own]))
            for m in means
        ]
    return _with_variation(means, paths, terms)


def _range(rows: list[CheckRow]) -> dict[str, tuple[float, float]]:
    """Per metric, the lowest and highest prediction among ``rows``."""
    return {
        k: (min(r.simulated[k] for r in rows), max(r.simulated[k] for r in rows)) for k in METRICS
    }


def _profiles_mean(sets: list[list[CheckRow]], tol: dict[str, float]) -> list[CheckRow]:
    """One run predicted from several profiles: per B, the mean of their predictions (and of
    their sensitivity bands and speed factors); the measured side is the run's own."""
    if len(sets) == 1:
        return sets[0]
    out = []
    for rows in zip(*sets, strict=True):
        sim = {k: float(np.mean([r.simulated[k] for r in rows])) for k in METRICS}
        err = {k: _err(sim[k], rows[0].measured[k]) for k in METRICS}
        band = None
        if all(r.band is not None for r in rows):
            band = {
                k: tuple(float(np.mean([r.band[k][i] for r in rows if r.band])) for i in (0, 1))
                for k in METRICS
            }
        out.append(
            replace(
                rows[0],
                simulated=sim,
                error_pct=err,
                within=_within(err, tol),
                band=band,
                speed_factor=_mean_or_none([r.speed_factor for r in rows]),
                run_speed=_mean_or_none([r.run_speed for r in rows]),
                run_expert_factor=_mean_or_none([r.run_expert_factor for r in rows]),
                run_combine_factor=_mean_or_none([r.run_combine_factor for r in rows]),
                run_handoff_factor=_mean_or_none([r.run_handoff_factor for r in rows]),
                profiles=len(rows),
                simulated_range=_range(list(rows)),
                parts_simulated=_parts_mean([r.parts_simulated for r in rows]),
                state=_state_mean([r.state for r in rows]),
                gate_preempt=None if not rows[0].host else all(r.gate_preempt for r in rows),
                worker_join=None if not rows[0].host else all(r.worker_join for r in rows),
                stalls=None if not rows[0].host else all(r.stalls for r in rows),
                state_from_run=None if not rows[0].host else all(r.state_from_run for r in rows),
                run_stalls_hz=_mean_or_none([r.run_stalls_hz for r in rows]),
                wakes_from_run=None if not rows[0].host else all(r.wakes_from_run for r in rows),
                worker_wakes_from_run=None
                if not rows[0].host
                else all(r.worker_wakes_from_run for r in rows),
                run_absences_hz=_mean_or_none([r.run_absences_hz for r in rows]),
                run_contention=_contention_mean([r.run_contention for r in rows]),
            )
        )
    return out


def _at_run_contention(
    rows: pl.DataFrame, sim_cfg: SimConfig, table: ServiceTable, work: Workload
) -> tuple[ServiceTable, RunContention | None]:
    """``table`` at what company cost the run's steps (:func:`run_contention`), and the
    factors; ``table`` as it is where they cannot be read."""
    got = run_contention(rows, sim_cfg, table, work)
    return (table if got is None else at_contention(table, got)), got


def _contention_mean(values: list[RunContention | None]) -> RunContention | None:
    """Each factor's mean over the rows (None unless every row has them)."""
    if not values or any(v is None for v in values):
        return None
    return RunContention(*np.mean(np.array(values, dtype=float), axis=0).tolist())


def _mean_or_none(values: list[float | None]) -> float | None:
    """The mean of the rows' values (None unless every row has one)."""
    if not values or any(v is None for v in values):
        return None
    return float(np.mean([v for v in values if v is not None]))


def _state_mean(states: list[MachineState | None]) -> MachineState | None:
    """The mean state process over several profiles' predictions (None unless all ran one)."""
    if not states or any(s is None for s in states):
        return None
    got = np.array([astuple(s) for s in states if s is not None], dtype=float)
    return MachineState(*(float(x) for x in got.mean(axis=0)))


def _parts_mean(
    sets: list[dict[str, tuple[float, float]] | None],
) -> dict[str, tuple[float, float]] | None:
    """The mean of several rows' parts (None unless every row has them)."""
    if not sets or any(s is None for s in sets):
        return None
    return mean_parts([s for s in sets if s is not None])


def _mean_row(rows: list[CheckRow], tol: dict[str, float]) -> CheckRow:
    """One B over repeated runs: means, the error of the means and its standard error (of
    the paired per-run differences, each run replayed with its own arrivals), the range."""
    meas = {k: float(np.mean([r.measured[k] for r in rows])) for k in METRICS}
    sim = {k: float(np.mean([r.simulated[k] for r in rows])) for k in METRICS}
    err = {k: _err(sim[k], meas[k]) for k in METRICS}
    se = {}
    for k in METRICS:
        diff = np.array([r.simulated[k] - r.measured[k] for r in rows])
        ok = np.isfinite(diff).all() and meas[k] != 0
        spread = diff.std(ddof=1) / np.sqrt(len(rows)) if ok else math.nan
        se[k] = float(100 * spread / abs(meas[k])) if ok else math.nan
    band = None
    if all(r.band is not None for r in rows):
        band = {
            k: (
                float(np.mean([r.band[k][0] for r in rows if r.band is not None])),
                float(np.mean([r.band[k][1] for r in rows if r.band is not None])),
            )
            for k in METRICS
        }
    return CheckRow(
        B=rows[0].B,
        measured=meas,
        simulated=sim,
        error_pct=err,
        within=_within(err, tol),
        overloaded=any(r.overloaded for r in rows),
        host=rows[0].host,
        host_lock=rows[0].host_lock,
        replays=rows[0].replays,
        band=band,
        runs=len(rows),
        measured_range={
            k: (min(r.measured[k] for r in rows), max(r.measured[k] for r in rows)) for k in METRICS
        },
        runs_within=sum(r.within for r in rows),
        error_se_pct=se,
        speed_factor=_mean_or_none([r.speed_factor for r in rows]),
        run_speed=_mean_or_none([r.run_speed for r in rows]),
        run_expert_factor=_mean_or_none([r.run_expert_factor for r in rows]),
        run_combine_factor=_mean_or_none([r.run_combine_factor for r in rows]),
        run_handoff_factor=_mean_or_none([r.run_handoff_factor for r in rows]),
        parts_measured=_parts_mean([r.parts_measured for r in rows]),
        parts_simulated=_parts_mean([r.parts_simulated for r in rows]),
        state=_state_mean([r.state for r in rows]),
        gate_preempt=None if not rows[0].host else all(r.gate_preempt for r in rows),
        worker_join=None if not rows[0].host else all(r.worker_join for r in rows),
        stalls=None if not rows[0].host else all(r.stalls for r in rows),
        state_from_run=None if not rows[0].host else all(r.state_from_run for r in rows),
        run_stalls_hz=_mean_or_none([r.run_stalls_hz for r in rows]),
        wakes_from_run=None if not rows[0].host else all(r.wakes_from_run for r in rows),
        worker_wakes_from_run=None
        if not rows[0].host
        else all(r.worker_wakes_from_run for r in rows),
        run_absences_hz=_mean_or_none([r.run_absences_hz for r in rows]),
        run_contention=_contention_mean([r.run_contention for r in rows]),
    )


def _predict(
    sim_cfg: SimConfig,
    table: ServiceTable,
    work: Workload,
    measured_terms: ServiceTerms | None,
    cfg: ServeConfig,
    replays: int = 1,
    parts: list[dict[str, tuple[float, float]]] | None = None,
) -> dict[str, float]:
    """The metrics of the simulated replay, summarized as the measured run is; with several
    replays (the model's seeds ``seed``, ``seed + 1``, ...), their means. ``parts``: where
    to append each replay's :func:`~sim.parts.request_parts`."""
    rows = []
    for i in range(replays):
        result = simulate(sim_cfg.with_(seed=sim_cfg.seed + i), table, work, measured_terms)
        records = records_of(result)
        rows.append(summarize(records, cfg).row(0, named=True))
        if parts is not None:
            parts.append(request_parts(records))
    return {k: float(np.mean([r[col] for r in rows])) for k, col in METRICS.items()}
