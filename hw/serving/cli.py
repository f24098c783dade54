"""`hw profile` and `hw serve`: latency profiles and the real queued MoE server.

Registered on the root `hw` app. Each command is thin: parse, build a config
(which validates), call the library, write atomically, print a short summary
(or ``--json``). Bad arguments are one red line and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from traces.cli_support import (
    ForceOpt,
    JsonOpt,
    cli_errors,
    err_console,
    out_console,
    parse_int_list,
    print_json,
    refuse_overwrite,
)
from traces.errors import DeltasimError

__all__ = ["register"]

CheckpointOpt = Annotated[
    Path | None,
    typer.Option(help="Trained model (moe-checkpoint/1); else random weights of the given shape."),
]
ExpertsOpt = Annotated[int, typer.Option("--experts", help="Number of experts M (no checkpoint).")]
DModelOpt = Annotated[int, typer.Option(help="Expert input/output width (no checkpoint).")]
HiddenOpt = Annotated[int, typer.Option(help="Expert hidden units (no checkpoint).")]
ModelSeedOpt = Annotated[int, typer.Option(help="Seed of the random weights (no checkpoint).")]
DeviceOpt = Annotated[str, typer.Option(help="cpu or cuda (cuda:N).")]
DtypeOpt = Annotated[str, typer.Option(help="float32, float16, bfloat16 or float64.")]
ThreadsOpt = Annotated[int, typer.Option(help="torch intra-op threads while measuring.")]
SpeedProbeOpt = Annotated[
    float,
    typer.Option(
        "--speed-probe-s",
        help="CPU: seconds of each host speed probe (profile: phases among the duty curve's; "
        "serve: before, between and after the B values), for sim check; 0: none.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``profile`` and ``serve`` to the root ``hw`` app."""
    app.command("profile")(profile_cmd)
    app.command("serve")(serve_cmd)


def _ints(text: str, name: str, minimum: int = 1) -> list[int]:
    """The shared range parser, its BadParameter turned into one red line."""
    try:
        return parse_int_list(text, name, minimum)
    except typer.BadParameter as exc:
        raise DeltasimError(f"{name}: {exc.message}") from None


def _placement(text: str | None) -> tuple[int, ...]:
    """``0,1,0,1``: the device of each expert, in expert order (not a set: order matters)."""
    if not text:
        return ()
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise DeltasimError(f"--placement: {text!r} is not a list like 0,1,0,1") from None


def _model_spec(
    checkpoint: Path | None, experts: int, d_model: int, hidden: int, seed: int, k: int = 2
) -> dict[str, Any]:
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise DeltasimError(f"{checkpoint}: no such checkpoint file")
        return {"checkpoint": str(checkpoint)}
    for name, v in (("--experts", experts), ("--d-model", d_model), ("--expert-hidden", hidden)):
        if v < 1:
            raise DeltasimError(f"{name} must be >= 1, got {v}")
    return {
        "n_experts": experts,
        "d_model": d_model,
        "expert_hidden": hidden,
        "seed": seed,
        "k": min(k, experts),
    }


def _check_out(out: Path, suffixes: tuple[str, ...], force: bool) -> None:
    if out.suffix.lower() not in suffixes:
        raise DeltasimError(f"{out}: the output must end in {' or '.join(suffixes)}")
    refuse_overwrite(out, force)


# --- hw profile -------------------------------------------------------------------------------


