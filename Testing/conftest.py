"""Shared fixtures. The helpers behind them (scenes, the tiny model) are in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import tiny_model_cache, train_tiny_model


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """The tiny model of helpers.py, trained once per machine and source version."""
    cached = tiny_model_cache()
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        train_tiny_model(cached)
    return cached
