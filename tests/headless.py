"""Debian's chromium, headless, for the tests that check a produced page in a real browser."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Headless:
    command: tuple[str, ...]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.command, *args], capture_output=True, text=True, check=False, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    def dom(self, page: Path) -> str:
        """The page's DOM after its scripts ran (`--dump-dom`)."""
        return self.run("--dump-dom", page.as_uri()).stdout

    def screenshot(self, page: Path, out: Path) -> int:
        """The size in octets of a 1200×2400 screenshot of the page, written to `out`."""
        self.run("--window-size=1200,2400", f"--screenshot={out}", page.as_uri())
        return out.stat().st_size


def headless_chromium(profile: Path) -> Headless:
    """Chromium with a throwaway profile and no network side traffic; skips the test without it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run does it)")
    return Headless(
        (
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
        )
    )
