"""Shared fixtures. Engine fixtures first; other parts append theirs below."""

from __future__ import annotations

import pytest

from generation.config import Settings


@pytest.fixture(scope="session")
def tiny_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the offline ``tiny`` model on CPU, with a private data dir."""
    data = tmp_path_factory.mktemp("imagine-data")
    return Settings(
        data_dir=data, model={"name": "tiny", "device": "cpu", "cache_dir": data / "cache"}
    )


@pytest.fixture(scope="session")
def tiny_engine(tiny_settings: Settings):
    """One real ``Engine`` on the random ``tiny`` pipeline (CPU, no download), built once per session."""
    from generation.engine import Engine

    return Engine.load(tiny_settings)
