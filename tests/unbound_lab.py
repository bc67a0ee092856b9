"""The DANE world served by the lab behind a real validating unbound, for the `dnssec` tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.lab import Lab, World, load_world, open_lab
from scanner.lab.unbound import open_unbound, unbound_path

DANE_WORLD = Path(__file__).resolve().parent.parent / "fixtures" / "world-dane.toml"

# The marks of a module whose tests need unbound: skipped, saying why, where it is missing.
NEEDS_UNBOUND = [
    pytest.mark.dnssec,
    pytest.mark.skipif(
        unbound_path() is None, reason="unbound is not installed (apt-get install unbound)"
    ),
]


@dataclass(frozen=True)
class ValidatedLab:
    lab: Lab
    world: World
    unbound: tuple[str, int]  # the validating resolver's address and port


@asynccontextmanager
async def validated_dane_lab(directory: Path) -> AsyncIterator[ValidatedLab]:
    """The DANE world on loopback, and unbound validating it from the lab's trust anchor."""
    world = load_world(DANE_WORLD)
    async with open_lab(world, directory / "lab") as lab:
        assert lab.trust_anchor_file is not None
        async with open_unbound(
            lab_dns=lab.resolver,
            trust_anchor_file=lab.trust_anchor_file,
            directory=directory / "unbound",
            zones=[zone.name for zone in world.zones],
        ) as unbound:
            yield ValidatedLab(lab, world, unbound)
