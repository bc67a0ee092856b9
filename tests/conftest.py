"""Shared fixtures: the demo world and a running lab serving it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scanner.lab import Lab, World, demo_world_path, load_world, open_lab


@pytest.fixture(scope="session")
def demo_world() -> World:
    """The bundled demo world, loaded once per test session."""
    return load_world(demo_world_path())


@pytest.fixture
async def demo_lab(demo_world: World, tmp_path: Path) -> AsyncIterator[Lab]:
    """The demo world served on loopback for one test; the CA file lives in tmp_path."""
    async with open_lab(demo_world, workdir=tmp_path / "lab") as lab:
        yield lab
