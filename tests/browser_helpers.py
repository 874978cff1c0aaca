"""Headless Chromium (Debian's /usr/bin/chromium, SwiftShader WebGL) driven by Playwright, for the browser tests.

    @pytest.fixture(scope="module")
    def browser():
        yield from headless_chromium()

Skips (with the reason) where Playwright or Chromium is missing; CI installs both.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
         "--disable-background-networking", "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
         "--mute-audio"]


def headless_chromium():
    """A launched Playwright browser (generator for a fixture: yields it, closes it afterwards)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()
