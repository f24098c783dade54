"""Console script of the `sim` package: ``sim run``, ``sim sweep``, ``sim check``.

Each command is thin: parse options, build configs, call the library, save, print.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sim.config import (
    GatePolicy,
    GateSpec,
    HostLock,
    ServiceModel,
    SimConfig,
    parse_gate,
    parse_host_preempt,
    parse_host_stalls,
    parse_host_state,
)
from sim.errors import SimConfigError
from sim.machine_state import MachineState
from sim.output import serve_config, write_runs
from sim.runner import (
    PointRun,
    auto_jobs,
    default_profile_path,
    parse_b_values,
    profile_defaults,
    run_points,
)
from traces.cli_support import cli_errors, err_console, out_console, refuse_overwrite
from traces.profile import noisy_profile_note, profile_variation, read_profile
from traces.routing import read_routing

__all__ = ["JSON_KEYS", "app", "main"]

app = typer.Typer(
    help="Simulate MoE serving with size-B expert queues (SimPy).",
    no_args_is_help=True,
    add_completion=False,
)

JSON_KEYS = (
    "B",
    "requests",
    "throughput_rps",
    "latency_mean_s",
    "latency_p50_s",
    "latency_p95_s",
    "latency_p99_s",
)


@app.callback()
def root() -> None:
    """Simulate MoE serving with size-B expert queues (SimPy)."""


def progress_bar() -> Progress:
    """A transient progress bar on stderr (results go to stdout)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def _gate_spec(k: int | None, gate: str | None, routing: Path | None) -> GateSpec:
    given = [name for name, v in (("--k", k), ("--gate", gate), ("--routing", routing)) if v]
    if len(given) > 1:
        raise SimConfigError(f"give only one of --k, --gate, --routing (got {', '.join(given)})")
    if routing is not None:
        return GateSpec(GatePolicy.TRACE, trace=str(routing))
    if gate is not None:
        return parse_gate(gate)
    return GateSpec(GatePolicy.TOPK, k=2 if k is None else k)


def _json_row(summary: dict[str, Any]) -> dict[str, Any]:
    """Every summary field, JSON-safe (NaN -> null), the required keys first."""
    row = {key: summary[key] for key in JSON_KEYS}
    for key, value in summary.items():
        row.setdefault(key, value)
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _ms(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x * 1e3:.3f}"


def _table(points: list[PointRun], title: str) -> Table:
    table = Table(title=title)
    for col in (
        "B",
        "requests",
        "throughput rps",
        "mean ms",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "queue wait ms",
        "mean batch",
        "backlog at end",
    ):
        table.add_column(col, justify="right")
    for p in points:
        s = p.summary
        table.add_row(
            str(s["B"]),
            str(s["requests"]),
            f"{s['throughput_rps']:.1f}",
            _ms(s["latency_mean_s"]),
            _ms(s["latency_p50_s"]),
            _ms(s["latency_p95_s"]),
            _ms(s["latency_p99_s"]),
            _ms(s["queue_wait_mean_s"]),
            f"{s['mean_batch_size']:.2f}",
            str(s["backlog_end_n"]) + (" overloaded" if s["overloaded"] else ""),
        )
    return table


_HOST_LOCK_HELP = (
    "Shared-host model: two threads at work share the host evenly (both at their measured "
    "speed throughout) or by the lock won or lost whole (drawn at each job's start or end, "
    "each thread's expected speed its measured one)."
)


_HOST_STATE_HELP = (
    "Shared-host model: the machine's state, a log-normal factor (SIGMA in log, mean 1 over "
    "each 5 s block) on every step's wall time, redrawn every WINDOW_S as an AR(1) with "
    "lag-one correlation RHO: 'profile' (the default: the process fitted to what hw "
    "profile measured, none where the profile lacks it), 'off', or SIGMA,RHO,WINDOW_S "
    "(e.g. 0.19,0.7,0.1)."
)


_HOST_PREEMPT_HELP = (
    "Shared-host model: a gate woken while a device worker is at work takes the host whole "
    "(the worker waits until it ends) with the probability hw profile measured at the run's "
    "duty: 'profile' (the default; never where the profile lacks it) or 'off'."
)

