"""Debian's chromium, headless, for the tests that check a produced page in a real browser."""

from __future__ import annotations

import html as html_module
import json
import re
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

    def screenshot(self, page: Path, out: Path, width: int = 1200, height: int = 2400) -> int:
        """The size in octets of a `width`×`height` screenshot of the page, written to `out`."""
        self.run(
            f"--window-size={width},{height}",
            "--hide-scrollbars",
            f"--screenshot={out}",
            page.as_uri(),
        )
        return out.stat().st_size

    def layout(self, page: Path, width: int, workdir: Path) -> Layout:
        """How the page lays out in a `width` px wide window, every `<details>` opened.

        The page allows no script (its CSP); a copy without the CSP and with `PROBE` at
        its end is loaded instead, and the probe writes what it measured into the DOM.
        """
        html = page.read_text(encoding="utf-8")
        html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
        probed = workdir / f"probed-{width}.html"
        probed.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        dom = self.run(
            f"--window-size={width},1000",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probed.as_uri(),
        ).stdout
        found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
        assert found is not None, dom[-2000:]
        measured = json.loads(html_module.unescape(found.group(1)))
        return Layout(
            viewport=measured["viewport"],
            scroll_width=measured["scrollWidth"],
            sections=tuple(measured["sections"]),
            overflowing=tuple(measured["overflowing"]),
            images=tuple((image["natural"], image["width"]) for image in measured["images"]),
        )


# Measures, after load, with every <details> opened: the document's width against the
# window's, the order of the top-level sections, each element that reaches past the
# window's right edge or scrolls sideways, and each image's natural and shown width.
PROBE = """<script>
addEventListener("load", () => {
  for (const d of document.querySelectorAll("details")) d.open = true;
  const right = innerWidth + 1;
  const overflowing = [];
  for (const e of document.querySelectorAll("body *")) {
    const box = e.getBoundingClientRect();
    if (box.right > right || e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== "visible") {
      overflowing.push(e.tagName + "." + e.className + ": " + (e.textContent || "").slice(0, 60));
    }
  }
  const sections = [...document.querySelectorAll("body > section")].map(s => s.id || s.className);
  const images = [...document.images].map(i => ({natural: i.naturalWidth, width: i.getBoundingClientRect().width}));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({viewport: innerWidth, scrollWidth: document.documentElement.scrollWidth, sections, overflowing, images});
  document.body.appendChild(out);
});
</script>
"""


@dataclass(frozen=True)
class Layout:
    viewport: int
    scroll_width: int
    sections: tuple[str, ...]  # ids of the top-level sections, in order
    overflowing: tuple[str, ...]
    images: tuple[tuple[int, float], ...]  # natural width, shown width


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