@cli_errors
def profile_cmd(
    out: Annotated[Path, typer.Option(help="Profile file to write (.parquet or .csv).")],
    checkpoint: CheckpointOpt = None,
    experts: ExpertsOpt = 8,
    d_model: DModelOpt = 64,
    expert_hidden: HiddenOpt = 64,
    model_seed: ModelSeedOpt = 0,
    batch_sizes: Annotated[
        str, typer.Option("--batch-sizes", help="e.g. 1..64, 1,2,4 or 1..64:8.")
    ] = "1,2,3,4,6,8,12,16,24,32,48,64",
    only: Annotated[
        str | None, typer.Option("--only-experts", help="Profile only these experts, e.g. 0,3.")
    ] = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    warmup: Annotated[int, typer.Option(help="Untimed calls before timing.")] = 5,
    min_calls: Annotated[int, typer.Option(help="At least this many timed calls.")] = 20,
    min_time_s: Annotated[float, typer.Option(help="... and at least this many seconds.")] = 0.1,
    repeats: Annotated[int, typer.Option(help="Full passes; >= 2 reports the variation.")] = 2,
    idle_calls: Annotated[
        int, typer.Option(help="CPU host terms: calls per idle time of the hand-off curves.")
    ] = 100,
    duty_phase_s: Annotated[
        float, typer.Option(help="CPU host terms: seconds per phase of the duty curve.")
    ] = 0.5,
    duty_visits: Annotated[
        int, typer.Option(help="CPU host terms: visits of each duty level (and probe phase).")
    ] = 3,
    speed_probe_s: SpeedProbeOpt = 0.5,
    state_s: Annotated[
        float,
        typer.Option(
            help="CPU host terms: seconds of the server's chain after 2 ms gaps that measure "
            "how the machine's speed moves over 0.1-1 s windows (sim's state process) and "
            "its stalls (0: neither)."
        ),
    ] = 60.0,
    preempt_pairs: Annotated[
        int,
        typer.Option(
            help="CPU host terms: pairs of requests per level of load that measure how often "
            "a woken gate takes the host whole from a worker at work, and as many that "
            "measure whether a worker woken while the gate goes on runs during its next "
            "gate (0: neither)."
        ),
    ] = 600,
    rounds: Annotated[
        int, typer.Option(help="Round-robin visits of every point within a pass.")
    ] = 4,
    threads: ThreadsOpt = 1,
    seed: Annotated[int, typer.Option(help="Seed of the timed inputs.")] = 0,
    slurm: Annotated[
        str | None, typer.Option(help="Submit to this SLURM partition through submitit.")
    ] = None,
    slurm_time: Annotated[int, typer.Option(help="SLURM wall-time limit, minutes.")] = 60,
    gpu_type: Annotated[str | None, typer.Option(help="SLURM GPU type (gres name).")] = None,
    slurm_folder: Annotated[Path, typer.Option(help="submitit job folder (shared FS).")] = Path(
        ".submitit"
    ),
    cluster: Annotated[
        str, typer.Option(hidden=True, help="submitit cluster: slurm, or local for tests.")
    ] = "slurm",
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    force: ForceOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Per-expert latency against batch size, plus the gate's and the combine step's cost."""
    from hw.profiling.profile import ProfileConfig, run_profile
    from traces.atomic import atomic_write_text
    from traces.profile import meta_path, write_profile

    _check_out(out, (".parquet", ".csv"), force)
    if (
        warmup < 0
        or min_calls < 1
        or min_time_s < 0
        or idle_calls < 1
        or not duty_phase_s > 0
        or duty_visits < 1
    ):
        raise DeltasimError(
            "need --warmup >= 0, --min-calls >= 1, --min-time-s >= 0, --idle-calls >= 1, "
            "--duty-phase-s > 0 and --duty-visits >= 1"
        )
    cfg = ProfileConfig(
        model=_model_spec(checkpoint, experts, d_model, expert_hidden, model_seed),
        batch_sizes=tuple(_ints(batch_sizes, "--batch-sizes")),
        experts=None if only is None else tuple(_ints(only, "--only-experts", minimum=0)),
        device=device,
        dtype=dtype,
        warmup=warmup,
        min_calls=min_calls,
        min_time_s=min_time_s,
        repeats=repeats,
        rounds=rounds,
        threads=threads,
        seed=seed,
        idle_calls=idle_calls,
        duty_phase_s=duty_phase_s,
        duty_visits=duty_visits,
        speed_probe_s=speed_probe_s,
        state_s=state_s,
        preempt_pairs=preempt_pairs,
    )
    job = None
    if slurm is not None:
        from hw.profiling.slurm import SlurmRequest, submit_profile

        req = SlurmRequest(
            slurm, slurm_time, gpu_type, folder=slurm_folder, cluster=cluster or None
        )
        result, job = submit_profile(
            cfg,
            req,
            lambda jid: err_console.print(
                f"job {jid} queued on {cluster} partition {slurm}; waiting (logs in {slurm_folder})"
            ),
        )
    else:
        from hw.profiling.model import resolve_device

        resolve_device(device)  # fail before loading anything
        if progress and not json_:
            from rich.progress import Progress

            with Progress(console=err_console, transient=True) as bar:
                task = bar.add_task("profiling", total=None)
                result = run_profile(cfg, lambda d, t: bar.update(task, completed=d, total=t))
        else:
            result = run_profile(cfg)
    write_profile(result.frame, out)
    meta = {**result.meta(), "slurm_job": job}
    atomic_write_text(meta_path(out), json.dumps(meta, indent=1) + "\n")
    _print_profile(result, out, json_)


def _host_terms_line(frame: Any) -> str:
    """The shared-host terms (docs/system-model.md §8) in one line, medians at batch size 1;
    empty when this profile did not measure them (GPU, or ``host_terms=False``)."""
    import polars as pl

    from traces.profile import (
        COMPANY_PENALTY_COMPONENTS,
        GATE_STAMPED_OVERHEAD,
        LOOP_COMPONENTS,
        SPEED_PROBE,
        STATE_WINDOW,
        busy_handoff_curve,
        join_shares,
        preempt_curve,
        sched_tick_s,
        stall_terms,
        state_sigma,
    )

    at1 = frame.filter(pl.col("batch_size") == 1)
    if "idle_s" in at1.columns:
        at1 = at1.filter(pl.col("idle_s").is_null() | (pl.col("idle_s") == 0))
    names = ["dispatch", "collect", "gate_alone", "gate_contended"]
    names += ["worker_alone", "worker_contended"]
    med = {
        c: float(at1.filter(pl.col("component") == c)["latency_s"].median() or 0.0) * 1e6
        for c in names
    }
    if not all(med.values()):
        return ""
    line = (
        f"host terms (µs, b=1): dispatch {med['dispatch']:.1f}, collect {med['collect']:.1f}, "
        f"gate alone/contended {med['gate_alone']:.0f}/{med['gate_contended']:.0f}, "
        f"worker alone/contended {med['worker_alone']:.0f}/{med['worker_contended']:.0f}"
    )
    pair = [
        at1.filter(pl.col("component") == c)["latency_s"].median()
        for c in ("completion_alone", "completion_contended")
    ]
    if pair[0] is not None and pair[1] is not None:  # the combine's own pair (newer profiles)
        alone, shared = (float(x) * 1e6 for x in pair)  # type: ignore[arg-type]
        line += f", completion alone/contended {alone:.0f}/{shared:.0f}"
    for comp, where in (("duty_threads", "in the server's threads"), ("duty", "in one thread")):
        duty = frame.filter(pl.col("component") == comp).sort("idle_s")
        if duty.height:  # newer profiles time the chain in two threads, older in one
            busy, idle = duty["latency_s"][0] * 1e6, duty["latency_s"][-1] * 1e6
            line += f", request chain {where} busiest/idlest {busy:.0f}/{idle:.0f}"
            break
    gate = frame.filter(pl.col("component") == "chain_gate").sort("idle_s")["latency_s"]
    if gate.len():  # the chain's gate per level (profiles from session 16)
        line += f", its gate busiest/idlest {gate[0] * 1e6:.0f}/{gate[-1] * 1e6:.0f}"
    gate_hand = frame.filter(pl.col("component") == "handoff_gate_chain")["latency_s"] * 1e6
    if gate_hand.len():  # the gate's wake in the chain (profiles from session 23)
        line += f", gate wake hand-off {gate_hand.min():.0f}–{gate_hand.max():.0f}"
    wake = {
        c: frame.filter(pl.col("component") == c).sort("idle_s")["latency_s"].to_numpy() * 1e6
        for c in ("handoff_worker_chain", "chain_first_step", "chain_next_step")
    }
    if all(len(v) for v in wake.values()):  # the worker's wake in the chain (newer profiles)
        cold = wake["chain_first_step"] - wake["chain_next_step"]
        hand = wake["handoff_worker_chain"]
        line += (
            f", worker wake hand-off {hand.min():.0f}–{hand.max():.0f}, "
            f"cold start {cold.min():.0f}–{cold.max():.0f}"
        )
        gather = [
            frame.filter(pl.col("component") == c).sort("idle_s")["latency_s"].to_numpy() * 1e6
            for c in ("chain_first_gather", "chain_next_gather")
        ]
        if all(len(g) == len(cold) for g in gather):  # where in the step it falls
            in_gather = gather[0] - gather[1]
            line += f" (in the gather {in_gather.min():.0f}–{in_gather.max():.0f})"
    loops = {c: at1.filter(pl.col("component") == c)["latency_s"].median() for c in LOOP_COMPONENTS}
    if all(v is not None for v in loops.values()):
        v = {c: float(x) * 1e6 for c, x in loops.items()}  # type: ignore[arg-type]
        line += (
            f", server loops +{v['gate_overhead']:.0f}/{v['batch_overhead']:.0f}/"
            f"{v['completion_overhead']:.0f} (gate/batch/completion), per arrival "
            f"+{v['arrival_penalty_gate']:.0f}/{v['arrival_penalty_worker']:.0f} (gate/worker)"
        )
        company = [
            at1.filter(pl.col("component") == c)["latency_s"].median()
            for c in COMPANY_PENALTY_COMPONENTS
        ]
        if any(x is not None for x in company):  # newer profiles: both threads at work
            shown = "/".join("–" if x is None else f"{float(x) * 1e6:.0f}" for x in company)  # type: ignore[arg-type]
            line += f", in company +{shown}"
        stamped = at1.filter(pl.col("component") == GATE_STAMPED_OVERHEAD)["latency_s"].median()
        if stamped is not None:  # newer profiles: the gate loop's part inside its stamps
            line += f", {float(stamped) * 1e6:.0f} µs of the gate's loop inside its stamps"  # type: ignore[arg-type]
    probe = frame.filter(pl.col("component") == SPEED_PROBE)
    if probe.height:  # the host's speed while profiled, for sim check (newer profiles)
        line += f", speed probe {probe['latency_s'][0] * 1e6:.0f}"
    state = frame.filter(pl.col("component") == STATE_WINDOW).sort("idle_s")
    if state.height:  # the machine's state over windows (newer profiles)
        sigma = state_sigma(state["latency_p10_s"].to_numpy(), state["latency_p90_s"].to_numpy())
        line += (
            f", machine state σ {'/'.join(f'{x:.2f}' for x in sigma)} over "
            f"{'/'.join(f'{w:g}' for w in state['idle_s'])} s windows"
        )
    levels = preempt_curve(frame)
    if levels:  # the gate's preemption per level of load (newer profiles)
        line += ", gate preemption " + ", ".join(
            f"{pt.p:.2f} at duty {pt.duty:.2f}" for pt in levels
        )
    handoffs = [spread[1] for _, spread in busy_handoff_curve(frame)]
    if handoffs:  # the hand-off to a gate woken while a worker is at work (newer profiles)
        line += f", busy gate hand-off {'/'.join(f'{h * 1e6:.0f}' for h in handoffs)} µs"
    joins = join_shares(frame)
    if joins is not None:  # a worker woken while the gate goes on (newer profiles)
        line += f", woken worker joins the next gate {joins[0]:.2f} early / {joins[1]:.2f} late"
    stalls = stall_terms(frame)
    if stalls is not None:  # the machine's stalls in the state's chains (newer profiles)
        line += f", stalls {stalls.rate_hz:.2f}/s"
        if stalls.rate_hz:
            line += (
                f" of {stalls.span_s[1] * 1e3:.1f} ms (p90 {stalls.span_s[2] * 1e3:.1f}) "
                f"at ×{stalls.factor[1]:.1f}"
            )
    tick = sched_tick_s(frame)
    if tick is not None:  # the kernel's scheduler tick (newer profiles, readable kernels)
        line += f", scheduler tick {tick * 1e3:g} ms"
    return line


def _warn_if_moving(out: Path, var: dict[str, Any] | None) -> None:
    """Say so on stderr now, not only when sim reads the profile, if its passes differ by
    more than sim's threshold: the machine changed speed while it was measured."""
    from traces.profile import noisy_profile_note

    note = noisy_profile_note(None if var is None else var["median_rel"])
    if note is not None:
        err_console.print(f"[yellow]warning:[/yellow] {out}: {note}", highlight=False)


def _print_profile(result: Any, out: Path, json_: bool) -> None:
    import polars as pl

    from traces.profile import meta_path, steps_path

    frame = result.frame
    var = None if result.variation is None else result.variation.to_dict()
    if json_:
        print_json(
            {
                "out": str(out),
                "device": result.device,
                "variation": var,
                "rows": frame.height,
                "wall_s": result.wall_s,
            }
        )
        _warn_if_moving(out, var)
        return
    wide = (
        frame.group_by(["component", "batch_size"])
        .agg(pl.col("latency_s").median())
        .sort("batch_size")
    )
    table = Table(title=f"latency, median over experts ({result.device})")
    table.add_column("batch")
    comps = [c for c in ("expert", "gate", "combine") if c in wide["component"].to_list()]
    for c in comps:
        table.add_column(f"{c} µs", justify="right")
    for b in sorted(set(wide["batch_size"].to_list())):
        row = wide.filter(pl.col("batch_size") == b)
        vals = dict(zip(row["component"].to_list(), row["latency_s"].to_list(), strict=True))
        table.add_row(str(b), *(f"{vals[c] * 1e6:.1f}" if c in vals else "" for c in comps))
    out_console.print(table)
    host = _host_terms_line(frame)
    if host:
        out_console.print(host)
    if var is not None:
        out_console.print(
            f"run-to-run variation of medians: median {var['median_rel']:.1%}, "
            f"p90 {var['p90_rel']:.1%}, max {var['max_rel']:.1%} ({var['worst']})"
        )
    out_console.print(
        f"wrote {out}, {steps_path(out).name} and {meta_path(out).name} in {result.wall_s:.1f} s"
    )
    _warn_if_moving(out, var)


# --- hw serve ---------------------------------------------------------------------------------


@cli_errors
def serve_cmd(
    out: Annotated[Path, typer.Option(help="Records file (.parquet); summary goes beside it.")],
    B: Annotated[str, typer.Option("--B", help="Queue sizes: 8, 1,2,4 or 1..64.")] = "1..64",
    rate: Annotated[float | None, typer.Option(help="Poisson arrival rate, requests/s.")] = None,
    requests: Annotated[int | None, typer.Option(help="Requests per B (default 500).")] = None,
    duration: Annotated[
        float | None, typer.Option(help="Arrivals for this many seconds per B instead.")
    ] = None,
    warmup: Annotated[int, typer.Option(help="First requests excluded from metrics.")] = 20,
    max_wait_s: Annotated[
        float | None, typer.Option("--max-wait-s", help="Flush a partial batch after this wait.")
    ] = None,
    routing: Annotated[
        Path | None,
        typer.Option(
            help="Routing trace (routing/1) to replay: its experts, and its arrival "
            "times when it has them (else Poisson at --rate)."
        ),
    ] = None,
    route: Annotated[
        str, typer.Option(help="Without a trace: policy (top-k with --skew) or gate (the model).")
    ] = "policy",
    k: Annotated[int, typer.Option(help="Experts per request (policy, gate).")] = 2,
    skew: Annotated[float, typer.Option(help="Popularity skew: P(e) ∝ (e+1)^-skew.")] = 0.0,
    devices: Annotated[int, typer.Option(help="Devices D (CPU: worker threads).")] = 1,
    placement: Annotated[
        str | None, typer.Option(help="Device of each expert, e.g. 0,1,0,1 (default e mod D).")
    ] = None,
    max_backlog: Annotated[
        int, typer.Option(help="Stop arrivals (overload) when this many requests are pending.")
    ] = 4096,
    seed: Annotated[int, typer.Option(help="Seed of arrivals, routing and inputs.")] = 0,
    checkpoint: CheckpointOpt = None,
    experts: ExpertsOpt = 8,
    d_model: DModelOpt = 64,
    expert_hidden: HiddenOpt = 64,
    model_seed: ModelSeedOpt = 0,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    threads: ThreadsOpt = 1,
    gil_switch_s: Annotated[
        float, typer.Option("--gil-switch-s", help="Python's GIL switch interval during the run.")
    ] = 1e-5,
    speed_probe_s: SpeedProbeOpt = 0.5,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    force: ForceOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Run the real queued MoE server over a sweep of B and record every request."""
    from hw.profiling.model import model_from_spec, resolve_device
    from hw.serving.run import ServerSettings, run_sweep
    from traces.serving import ServeConfig, summary_path, write_records, write_summary

    _check_out(out, (".parquet",), force)
    refuse_overwrite(summary_path(out), force)
    b_values = _ints(B, "--B")
    if route not in ("policy", "gate"):
        raise DeltasimError(f"--route must be policy or gate, got {route!r}")
    if routing is not None and not routing.is_file():
        raise DeltasimError(f"{routing}: no such routing trace")
    arrival = "poisson"
    if routing is not None:
        from traces.routing import read_routing

        if read_routing(routing).table["arrival_time_s"].null_count() == 0:
            arrival = "trace"  # system model §1: a trace's own arrival times when it has them
    if requests is None and duration is None:
        requests = 500
    if requests is not None and duration is not None:
        raise DeltasimError("give --requests or --duration, not both")
    settings = ServerSettings(device, dtype, threads, gil_switch_s, speed_probe_s)
    resolve_device(device)
    spec = _model_spec(checkpoint, experts, d_model, expert_hidden, model_seed, k)
    model = model_from_spec(spec)
    cfg = ServeConfig(
        n_experts=model.cfg.n_experts,
        b_values=tuple(b_values),
        devices=devices,
        placement=_placement(placement),
        arrival=arrival,
        rate_rps=rate,
        requests=requests,
        duration_s=duration,
        warmup=warmup,
        seed=seed,
        max_wait_s=max_wait_s,
        max_backlog=max_backlog,
        routing="trace" if routing is not None else route,
        k=k,
        skew=skew,
        routing_trace=None if routing is None else str(routing),
        model=spec,
    )
    if progress and not json_:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
        ) as bar:
            tasks: dict[int, Any] = {}

            def tick(b: int, done: int, total: int) -> None:
                if b not in tasks:
                    tasks[b] = bar.add_task(f"B={b}", total=total)
                bar.update(tasks[b], completed=done, total=total)

            run = run_sweep(model, cfg, settings, tick)
    else:
        run = run_sweep(model, cfg, settings)
    write_records(out, run.records, run.config)
    write_summary(summary_path(out), run.summary, run.config)
    _print_serve(run, out, json_)


def _print_serve(run: Any, out: Path, json_: bool) -> None:
    from traces.serving import summary_path

    summary, cfg = run.summary, run.config
    if json_:
        rows = summary.to_dicts()
        print_json(
            {
                "records": str(out),
                "summary": str(summary_path(out)),
                "warmup_excluded": cfg.warmup,
                "speed_probe": cfg.extra.get("speed_probe"),
                "points": rows,
            }
        )
        return
    table = Table(title=f"hw serve: {cfg.device_names[0]} x{cfg.devices}, k={cfg.k}")
    heads = ("B", "n", "rps", "p50 ms", "p95 ms", "ovh µs p50/95", "e/f/d", "backlog", "state")
    for col in heads:
        table.add_column(col, justify="right")
    for r in summary.iter_rows(named=True):
        state = "[red]OVERLOAD[/red]" if r["overloaded"] else "ok"
        if r["stopped_early"]:
            state += " (stopped)"
        table.add_row(
            str(r["B"]),
            str(r["requests"]),
            f"{r['throughput_rps']:.0f}",
            f"{r['latency_p50_s'] * 1e3:.2f}",
            f"{r['latency_p95_s'] * 1e3:.2f}",
            f"{r['overhead_p50_s'] * 1e6:.0f}/{r['overhead_p95_s'] * 1e6:.0f}",
            f"{r['exact_batches']}/{r['flush_batches']}/{r['drain_batches']}",
            f"{r['backlog_half_n']}>{r['backlog_end_n']}",
            state,
        )
    out_console.print(table)
    out_console.print(
        f"the first {cfg.warmup} requests of each B were served but excluded (warm-up); "
        f"gate {(cfg.gate_latency_s or 0) * 1e6:.0f} µs, "
        f"combine {(cfg.combine_latency_s or 0) * 1e6:.0f} µs (medians); "
        f"wrote {out} and {summary_path(out).name}"
    )
    probe = cfg.extra.get("speed_probe")
    if probe:  # the host's state around each B, for sim check (docs/serving.md)
        times = [t * 1e6 for pair in probe["median_s"].values() for t in pair]
        out_console.print(
            f"host speed probe (gate after {probe['mean_gap_s'] * 1e3:g} ms gaps) around the "
            f"B values: {min(times):.0f}–{max(times):.0f} µs"
        )
