"""The kernel scheduler's tick, read from the kernel's build configuration
(``hw.profiling.sched_tick``): the file /boot holds, or the compressed one /proc holds, and
nothing where neither says."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from hw.profiling.sched_tick import kernel_tick_s

CONFIG = b"# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\nCONFIG_NO_HZ_IDLE=y\n"


def test_the_tick_is_one_over_config_hz(tmp_path: Path) -> None:
    plain = tmp_path / "config-6.1"
    plain.write_bytes(CONFIG)
    assert kernel_tick_s((plain,)) == pytest.approx(0.004)
    packed = tmp_path / "config.gz"
    packed.write_bytes(gzip.compress(CONFIG.replace(b"=250\n", b"=1000\n")))
    assert kernel_tick_s((packed,)) == pytest.approx(0.001)


def test_the_first_readable_source_that_names_hz_wins(tmp_path: Path) -> None:
    """A missing file, one that names no HZ and a corrupt archive are passed over."""
    silent = tmp_path / "config-silent"
    silent.write_bytes(b"CONFIG_HZ_PERIODIC=y\n")
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"not gzip")
    good = tmp_path / "config-good"
    good.write_bytes(CONFIG)
    assert kernel_tick_s((tmp_path / "missing", silent, broken, good)) == pytest.approx(0.004)
    assert kernel_tick_s((tmp_path / "missing", silent, broken)) is None
    assert kernel_tick_s(()) is None


def test_this_machines_tick_is_a_kernels() -> None:
    """Where this kernel's configuration is readable, its tick is one of Linux's choices."""
    tick = kernel_tick_s()
    if tick is None:
        pytest.skip("this kernel's configuration is not readable here")
    assert round(1 / tick) in (100, 250, 300, 500, 1000)