_HOST_STALLS_HELP = (
    "Shared-host model: the machine's stalls, a few ms now and then in which every step and "
    "hand-off takes several times its wall time, Poisson at the rate hw profile found them: "
    "'profile' (the default; none where the profile lacks them) or 'off'."
)

_CHECK_HOST_STALLS_HELP = (
    "Shared-host model: the machine's stalls, a few ms now and then in which every step and "
    "hand-off takes several times its wall time: 'run' (the default: the ones each B's own "
    "gates show, replayed where they were), 'profile' (Poisson at the rate hw profile found "
    "them; none where the profile lacks them) or 'off'."
)

_CHECK_HOST_WAKES_HELP = (
    "Shared-host model: a woken thread's hand-off: 'gates' (the default: the profile's, plus "
    "for the gate the tail each B's own gates' wake-ups have over its replay's, drawn per "
    "wake-up; the worker's wake is read from the run as a factor), 'run' (that tail for the "
    "workers' wake-ups too) or 'profile' (the profile's alone; docs/system-model.md §8)."
)

_CHECK_WORKER_ABSENCES_HELP = (
    "Shared-host model: 'run' (the default) replays the spells each B's own device workers sat "
    "out with a batch ready (ready gaps over two median gates: the gate thread kept the "
    "interpreter lock from them), where they were; 'off' replays none (docs/system-model.md "
    "§8)."
)

_CHECK_HOST_CONTENTION_HELP = (
    "Shared-host model: what company costs a step. 'run' (the default) takes it from each "
    "B's own records: the gate's in company, the expert call's and the combine's beside a "
    "gate, as factors on the profile's; 'profile' keeps the profile's contended pairs "
    "(docs/system-model.md §8)."
)

_CHECK_HOST_STATE_HELP = (
    "Shared-host model: the machine's state, a log-normal factor (SIGMA in log) on every "
    "step's wall time, redrawn every WINDOW_S as an AR(1) with lag-one correlation RHO: "
    "'run' (the default: read from each B's own gates that ran alone, as the profile reads "
    "its chains, and replayed along the path they show; the profile's where a B has too "
    "few), 'profile' (the process fitted to "
    "what hw profile measured), 'off', or SIGMA,RHO,WINDOW_S (e.g. 0.19,0.7,0.1)."
)


def _state_label(
    state: MachineState | None,
    preempt: bool = False,
    from_run: bool = False,
    join: bool = False,
    stalls: bool = False,
    stalls_from_run: bool = False,
) -> str:
    """The state process a host model ran (``from_run``: read from each B's run, so one
    process does not stand for them all), and whether the gate's preemption, the woken
    worker's join and the machine's stalls ran (``stalls_from_run``: those each B's own
    gates show, replayed), for a table title."""
    label = "no machine state"
    if from_run:
        label = "machine state along each B's alone gates"
    elif state is not None:
        label = f"machine state σ {state.sigma:.2f} ρ {state.rho:.2f} per {state.window_s:g} s"
    label += (", gate preemption" if preempt else "") + (", worker joins" if join else "")
    if stalls_from_run:
        return label + ", stalls from each B's gates"
    return label + (", stalls" if stalls else "")


