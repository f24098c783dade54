"""Fixtures of the simulator tests: a TEST latency profile (not the bundled one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from traces.profile import meta_path, write_profile

TEST_PROFILE_EXPERTS = 8
TEST_PROFILE_SIZES = (1, 2, 4, 8, 16, 32, 64)


def sim_fixture_profile_frame(n_experts: int = TEST_PROFILE_EXPERTS) -> pl.DataFrame:
    """A made-up profile: latency = (50 + 3 e) µs + 6 µs per sample, ±15% spread."""
    rows = []
    for e in range(n_experts):
        for b in TEST_PROFILE_SIZES:
            lat = (50 + 3 * e) * 1e-6 + 6e-6 * b
            rows.append((e, b, lat, 0.85 * lat, 1.15 * lat, 50))
    return pl.DataFrame(
        rows,
        schema=["expert", "batch_size", "latency_s", "latency_p10_s", "latency_p90_s", "samples"],
        orient="row",
    )


@pytest.fixture(scope="session")
def test_profile_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim-profile") / "TEST-sim-fixture-profile.parquet"
    write_profile(sim_fixture_profile_frame(), path)
    return path


@pytest.fixture(scope="session")
def host_profile_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TEST profile with the shared-host terms (``test_host.host_profile_frame``)."""
    from .test_host import host_profile_frame

    path = tmp_path_factory.mktemp("host") / "TEST-host-profile.parquet"
    write_profile(host_profile_frame(), path)
    return path


def profile_with_variation(directory: Path, variation: float) -> Path:
    """The TEST profile as ``hw profile`` would leave it after passes that differ by
    ``variation`` (its record beside it)."""
    path = directory / f"TEST-profile-varied-{variation:g}.parquet"
    write_profile(sim_fixture_profile_frame(), path)
    record = {"device": "cpu:test", "variation": {"median_rel": variation, "worst": "gate b=1"}}
    meta_path(path).write_text(json.dumps(record))
    return path


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
