"""The kernel scheduler's tick on this machine, read from the kernel's build configuration.

Why: in ``hw serve`` a gate thread woken onto the core where a device worker runs takes that
core, and the worker waits (``docs/system-model.md``, the gate that takes the host whole).
What ends the wait while the gate goes on from request to request is the scheduler moving
the waiting worker to the idle core, which it does at a tick: in blocks 36-37 (``--B 1`` at
500 req/s) a worker with work waiting finished none of it in 14 % of the gate's busy spells
of 2-3 ms, 2 % of those of 3-5 ms and none longer, on a kernel ticking every 4 ms. The tick
is a setting of the kernel (``CONFIG_HZ``), not something a timing loop here sees cleanly: on
this KVM guest a spinning thread is interrupted every 1 ms (likely the hypervisor's timer),
the 4 ms tick only faintly among those.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

__all__ = ["kernel_tick_s"]

_HZ = re.compile(rb"^CONFIG_HZ=(\d+)\s*$", re.MULTILINE)


def kernel_tick_s(sources: tuple[Path, ...] | None = None) -> float | None:
    """1 / CONFIG_HZ of the running kernel, from ``/boot/config-<release>`` or
    ``/proc/config.gz`` (``sources`` in their place); None where neither can be read or
    names no HZ (a container without /boot, another OS)."""
    if sources is None:
        sources = (Path(f"/boot/config-{os.uname().release}"), Path("/proc/config.gz"))
    for path in sources:
        try:
            raw = path.read_bytes()
            if path.suffix == ".gz":
                raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        found = _HZ.search(raw)
        if found and int(found.group(1)) > 0:
            return 1.0 / int(found.group(1))
    return None
