"""Shared fixtures and marker handling.

``gpu`` tests skip without CUDA; ``slow`` and ``benchmark`` tests run only when
selected explicitly (``-m slow``, ``-m benchmark``) or with ``--run-slow``.
"""

from __future__ import annotations

import importlib.util

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run @pytest.mark.slow tests")


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = config.getoption("-m") or ""
    run_slow = config.getoption("--run-slow") or "slow" in markexpr
    run_bench = "benchmark" in markexpr
    cuda = None
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow or -m slow"))
        if "benchmark" in item.keywords and not run_bench:
            item.add_marker(pytest.mark.skip(reason="benchmark: run with -m benchmark"))
        if "gpu" in item.keywords:
            if cuda is None:
                cuda = _cuda_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="needs CUDA; none on this machine"))