@app.command("run")
@cli_errors
def run_cmd(
    b_values: Annotated[
        str, typer.Option("--B", help="Queue sizes: 8, 1,2,4 or 1..64 (powers of two).")
    ] = "1..64",
    profile: Annotated[
        Path | None, typer.Option(help="Latency profile (default: the bundled CPU profile).")
    ] = None,
    experts: Annotated[
        int | None, typer.Option(help="Experts M (default: the trace's, else the profile's).")
    ] = None,
    k: Annotated[int | None, typer.Option("--k", help="Top-k routing with this k (2).")] = None,
    gate: Annotated[
        str | None, typer.Option(help="Routing policy: topk:K, topp:P or budget:q1,q2,...")
    ] = None,
    routing: Annotated[Path | None, typer.Option(help="Replay this routing trace.")] = None,
    skew: Annotated[float, typer.Option(help="Expert popularity ∝ (e+1)^-skew.")] = 0.0,
    rate: Annotated[float, typer.Option(help="Poisson arrival rate, requests/s.")] = 1000.0,
    requests: Annotated[int, typer.Option(help="Requests per B value.")] = 100_000,
    devices: Annotated[int, typer.Option(help="Devices D; expert e on e mod D.")] = 1,
    max_backlog: Annotated[
        int, typer.Option(help="Stop arrivals when this many requests are in the system.")
    ] = 4096,
    max_wait_ms: Annotated[
        float | None, typer.Option("--max-wait-ms", help="Flush a queue after T ms.")
    ] = None,
    gate_latency_s: Annotated[
        float | None,
        typer.Option("--gate-latency-s", help="Gate cost per request (default: profile or 0)."),
    ] = None,
    combine_latency_s: Annotated[
        float | None,
        typer.Option(
            "--combine-latency-s", help="Combine cost per request (default: profile or 0)."
        ),
    ] = None,
    service: Annotated[
        ServiceModel, typer.Option(help="Batch service time: profile median, p10/p90 spread.")
    ] = ServiceModel.MEDIAN,
    warmup: Annotated[
        int | None, typer.Option(help="Requests excluded from metrics (default 10%).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 0,
    host: Annotated[
        bool | None,
        typer.Option(
            "--host/--no-host",
            help="Shared host CPU (system-model §8: the CPU server's threads share the GIL "
            "and cores). Default: on for a CPU profile that has the host terms.",
        ),
    ] = None,
    host_lock: Annotated[HostLock, typer.Option(help=_HOST_LOCK_HELP)] = HostLock.EVEN,
    host_state: Annotated[str | None, typer.Option(help=_HOST_STATE_HELP)] = None,
    host_preempt: Annotated[str | None, typer.Option(help=_HOST_PREEMPT_HELP)] = None,
    host_stalls: Annotated[str | None, typer.Option(help=_HOST_STALLS_HELP)] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write serve-records/1 here (+ .summary.parquet).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
    chrome_trace: Annotated[
        Path | None,
        typer.Option(help="Write a Chrome/Perfetto trace of the run here (one B value only)."),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="Worker processes, one B value each at a time (default: the cores this "
            "process may use, from 50,000 requests in all with the shared-host model or "
            "500,000 without; else 1).",
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object per B, per line.")] = False,
) -> None:
    """Simulate each B value on the same requests; print latency and throughput per B."""
    bs = parse_b_values(b_values)
    refuse_overwrite(out, force)
    refuse_overwrite(chrome_trace, force)
    if chrome_trace is not None and len(bs) != 1:
        raise SimConfigError("--chrome-trace needs exactly one B value")
    spec = _gate_spec(k, gate, routing)
    profile = profile or default_profile_path()
    prof = read_profile(profile)
    _warn_noisy(profile, profile_variation(profile))
    trace = read_routing(routing) if routing is not None else None
    defaults = profile_defaults(prof)
    m = experts or (trace.n_experts if trace is not None else defaults["n_experts"])
    if gate_latency_s is None:
        gate_latency_s = defaults["gate_latency_s"]
    if combine_latency_s is None:
        combine_latency_s = defaults["combine_latency_s"]
    if host is None:
        host = defaults["host"]
    state: dict[str, float | bool] = {}
    if host_state is not None:
        state |= parse_host_state(host_state)
    if host_preempt is not None:
        state |= parse_host_preempt(host_preempt)
    if host_stalls is not None:
        state |= parse_host_stalls(host_stalls)
    configs = [
        SimConfig(
            batch_size=b,
            n_experts=m,
            gate=spec,
            skew=skew,
            rate_rps=rate,
            n_requests=requests,
            n_devices=devices,
            max_wait_s=None if max_wait_ms is None else max_wait_ms / 1e3,
            max_backlog=max_backlog,
            gate_latency_s=gate_latency_s,
            combine_latency_s=combine_latency_s,
            service=service,
            warmup=warmup,
            seed=seed,
            host=host,
            host_lock=host_lock,
            **state,
        )
        for b in bs
    ]
    if jobs is not None and jobs < 1:
        raise SimConfigError(f"--jobs must be >= 1, got {jobs}")
    n_jobs = auto_jobs(len(configs), requests, host) if jobs is None else jobs
    if json_:
        points, notes = run_points(
            configs,
            prof,
            trace,
            on_done=lambda p: print(json.dumps(_json_row(p.summary)), flush=True),
            jobs=n_jobs,
        )
    else:
        with progress_bar() as bar:
            task = bar.add_task("simulating B values", total=len(configs))
            points, notes = run_points(
                configs, prof, trace, on_done=lambda p: bar.advance(task), jobs=n_jobs
            )
    for note in notes:
        err_console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if chrome_trace is not None:
        from sim.chrome_trace import write_chrome_trace

        write_chrome_trace(chrome_trace, points[0].result)
        err_console.print(f"Chrome trace written to {chrome_trace}")
    if out is not None:
        from sim.output import records_of, summary_frame

        spath = write_runs(
            out,
            [records_of(p.result) for p in points],
            summary_frame([p.summary for p in points]),
            serve_config(
                configs,
                str(profile),
                [p.result.config.batch_size for p in points if p.result.stopped_early],
            ),
        )
        err_console.print(f"records written to {out}, summary to {spath}")
    if not json_:
        where = ""
        if host:
            from sim.host_terms import HostTerms

            terms = HostTerms.from_profile(prof, 1)
            ran = configs[0].machine_state(terms.state if terms is not None else None)
            preempt = configs[0].gate_preempt and terms is not None and bool(terms.preempt_p)
            join = terms is not None and bool(terms.worker_join_p)
            stalls = configs[0].host_stalls and terms is not None and bool(terms.stall_rate_hz)
            where = f" (shared host, {_state_label(ran, preempt, join=join, stalls=stalls)})"
        title = (
            f"sim{where}: M={m} {spec.label()} rate={rate:g} rps "
            f"D={devices} N={requests} "
            f"(first {configs[0].warmup_requests} requests excluded as warm-up)"
        )
        out_console.print(_table(points, title))


@app.command("sweep")
@cli_errors
def sweep_cmd(
    spec_path: Annotated[Path, typer.Argument(help="Sweep spec (TOML).", show_default=False)],
    out: Annotated[
        Path | None, typer.Option(help="Results table (default: SPEC with .parquet).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of an existing Dask scheduler.")
    ] = None,
    slurm: Annotated[
        bool, typer.Option("--slurm", help="Start workers on SLURM (spec's [slurm] table).")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Local workers (default: one per core).")
    ] = None,
    processes: Annotated[
        bool, typer.Option("--processes/--threads", help="Local workers as processes or threads.")
    ] = True,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object per point.")] = False,
) -> None:
    """Run a grid of points on Dask; resumes a killed sweep without losing finished points."""
    from sim.runner import load_service
    from sim.sweep import load_spec, run_sweep

    if scheduler is not None and slurm:
        raise SimConfigError("give --scheduler or --slurm, not both")
    spec = load_spec(spec_path)
    out = out or spec_path.with_suffix(".parquet")
    prof = read_profile(spec.profile)  # fail here, not on a worker
    table, _ = load_service(
        prof,
        max(p.config.n_experts for p in spec.points),
        max(p.config.batch_size for p in spec.points),
    )
    if table.host is None and any(p.config.host for p in spec.points):
        raise SimConfigError(
            f"{spec.profile}: host = true needs a profile with the host terms (hw profile on a "
            "CPU); this one has none"
        )
    _warn_noisy(Path(spec.profile), profile_variation(spec.profile))
    with progress_bar() as bar:
        task = bar.add_task("sweep points", total=len(spec.points))
        table, ran = run_sweep(
            spec,
            out,
            scheduler=scheduler,
            slurm=slurm,
            workers=workers,
            processes=processes,
            on_point=lambda p, now: bar.advance(task),
        )
    if json_:  # each point's whole configuration too: the grid may vary any of its keys
        for row in table.iter_rows(named=True):
            print(json.dumps({**_json_row(row), "config": json.loads(row["config"])}))
        return
    err_console.print(
        f"{ran} points run now, {len(spec.points) - ran} already finished; table: {out}"
    )
    view = table.select(
        "B", "rate_rps", "gate", "n_experts", "n_devices", "seed",
        "throughput_rps", "latency_p50_s", "latency_p99_s",
    )  # fmt: skip
    t = Table(title=f"sweep {spec_path.name}: {len(spec.points)} points")
    for col in view.columns:
        t.add_column(col, justify="right")
    for row in view.iter_rows():
        t.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    out_console.print(t)


@app.command("check")
@cli_errors
def check_cmd(
    measured: Annotated[
        list[Path],
        typer.Argument(
            help="serve-records/1 of a measured run; several: repeats of one command, judged "
            "on their means.",
            show_default=False,
        ),
    ],
    profile: Annotated[
        list[Path] | None,
        typer.Option(
            help="Latency profile (default: the bundled CPU profile); several (--profile A "
            "--profile B): each run is predicted as the mean of their predictions.",
        ),
    ] = None,
    tolerance: Annotated[
        str, typer.Option(help="Percent per metric: 5, or throughput=5,p50=5,p99=10.")
    ] = "throughput=5,p50=5,p99=10",
    service: Annotated[
        ServiceModel | None,
        typer.Option(help="Service model (default: spread if the profile has p10/p90)."),
    ] = None,
    terms: Annotated[
        str,
        typer.Option(
            help="profile: expert times from the profile; replay: the run's own times per "
            "item; sampled: drawn from the run's distributions."
        ),
    ] = "profile",
    host: Annotated[
        bool | None,
        typer.Option(
            "--host/--no-host",
            help="Shared host CPU model (system-model §8; --terms profile only). Default: on "
            "for a run on CPU devices when the profile has the host terms.",
        ),
    ] = None,
    host_lock: Annotated[HostLock, typer.Option(help=_HOST_LOCK_HELP)] = HostLock.EVEN,
    host_state: Annotated[str | None, typer.Option(help=_CHECK_HOST_STATE_HELP)] = None,
    host_preempt: Annotated[str | None, typer.Option(help=_HOST_PREEMPT_HELP)] = None,
    host_stalls: Annotated[str | None, typer.Option(help=_CHECK_HOST_STALLS_HELP)] = None,
    host_wakes: Annotated[str, typer.Option(help=_CHECK_HOST_WAKES_HELP)] = "gates",
    worker_absences: Annotated[str, typer.Option(help=_CHECK_WORKER_ABSENCES_HELP)] = "run",
    host_contention: Annotated[str, typer.Option(help=_CHECK_HOST_CONTENTION_HELP)] = "run",
    sensitivity: Annotated[
        float | None,
        typer.Option(
            help="Also replay with every measured cost off by this percent (e.g. 5) and show "
            "the band of predictions: how far a host that much faster or slower moves them.",
        ),
    ] = None,
    host_speed: Annotated[
        str | None,
        typer.Option(
            help="Where the host model takes each B's host speed from: run (the run's own "
            "gates that ran alone; with a profile older than the gate's cold start, the "
            "warm ones), probe (hw serve's speed probes around the "
            "B, against the profile's), profile (as profiled). Default: run where the B has "
            "enough such gates, else probe where the run and the profile have it, else profile.",
        ),
    ] = None,
    replays: Annotated[
        int,
        typer.Option(
            help="Predict each B as the mean of this many replays that differ only in the "
            "model's own random draws (seeds seed, seed+1, ...).",
        ),
    ] = 1,
    b_text: Annotated[
        str | None,
        typer.Option(
            "--B",
            help="Check only these B values of the run(s): 1, 1,2,4 or 1..8 (default: all).",
        ),
    ] = None,
    parts: Annotated[
        bool,
        typer.Option(
            "--parts",
            help="Also compare each part of a request, p50 and p99: the queue before the "
            "gate, the gate, the worker's part after it, the latency (in --json: parts).",
        ),
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object per B.")] = False,
) -> None:
    """Replay a measured `hw serve` run (or repeats of one) in the model; exit 1 past tolerance."""
    from sim.check import METRICS, HostSpeed, Terms, check_runs, parse_tolerance
    from sim.sensitivity import parse_sensitivity

    try:
        which = Terms(terms)
    except ValueError:
        raise SimConfigError(f"--terms must be profile, replay or sampled, got {terms!r}") from None
    try:
        speed = None if host_speed is None else HostSpeed(host_speed)
    except ValueError:
        raise SimConfigError(
            f"--host-speed must be run, probe or profile, got {host_speed!r}"
        ) from None
    tol = parse_tolerance(tolerance)
    spread = None if sensitivity is None else parse_sensitivity(sensitivity)
    profiles = profile or [default_profile_path()]
    only_b = None if b_text is None else parse_b_values(b_text)
    state: dict[str, float | bool] | None = None
    from_run = host_state is None or host_state.strip() == "run"
    stalls_from_run = host_stalls is None or host_stalls.strip() == "run"
    if host_wakes.strip() not in ("gates", "run", "profile"):
        raise SimConfigError(f"--host-wakes {host_wakes!r}: expected gates, run or profile")
    if worker_absences.strip() not in ("run", "off"):
        raise SimConfigError(f"--worker-absences {worker_absences!r}: expected run or off")
    if host_contention.strip() not in ("run", "profile"):
        raise SimConfigError(f"--host-contention {host_contention!r}: expected run or profile")
    if host_stalls is not None and host_stalls.strip() not in ("run", "profile", "off"):
        raise SimConfigError(f"--host-stalls {host_stalls!r}: expected run, profile or off")
    if host_state is not None or host_preempt is not None or host_stalls is not None:
        chosen = "profile" if host_state is None or from_run else host_state
        state = (
            parse_host_state(chosen)
            | parse_host_preempt(host_preempt or "profile")
            | parse_host_stalls("profile" if stalls_from_run else host_stalls or "profile")
        )
    rows = check_runs(
        measured, profiles, tol, service, which, host, spread, speed, host_lock, replays,
        parts, only_b, state, state_from_run=from_run, stalls_from_run=stalls_from_run,
        wakes_from_run=host_wakes.strip() in ("gates", "run"),
        worker_wakes_from_run=host_wakes.strip() == "run",
        absences_from_run=worker_absences.strip() == "run",
        contention_from_run=host_contention.strip() == "run",
    )  # fmt: skip
    if which is Terms.PROFILE:  # the costs came from the profiles: say which moved
        for path in profiles:
            _warn_noisy(path, profile_variation(path))
    if json_:
        for r in rows:
            doc = r.to_json()
            if state is not None:
                doc["host_state"] = state
            print(json.dumps(doc))
    else:
        model = "shared-host model" if rows and rows[0].host else "ideal model"
        if rows and rows[0].host_lock == HostLock.WHOLE.value:
            model += ", lock won whole"
        if rows and rows[0].host:
            first = rows[0]
            label = _state_label(
                first.state,
                bool(first.gate_preempt),
                bool(first.state_from_run),
                bool(first.worker_join),
                bool(first.stalls),
                first.run_stalls_hz is not None,
            )
            model += f", {label}"
            if any(r.wakes_from_run for r in rows):
                whose = "wake-up" if host_wakes.strip() == "run" else "gates' wake-up"
                model += f", {whose} tails from each B's own"
            if any(r.run_absences_hz is not None for r in rows):
                model += ", worker absences from each B's records"
            if any(r.run_contention is not None for r in rows):
                model += ", company's cost from each B's records"
        names = measured[0].name if len(measured) == 1 else f"mean of {len(measured)} runs"
        source = f", mean of {len(profiles)} profiles" if len(profiles) > 1 else ""
        t = Table(title=f"sim ({model}, --terms {which.value}{source}) vs measured: {names}")
        t.add_column("B", justify="right")
        for name in METRICS:
            unit = "rps" if name == "throughput" else "ms"
            for side in ("meas", "sim"):
                t.add_column(f"{name} {side} {unit}", justify="right")
            se = " ± s.e." if len(measured) > 1 else ""
            t.add_column(f"{name} err %{se}", justify="right")
        t.add_column("ok")
        if len(measured) > 1:
            t.add_column("runs ok", justify="right")
        if spread is not None:
            for name in ("p50", "p99"):
                t.add_column(f"{name} sim ms, costs ±{sensitivity:g}%", justify="right")
        if len(profiles) > 1:
            t.add_column("p50 sim by profile ms", justify="right")
        probed = any(r.speed_factor is not None for r in rows)
        if probed:
            t.add_column("host slower × (probe)", justify="right")
        ran = any(r.run_speed is not None for r in rows)
        if ran:
            t.add_column("host speed × (run)", justify="right")
        stalled = any(r.run_stalls_hz for r in rows)  # read from the run, and some found
        if stalled:
            t.add_column("stalls /s (run)", justify="right")
        for r in rows:
            cells = [str(r.B)]
            for name in METRICS:
                scale = 1.0 if name == "throughput" else 1e3
                meas = f"{r.measured[name] * scale:.3f}"
                if r.measured_range is not None:
                    lo, hi = r.measured_range[name]
                    meas += f" ({lo * scale:.3f}–{hi * scale:.3f})"
                err = f"{r.error_pct[name]:+.1f}"
                if r.error_se_pct is not None:
                    err += f" ±{r.error_se_pct[name]:.1f}"
                cells += [meas, f"{r.simulated[name] * scale:.3f}", err]
            cells.append(
                ("yes" if r.within else "[red]NO[/red]") + (" (overl.)" if r.overloaded else "")
            )
            if len(measured) > 1:
                cells.append(f"{r.runs_within}/{r.runs}")
            if r.band is not None:
                for name in ("p50", "p99"):
                    lo, hi = r.band[name]
                    mark = " ∋ meas" if r.in_band(name) else ""
                    cells.append(f"{lo * 1e3:.3f}–{hi * 1e3:.3f}{mark}")
            if r.simulated_range is not None:
                lo, hi = r.simulated_range["p50"]
                cells.append(f"{lo * 1e3:.3f}–{hi * 1e3:.3f}")
            if probed:
                cells.append("" if r.speed_factor is None else f"{r.speed_factor:.2f}")
            if ran:
                cells.append("" if r.run_speed is None else f"{r.run_speed:.2f}")
            if stalled:
                cells.append("" if r.run_stalls_hz is None else f"{r.run_stalls_hz:.2f}")
            t.add_row(*cells)
        out_console.print(t)
        if parts:
            out_console.print(_parts_table(rows))
    bad = [r.B for r in rows if not r.within]
    if bad:
        err_console.print(f"[red]past tolerance[/red] ({tolerance}) at B = {bad}")
        unresolved = [r.B for r in rows if r.unresolved()]
        if unresolved:
            err_console.print(
                f"  at B = {unresolved} every error is within two standard errors of the "
                "runs' own spread: more runs are needed to tell a model error from noise"
            )
        straddled = [r.B for r in rows if r.between_profiles(tol)]
        if straddled:
            err_console.print(
                f"  at B = {straddled} the measured values lie between the profiles' own "
                "predictions: they disagree by more than the miss; more profiles are needed "
                "to tell a model error from the machine's state"
            )
        raise typer.Exit(1)


def _parts_table(rows: list[Any]) -> Table:
    """``sim check --parts``: per B and part of a request, measured and simulated p50 and
    p99 and the simulated ÷ measured p99 (which part makes a miss)."""
    from sim.parts import PARTS

    t = Table(title="by part of a request (queue: before the gate; worker: after it)")
    t.add_column("B", justify="right")
    t.add_column("part")
    for side in ("meas", "sim"):
        for q in ("p50", "p99"):
            t.add_column(f"{q} {side} ms", justify="right")
    t.add_column("p99 sim ÷ meas", justify="right")
    for r in rows:
        if r.parts_measured is None or r.parts_simulated is None:
            continue
        for name in PARTS:
            m, s = r.parts_measured[name], r.parts_simulated[name]
            ratio = f"{s[1] / m[1]:.2f}" if m[1] > 0 else ""
            cells = [f"{x * 1e3:.3f}" for x in (*m, *s)]
            t.add_row(str(r.B), name, *cells, ratio)
    return t


def _warn_noisy(profile: Path, variation: float | None) -> None:
    """Say so on stderr when the profile was measured on a machine changing speed
    (``variation``: its recorded run-to-run variation, None if unrecorded)."""
    note = noisy_profile_note(variation)
    if note is not None:
        err_console.print(f"[yellow]warning:[/yellow] {profile}: {note}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
