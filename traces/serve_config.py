"""The config of a serving run (``ServeConfig``): everything that defines it, stored as JSON
beside its ``serve-records/1`` and ``serve-summary/1`` tables (``traces.serving``) so the
simulator can replay the same run. Re-exported by :mod:`traces.serving`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from traces.errors import DeltasimError, FormatError

__all__ = ["CONFIG_KEY", "ServeConfig", "ServeConfigError"]

CONFIG_KEY = "deltasim.config"


class ServeConfigError(DeltasimError):
    """A serving run's config is impossible (B < 1, negative rate, bad placement...)."""


@dataclass(frozen=True)
class ServeConfig:
    """Everything that defines a serving run (``docs/system-model.md``), stored beside its tables.

    ``arrival`` is ``poisson`` (at ``rate_rps``) or ``trace``; ``routing`` is
    ``policy`` (top-k, popularity ∝ (e+1)^-skew), ``gate`` (the model's own
    gate) or ``trace``. ``gate_latency_s`` / ``combine_latency_s`` are the
    measured median service times of the run (what a replay should use).
    ``stopped_early`` lists the B values whose arrivals stopped at ``max_backlog``.
    """

    n_experts: int
    b_values: tuple[int, ...]
    devices: int = 1
    placement: tuple[int, ...] = ()
    device_names: tuple[str, ...] = ()
    arrival: str = "poisson"
    rate_rps: float | None = None
    requests: int | None = None
    duration_s: float | None = None
    warmup: int = 0
    seed: int = 0
    max_wait_s: float | None = None
    max_backlog: int = 4096
    routing: str = "policy"
    k: int = 1
    skew: float = 0.0
    routing_trace: str | None = None
    gate_latency_s: float | None = None
    combine_latency_s: float | None = None
    stopped_early: tuple[int, ...] = ()
    model: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(msg: str) -> ServeConfigError:
            return ServeConfigError(msg)

        if self.n_experts < 1:
            raise bad(f"the model needs at least one expert, got {self.n_experts}")
        if not self.b_values or any(b < 1 for b in self.b_values):
            raise bad(f"every B must be >= 1, got {list(self.b_values)}")
        if self.devices < 1:
            raise bad(f"devices must be >= 1, got {self.devices}")
        placement = self.placement or tuple(e % self.devices for e in range(self.n_experts))
        object.__setattr__(self, "placement", tuple(int(p) for p in placement))
        if len(self.placement) != self.n_experts or any(
            not 0 <= p < self.devices for p in self.placement
        ):
            raise bad(
                f"placement must give each of the {self.n_experts} experts a device in "
                f"0..{self.devices - 1}, got {list(self.placement)}"
            )
        object.__setattr__(self, "b_values", tuple(int(b) for b in self.b_values))
        object.__setattr__(self, "device_names", tuple(self.device_names))
        object.__setattr__(self, "stopped_early", tuple(self.stopped_early))
        if self.arrival not in ("poisson", "trace"):
            raise bad(f"arrival must be poisson or trace, got {self.arrival!r}")
        if self.rate_rps is not None and not self.rate_rps > 0:
            raise bad(f"--rate must be > 0 requests per second, got {self.rate_rps}")
        if self.arrival == "poisson" and self.rate_rps is None:
            raise bad("Poisson arrivals need --rate")
        if self.requests is not None and self.requests < 1:
            raise bad(f"--requests must be >= 1, got {self.requests}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise bad(f"--duration must be > 0 seconds, got {self.duration_s}")
        if self.warmup < 0:
            raise bad(f"--warmup must be >= 0, got {self.warmup}")
        if self.max_wait_s is not None and not self.max_wait_s > 0:
            raise bad(f"--max-wait must be > 0 seconds, got {self.max_wait_s}")
        if self.max_backlog < 1:
            raise bad(f"--max-backlog must be >= 1, got {self.max_backlog}")
        if self.routing not in ("policy", "gate", "trace"):
            raise bad(f"routing must be policy, gate or trace, got {self.routing!r}")
        if not 1 <= self.k <= self.n_experts:
            raise bad(f"k must be in 1..{self.n_experts} (the number of experts), got {self.k}")
        if self.skew < 0:
            raise bad(f"--skew must be >= 0, got {self.skew}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> ServeConfig:
        """Parse a stored config; unknown keys are kept in ``extra`` (forward compatible)."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(source, CONFIG_KEY, f"is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise FormatError(source, CONFIG_KEY, "must be a JSON object")
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in raw.items() if k in names}
        unknown = {k: v for k, v in raw.items() if k not in names}
        for key in ("b_values", "placement", "device_names", "stopped_early"):
            if key in known and known[key] is not None:
                known[key] = tuple(known[key])
        if unknown:
            known["extra"] = {**known.get("extra", {}), **unknown}
        try:
            return cls(**known)
        except TypeError as exc:
            raise FormatError(source, CONFIG_KEY, f"incomplete config: {exc}") from None
