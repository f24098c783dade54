"""One simulation point: every knob of ``docs/system-model.md`` as a frozen, validated record.

A :class:`SimConfig` is what ``sim run`` builds per B value, what a sweep point
is, and what is stored beside every results table (as JSON) so that a run can
be replayed exactly (``sim check``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from typing import Any

from sim.errors import SimConfigError
from sim.machine_state import MachineState

__all__ = [
    "GatePolicy",
    "GateSpec",
    "HostLock",
    "ServiceModel",
    "SimConfig",
    "parse_gate",
]


class GatePolicy(str, Enum):
    """Routing policies of system-model §2 (``trace`` replays a routing trace)."""

    TOPK = "topk"
    TOPP = "topp"
    BUDGET = "budget"
    TRACE = "trace"


class ServiceModel(str, Enum):
    """How a batch's service time is drawn from the profile (system-model §4).

    ``median``: the profile's median, interpolated (the default, deterministic);
    ``spread``: a two-piece normal with that median and the profile's p10/p90;
    ``exponential``: exponential with the median as mean, only for validating the
    model against bulk-service queueing closed forms.
    """

    MEDIAN = "median"
    SPREAD = "spread"
    EXPONENTIAL = "exponential"


class HostLock(str, Enum):
    """How the shared-host model (system-model §8) splits the host between two threads at
    work at once, each job's measured contention E giving it the rate r = W / (W + E).

    ``even`` (the default): both threads run at their r throughout (additive
    contention spread evenly). ``whole``: the interpreter lock is won or lost whole.
    At every start or end of a job, with two threads at work, a draw decides which
    one holds the lock until the next such event: it runs at r_gate + r_worker of
    full speed while the other waits, each thread holding with probability r /
    (r_gate + r_worker); where the rates sum past 1, both run at full speed with
    probability r_gate + r_worker - 1, one alone otherwise. At every draw each
    thread's expected speed is its r, but a long job that wins keeps the lock longer
    than a short one, so a request's worker steps can wait out several gates in a
    row. ``whole`` was the default in session 12; 24 runs per load (session 13)
    rejected it at B = 1 (p99 +25 and +59 % where ``even`` is within 10 %), and run
    by run it reaches its p99 by the wrong part: at 500 req/s the worker's time after
    the gate up to 2.5 times the measured p99, the queue before the gate 0.3-0.7 of it
    (benchmarks/README.md, "Fidelity, session 13"). Three or more threads at work
    share evenly under either.
    """

    WHOLE = "whole"
    EVEN = "even"


@dataclass(frozen=True, slots=True)
class GateSpec:
    """Which experts a request uses: fixed k, top-p, an explicit k distribution, or a trace.

    ``p`` is the top-p threshold; ``k_probs[i]`` the probability of k = i + 1
    (``budget``); ``trace`` the routing trace's path.
    """

    policy: GatePolicy = GatePolicy.TOPK
    k: int = 2
    p: float | None = None
    k_probs: tuple[float, ...] | None = None
    trace: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "policy", GatePolicy(self.policy))
        except ValueError:
            raise SimConfigError(f"unknown gate policy {self.policy!r}") from None
        if self.k < 1:
            raise SimConfigError(f"k must be >= 1, got {self.k}")
        if self.policy is GatePolicy.TOPP and (self.p is None or not 0.0 < self.p <= 1.0):
            raise SimConfigError(f"top-p threshold must be in (0, 1], got {self.p}")
        if self.policy is GatePolicy.BUDGET:
            probs = self.k_probs or ()
            if not probs or any(q < 0 for q in probs) or abs(sum(probs) - 1.0) > 1e-6:
                raise SimConfigError(
                    f"budget: probabilities of k = 1, 2, ... must be >= 0 and sum to 1, got {probs}"
                )
        if self.policy is GatePolicy.TRACE and not self.trace:
            raise SimConfigError("gate policy 'trace' needs a routing trace path")

    @property
    def max_k(self) -> int:
        """Largest k this gate can choose (the trace's is only known once it is read)."""
        if self.policy is GatePolicy.BUDGET:
            return len(self.k_probs or ())
        return self.k

    def label(self) -> str:
        """Short text that :func:`parse_gate` reads back."""
        if self.policy is GatePolicy.TOPK:
            return f"topk:{self.k}"
        if self.policy is GatePolicy.TOPP:
            return f"topp:{self.p:g}"
        if self.policy is GatePolicy.BUDGET:
            return "budget:" + ",".join(f"{q:g}" for q in self.k_probs or ())
        return f"trace:{self.trace}"


def parse_gate(text: str) -> GateSpec:
    """Parse ``topk:K``, ``topp:P``, ``budget:q1,q2,...`` or ``trace:PATH``.

    >>> parse_gate("topp:0.7").p
    0.7
    >>> parse_gate("budget:0.5,0.5").max_k
    2
    """
    name, _, arg = text.strip().partition(":")
    try:
        policy = GatePolicy(name.strip().lower())
    except ValueError:
        raise SimConfigError(
            f"unknown gate {text!r}; use topk:K, topp:P, budget:q1,q2,... or trace:PATH"
        ) from None
    try:
        if policy is GatePolicy.TOPK:
            return GateSpec(policy, k=int(arg))
        if policy is GatePolicy.TOPP:
            return GateSpec(policy, p=float(arg))
        if policy is GatePolicy.BUDGET:
            return GateSpec(policy, k_probs=tuple(float(q) for q in arg.split(",")))
    except ValueError:
        raise SimConfigError(f"gate {text!r}: {arg!r} is not a number (list)") from None
    return GateSpec(policy, trace=arg)


def parse_host_state(text: str) -> dict[str, float]:
    """``--host-state profile|off|SIGMA,RHO,WINDOW_S`` as SimConfig fields (``profile``: none
    set, the profile's measured state applies); a malformed value is one clear error
    (exit 2)."""
    if text.strip() == "profile":
        return {}
    if text.strip() == "off":
        return {"state_sigma": 0.0}
    if text.strip() == "run":
        raise SimConfigError(
            "--host-state run reads the state from a measured run's own gates: it is a choice "
            "of `sim check`; `sim run` takes profile, off or SIGMA,RHO,WINDOW_S"
        )
    parts = [p.strip() for p in text.split(",")]
    try:
        sigma, rho, window = (float(p) for p in parts)
    except ValueError:
        raise SimConfigError(
            f"--host-state {text!r}: expected profile, off or SIGMA,RHO,WINDOW_S "
            "(e.g. 0.19,0.7,0.1)"
        ) from None
    return {"state_sigma": sigma, "state_rho": rho, "state_window_s": window}


def parse_host_preempt(text: str) -> dict[str, bool]:
    """``--host-preempt profile|off`` as SimConfig fields (``profile``: none set, the
    profile's measured preemption applies); anything else is one clear error (exit 2)."""
    choice = text.strip()
    if choice not in ("profile", "off"):
        raise SimConfigError(f"--host-preempt {text!r}: expected profile or off")
    return {} if choice == "profile" else {"gate_preempt": False}


def parse_host_stalls(text: str) -> dict[str, bool]:
    """``--host-stalls profile|off`` as SimConfig fields (``profile``: none set, the
    machine's stalls the profile measured apply); anything else is one clear error (exit 2)."""
    choice = text.strip()
    if choice not in ("profile", "off"):
        raise SimConfigError(f"--host-stalls {text!r}: expected profile or off")
    return {} if choice == "profile" else {"host_stalls": False}


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulated run (one B value). Times in seconds, rates in requests per second.

    ``host``: run every step's host work on one shared host CPU (system-model §8,
    the CPU server's Python threads; needs a profile with the host terms);
    False is the ideal model of §1–§5. ``host_lock``: how that host is split between
    two threads at work (:class:`HostLock`). The machine's state (host model only): a
    factor on every step's wall time, log-normal with standard deviation ``state_sigma``
    in log, redrawn every ``state_window_s`` as an AR(1) with lag-one correlation
    ``state_rho``, mean 1 over each 5 s block (``sim.machine_state.state_factors``; the
    level is the run's speed): slow spells that last, which build a queue in front of the
    gate (``benchmarks/README.md``, "Fidelity, session 13"); ``state_sigma`` None (the
    default) takes the process the profile measured (``state_window`` rows,
    :mod:`sim.machine_state`; none where it lacks them), 0 = none. ``gate_preempt``
    (host model only): a gate woken while a worker is at work takes the host whole with the
    probability the profile measured at the run's duty (``preempt_*`` rows,
    :meth:`sim.host_terms.HostTerms.gate_preempt_p`; never where it lacks them); False:
    never. ``host_stalls`` (host model only): the machine's stalls the profile measured
    (``stall_*`` rows, :mod:`traces.stalls`; none where it lacks them): a few ms now and
    then in which every step and hand-off takes several times its wall time; False: none.
    """

    batch_size: int = 8
    n_experts: int = 8
    gate: GateSpec = field(default_factory=GateSpec)
    skew: float = 0.0
    rate_rps: float = 1000.0
    n_requests: int = 100_000
    n_devices: int = 1
    placement: tuple[int, ...] | None = None
    max_wait_s: float | None = None
    max_backlog: int | None = 4096
    gate_latency_s: float = 0.0
    combine_latency_s: float = 0.0
    batch_overhead_s: float = 0.0
    service: ServiceModel = ServiceModel.MEDIAN
    warmup: int | None = None
    seed: int = 0
    host: bool = False
    host_lock: HostLock = HostLock.EVEN
    state_sigma: float | None = None
    state_rho: float = 0.0
    state_window_s: float = 0.1
    gate_preempt: bool = True
    host_stalls: bool = True

    def __post_init__(self) -> None:
        def bad(msg: str) -> SimConfigError:
            return SimConfigError(msg)

        try:
            object.__setattr__(self, "service", ServiceModel(self.service))
        except ValueError:
            raise SimConfigError(f"unknown service model {self.service!r}") from None
        try:
            object.__setattr__(self, "host_lock", HostLock(self.host_lock))
        except ValueError:
            raise SimConfigError(
                f"unknown host lock sharing {self.host_lock!r}; use whole or even"
            ) from None
        if self.batch_size < 1:
            raise bad(f"B (batch size) must be >= 1, got {self.batch_size}")
        if self.n_experts < 1:
            raise bad(f"experts must be >= 1, got {self.n_experts}")
        if self.gate.policy is not GatePolicy.TRACE and self.gate.max_k > self.n_experts:
            raise bad(f"k = {self.gate.max_k} exceeds the number of experts {self.n_experts}")
        if not self.rate_rps > 0 or self.rate_rps == float("inf"):
            raise bad(f"rate must be a positive number of requests/s, got {self.rate_rps}")
        if self.n_requests < 1:
            raise bad(f"requests must be >= 1, got {self.n_requests}")
        if self.n_devices < 1:
            raise bad(f"devices must be >= 1, got {self.n_devices}")
        if self.placement is not None:
            if len(self.placement) != self.n_experts:
                raise bad(f"placement names {len(self.placement)} experts, not {self.n_experts}")
            if any(not 0 <= d < self.n_devices for d in self.placement):
                raise bad(f"placement uses a device outside 0..{self.n_devices - 1}")
        if self.max_backlog is not None and self.max_backlog < 1:
            raise bad(f"max backlog must be >= 1, got {self.max_backlog}")
        if self.max_wait_s is not None and not self.max_wait_s > 0:
            raise bad(f"max wait must be > 0, got {self.max_wait_s}")
        for name in ("gate_latency_s", "combine_latency_s", "batch_overhead_s", "skew"):
            if not getattr(self, name) >= 0:
                raise bad(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.state_sigma is not None and (
            not self.state_sigma >= 0 or self.state_sigma == float("inf")
        ):
            raise bad(f"state sigma must be >= 0, got {self.state_sigma}")
        if not 0 <= self.state_rho < 1:
            raise bad(f"state rho (lag-one correlation) must be in [0, 1), got {self.state_rho}")
        if not self.state_window_s > 0 or self.state_window_s == float("inf"):
            raise bad(f"state window must be > 0 s, got {self.state_window_s}")
        if self.state_sigma and not self.host:
            raise bad("the machine state (state sigma > 0) needs the shared-host model (--host)")
        if self.warmup is not None and not 0 <= self.warmup < self.n_requests:
            raise bad(f"warmup must be in 0..requests-1, got {self.warmup}")

    @property
    def warmup_requests(self) -> int:
        """Requests excluded from metrics (system-model §1): 10% unless set."""
        return self.n_requests // 10 if self.warmup is None else self.warmup

    def machine_state(self, measured: MachineState | None) -> MachineState | None:
        """The state process this run simulates: the one set here, else the profile's
        ``measured`` one (None: no state)."""
        if self.state_sigma is None:
            return measured
        if self.state_sigma == 0:
            return None
        return MachineState(self.state_sigma, self.state_rho, self.state_window_s)

    def device_of(self) -> tuple[int, ...]:
        """Expert -> device (system-model §4: ``e mod D`` by default)."""
        if self.placement is not None:
            return self.placement
        return tuple(e % self.n_devices for e in range(self.n_experts))

    def with_(self, **changes: Any) -> SimConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; :meth:`from_dict` reads it back."""
        d = asdict(self)
        d["gate"] = self.gate.label()
        d["service"] = self.service.value
        d["host_lock"] = self.host_lock.value
        d["placement"] = None if self.placement is None else list(self.placement)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SimConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SimConfigError(f"unknown configuration keys {sorted(unknown)}")
        kw = dict(d)
        if "gate" in kw and not isinstance(kw["gate"], GateSpec):
            kw["gate"] = parse_gate(str(kw["gate"]))
        if "service" in kw:
            try:
                kw["service"] = ServiceModel(kw["service"])
            except ValueError:
                raise SimConfigError(f"unknown service model {kw['service']!r}") from None
        if kw.get("placement") is not None:
            kw["placement"] = tuple(int(x) for x in kw["placement"])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> SimConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SimConfigError(f"stored configuration is not JSON: {exc}") from None
        if not isinstance(d, dict):
            raise SimConfigError("stored configuration is not a JSON object")
        return cls.from_dict(d)
