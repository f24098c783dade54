"""The host's speed at one moment, as one short measurement that ``hw profile`` and
``hw serve`` both take, so that ``sim check`` can tell how much faster or slower the
machine ran during a measured run than while its profile was taken.

Why: on a shared 2-core VM the same ``hw serve`` command at B = 1 gave p50s ×1.6–×3
apart from run to run, and each run's p50 followed its gate's mean service time
(rank correlation 1.0; ``benchmarks/README.md``, "Fidelity, session 9"): the machine
has speed states that last for seconds, and a profile records only the one it was
taken in. The server cannot time itself without changing what it measures, so the
state is sampled just before and just after each B's run instead.

The probe is the gate on one request, called in the calling thread after exponential
idle gaps of mean :data:`PROBE_GAP_S`, for :data:`PROBE_S` seconds, with the server's
GIL switch interval; its samples are the calls' wall times. The gaps matter: back to
back, the gate ran at the same speed in runs whose B = 1 gates differed by ×1.8, while
after 2 ms gaps (a duty like the server's at B = 1 and a few hundred requests per
second) the probe ranked ten runs nearly as their gates' means did. CPU only: on a GPU
the host's state is not what a batch's time depends on.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from hw.profiling.model import ServedModel
from hw.timing import TimingError, gc_paused

__all__ = ["PROBE_GAP_S", "PROBE_S", "probe_samples"]

PROBE_GAP_S = 2e-3  # mean idle gap before each probe call
PROBE_S = 0.5  # seconds per probe: about 200 calls after 2 ms gaps on a 2-core VM


def probe_samples(
    served: ServedModel,
    seconds: float = PROBE_S,
    mean_gap_s: float = PROBE_GAP_S,
    seed: int = 0,
    switch_interval_s: float = 1e-5,
) -> list[float]:
    """Wall times (s) of the gate on one request after exponential idle gaps of mean
    ``mean_gap_s``, for ``seconds`` (at least 5 calls; 3 untimed warm-up calls first)."""
    if not seconds > 0 or not mean_gap_s >= 0:
        raise TimingError(f"speed probe: need seconds > 0, gap >= 0; got {seconds}, {mean_gap_s}")
    device = served.devices[0]
    if device.type != "cpu":
        raise TimingError(f"speed probe: the host's speed is probed on a CPU, not {device}")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, served.n_features, generator=gen).to(device, served.dtype)
    old = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval_s)
    samples: list[float] = []
    try:
        with torch.inference_mode():
            for _ in range(3):
                served.gate(x)
            end = time.perf_counter() + seconds
            with gc_paused():
                while len(samples) < 5 or time.perf_counter() < end:
                    if mean_gap_s > 0:
                        time.sleep(rng.exponential(mean_gap_s))
                    t0 = time.perf_counter()
                    served.gate(x)
                    samples.append(time.perf_counter() - t0)
    finally:
        sys.setswitchinterval(old)
    return samples
